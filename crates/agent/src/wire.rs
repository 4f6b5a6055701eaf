//! What the agent takes from the wire shared with the managers and the CLI: the
//! generated protocol code, the network seam (real sockets, or the simulation's), the
//! header names, credential helpers and TLS (`corral_wire`), and the client's token
//! interceptor. One place, so that where they come from is
//! written once.

pub(crate) use corral_client::AuthInterceptor;
pub(crate) use corral_wire::credentials::constant_time_equal;
pub(crate) use corral_wire::headers::{AUTHORIZATION_HEADER, LEADER_HEADER, REQUEST_ID_HEADER};
pub(crate) use corral_wire::network;
pub(crate) use corral_wire::pb;
pub(crate) use corral_wire::tls::{error_chain, ClientCertificates, TlsConfig, Transport};

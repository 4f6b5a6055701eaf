//! What the agent takes from the wire shared with the managers and the CLI: the
//! generated protocol code, the network seam (real sockets, or the simulation's), the
//! header names and the token interceptor. One place, so that where they come from is
//! written once.

pub(crate) use corral_client::network;
pub(crate) use corral_client::pb;
pub(crate) use corral_client::{
    normalize_address, AuthInterceptor, AUTHORIZATION_HEADER, LEADER_HEADER,
};

//! What corral's components share on the wire, below the client, the server and the
//! agent: the generated protobuf and gRPC code ([`pb`]), the network every channel and
//! listener goes through ([`network`]), the metadata header names ([`headers`]) and the
//! credential helpers ([`credentials`]) and TLS ([`tls`]: configuration, PEM files, tonic's
//! TLS configurations, how an address is dialled). One copy of each, so the two ends of a call
//! cannot disagree.

pub mod credentials;
pub mod headers;
pub mod network;
mod requests;
pub mod tls;

/// Generated protobuf and gRPC code of package `corral.v1`.
///
/// The messages of admin.proto implement serde's `Serialize` and `Deserialize` with
/// the proto field names; missing fields take their proto default and unknown fields
/// are an error.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("corral.v1");
}

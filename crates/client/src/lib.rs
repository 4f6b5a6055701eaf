//! Typed gRPC client for corral's admin API, shared by the CLI, agents, tests and
//! benchmarks; it also owns the generated protobuf code ([`pb`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), corral_client::ClientError> {
//! use corral_client::{pb, ClientOptions, CorralClient};
//! let client = CorralClient::connect(
//!     vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
//!     Some("secret-token".into()),
//!     ClientOptions::default(),
//! )?;
//! let spec = pb::JobSpec { name: "train".into(), pool: 3, kind: "training".into(), ..Default::default() };
//! let submitted = client.submit_job(spec).await?;
//! let job = client.get_job(submitted.job).await?;
//! println!("{} is {}", job.id, job.state);
//! # Ok(()) }
//! ```
//!
//! Every call carries `authorization: Bearer <token>` metadata when a token is given,
//! has a deadline ([`ClientOptions::timeout`]) and is retried on another replica when
//! the one asked is unreachable or answers `Unavailable` naming the leader in
//! `x-corral-leader` metadata (see [`CorralClient::call`]).

mod address;
mod client;
mod error;
mod logs;
pub mod network;
mod requests;
mod watch;

pub use address::normalize_address;
pub use client::{AdminStub, AuthInterceptor, ClientOptions, CorralClient};
pub use error::ClientError;
pub use watch::EventStream;

/// Metadata key carrying the bearer token.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Metadata key on an `Unavailable` status naming the current leader's address.
pub const LEADER_HEADER: &str = "x-corral-leader";
/// Metadata key carrying the client's id for one logical write, the same on its retries
/// (the server answers a repeat with the first outcome).
pub const REQUEST_ID_HEADER: &str = "x-corral-request-id";
/// Metadata key on a rejected write carrying the rejection's code (e.g. `NotFound`).
pub const REJECTION_HEADER: &str = "x-corral-rejection";

/// Generated protobuf and gRPC code of package `corral.v1`.
///
/// The messages of admin.proto implement serde's `Serialize` and `Deserialize` with
/// the proto field names; missing fields take their proto default and unknown fields
/// are an error.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("corral.v1");
}

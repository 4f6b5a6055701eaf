//! Typed gRPC client for corral's admin API, shared by the CLI, agents, tests and
//! benchmarks. The generated protobuf code lives in `corral_wire`; [`pb`] re-exports it
//! for the client's users.
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
mod watch;

pub use address::normalize_address;
pub use client::{AdminStub, AuthInterceptor, ClientOptions, CorralClient};
pub use error::ClientError;
pub use watch::EventStream;

/// How the client dials: TLS (a CA, perhaps a client certificate) or plaintext
/// (`corral_wire::tls`).
pub use corral_wire::tls::{ClientTls, PemIdentity, Transport};

/// Generated protobuf and gRPC code of package `corral.v1` (`corral_wire::pb`).
pub use corral_wire::pb;

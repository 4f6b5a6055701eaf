//! A corral manager replica: one openraft node with its storage, the gRPC services
//! (Admin for people and tools, Raft for peers), authentication, write forwarding, and
//! the leader-only loops (scheduler, metering, node liveness). `dev` runs a whole
//! cluster in one process for a first look.

pub mod admin;
pub mod agent_service;
pub mod append_split;
pub mod auth;
pub mod config;
pub mod convert;
pub mod dev;
pub mod environment;
pub mod error;
pub mod group_commit;
pub mod leader;
pub mod liveness;
pub mod manager;
pub mod node_runtime;
pub mod peer_network;
pub mod proposer;
pub mod raft_service;
pub mod request_ids;
pub mod token_secret;
pub mod watch;
pub mod wire;

pub use config::ServerConfig;
pub use error::ServerError;
pub use manager::{run, Manager};

//! A corral manager replica: one openraft node with its storage, the gRPC services
//! (Admin for people and tools, AgentService for node agents, Raft for peers),
//! authentication, write forwarding, and the leader-only loops (scheduler, metering,
//! node liveness).
//!
//! The public surface is what runs a replica ([`run`], [`Manager`]), its config and
//! surroundings ([`ServerConfig`], [`Environment`]), and two helpers for tools that
//! build a state without a cluster ([`hash_token`], [`convert`]). Inside:
//! - `api`: the gRPC services people, tools and agents call, authentication, request
//!   ids, and the conversions between the wire's messages and the model;
//! - `replication`: proposing writes (group commit, forwarding to the leader), the raft
//!   network between replicas and its service;
//! - `leader`: the loops only the leader runs, and what it knows of node liveness.

mod api;
mod config;
mod environment;
mod error;
mod leader;
mod manager;
mod replication;

pub use api::auth::hash_token;
pub use config::{
    AuthConfig, ClusterConfig, ConfigError, LimitsConfig, LoopConfig, MemberConfig, RaftConfig,
    ServerConfig, StorageConfig, TlsConfig,
};
pub use environment::{BlockingWork, Clock, Environment, Randomness, CLOCK_OFFSET_FILE_VARIABLE};
pub use error::ServerError;
pub use manager::{run, wait_for_termination, Manager};

/// Conversions between the wire's messages and the model, for tools that build a state
/// without a running cluster (the restart benchmark).
pub use api::convert;

//! The gRPC services people, tools and agents call (Admin, AgentService), how a call's
//! caller and request id are found, and the conversions between the wire's messages
//! and the model.

pub(crate) mod admin;
pub(crate) mod agent_service;
pub(crate) mod auth;
pub mod convert;
pub(crate) mod failed_attempts;
pub(crate) mod gate;
pub(crate) mod node_runtime;
pub(crate) mod request_ids;
pub(crate) mod stream_slots;
pub(crate) mod submit_rate;
pub(crate) mod token_secret;

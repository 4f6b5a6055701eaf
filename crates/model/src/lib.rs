//! corral's domain model: the nouns (tenants, flavors, nodes, networks, pools, jobs),
//! the verbs (`Command`), what happened (`Event`), why something was refused
//! (`Rejection`), and the one fit function that both the scheduler and the state
//! machine use to decide whether a replica fits on a node.
//!
//! This crate does no IO, reads no clock and draws no random numbers. Time enters only
//! as `at_ms` values carried by commands.

pub mod alarm;
pub mod audit;
pub mod billing;
pub mod command;
pub mod event;
pub mod fault_injection;
pub mod fit;
pub mod flavor;
pub mod ids;
pub mod job;
pub mod limits;
pub mod names;
pub mod network;
pub mod node;
pub mod pool;
pub mod queue;
pub mod rejection;
pub mod resources;
pub mod tenant;
pub mod workflow;

pub use alarm::{Alarm, AlarmKind};
pub use audit::{AuditOutcome, AuditRecord};
pub use billing::{BillLine, BillSubject, Meter};
pub use command::{Command, Entry, Placement};
pub use event::{Event, EventRecord};
pub use flavor::Flavor;
pub use ids::{JobId, MeterId, NetworkId, NodeId, PoolId, TenantId, TokenId};
pub use job::{Job, JobKind, JobSpec, JobState, JobType, Replica, ReplicaState};
pub use network::{Cidr, Network};
pub use node::{Node, NodeStatus, ReplicaIsolation, Taint, TaintEffect, Toleration};
pub use pool::{BillingMode, DriverSpec, Pool, PoolFlavor, PoolKind, PoolStatus};
pub use queue::{Queue, QueueSpec};
pub use rejection::Rejection;
pub use resources::Resources;
pub use tenant::{
    Caller, Credential, PreviousSecret, Principal, Reads, Tenant, TenantRole, Token, TokenScope,
};
pub use workflow::{WorkflowSpec, WorkflowStep};

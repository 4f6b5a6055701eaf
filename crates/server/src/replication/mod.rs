//! Getting writes into the replicated log and the log to every replica: proposals
//! (group commit, forwarding to the leader, the read barrier), the raft network between
//! replicas and the Raft service that answers it, and the encoding of its messages.

pub(crate) mod append_split;
pub(crate) mod cluster_clock;
pub(crate) mod disk_floor;
pub(crate) mod encoding;
pub(crate) mod group_commit;
pub(crate) mod guard;
pub(crate) mod health;
pub(crate) mod peer_network;
pub(crate) mod proposer;
pub(crate) mod raft_service;

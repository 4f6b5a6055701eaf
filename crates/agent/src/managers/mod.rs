//! Talking to the managers, for every node of the process: the [`link`] (channels,
//! leader following, deadlines, backoff) and the [`reports`] queue (bounded, ordered,
//! retried). One node's session built on them is [`crate::node::session`].

pub(crate) mod link;
pub(crate) mod reports;

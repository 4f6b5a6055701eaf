//! The client history: every call a simulated client made, what it asked, what it got
//! back, and when (simulated nanoseconds since the run started), for the
//! linearizability check and the lost-write check.

use std::sync::{Arc, Mutex};

/// What a client asked. Jobs are named uniquely per run, and a job's operations are
/// checked together (the job name is the partition key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Submit { name: String },
    Get { name: String, job: u64 },
    Terminate { name: String, job: u64 },
}

impl Call {
    pub fn job_name(&self) -> &str {
        match self {
            Call::Submit { name } | Call::Get { name, .. } | Call::Terminate { name, .. } => name,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Submitted {
        job: u64,
    },
    Found {
        state: String,
    },
    Acknowledged,
    /// A definite failure: the request changed nothing (a rejection, a bad request).
    Refused {
        code: String,
        message: String,
    },
    /// No answer (timeout, connection lost): the write may or may not have happened.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Record {
    pub client: u64,
    pub call: Call,
    pub reply: Reply,
    pub called_at_ns: u64,
    pub returned_at_ns: u64,
}

#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Vec<Record>>>);

impl History {
    pub fn push(&self, record: Record) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(record);
    }

    pub fn records(&self) -> Vec<Record> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Simulated nanoseconds since the run started.
pub fn now_ns() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

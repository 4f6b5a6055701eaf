//! Workflows: a DAG of steps, each a job spec of its own. A step names a dedicated pool
//! or runs in the public pool. Dependencies may only name earlier steps, which makes
//! every accepted workflow acyclic by construction.

use crate::ids::JobId;
use crate::job::JobSpec;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStep {
    pub name: String,
    /// Indexes of earlier steps that must complete first.
    pub depends_on: Vec<usize>,
    /// The step's job. `spec.pool` names its pool; the state machine substitutes the
    /// public pool when `use_public_pool` is set.
    pub spec: JobSpec,
    pub use_public_pool: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    pub steps: Vec<WorkflowStep>,
}

/// Which job runs each step, once started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowProgress {
    pub step_jobs: Vec<Option<JobId>>,
}

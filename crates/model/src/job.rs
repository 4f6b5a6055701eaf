//! Work: training jobs, inference services, notebook instances and workflows, their
//! replicas, and the one table of allowed state transitions (invariant 4).

use crate::ids::{JobId, MeterId, NodeId, PoolId, TenantId};
use crate::node::Toleration;
use crate::resources::Resources;
use crate::workflow::{WorkflowProgress, WorkflowSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The job types a pool can enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobType {
    Training,
    Inference,
    Notebook,
}

pub const ALL_JOB_TYPES: [JobType; 3] = [JobType::Training, JobType::Inference, JobType::Notebook];

/// Kind-specific settings of a submitted job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// Replicas placed as a gang; restarted as a whole while retries remain.
    Training { retry_limit: u32 },
    /// Replicas spread over nodes and moved individually.
    Inference,
    /// One instance; stops itself after `auto_stop_after_ms` of running.
    Notebook { auto_stop_after_ms: Option<u64> },
    /// A DAG of steps, each a job of its own.
    Workflow(WorkflowSpec),
}

impl JobKind {
    pub fn job_type(&self) -> Option<JobType> {
        match self {
            JobKind::Training { .. } => Some(JobType::Training),
            JobKind::Inference => Some(JobType::Inference),
            JobKind::Notebook { .. } => Some(JobType::Notebook),
            JobKind::Workflow(_) => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            JobKind::Training { .. } => "training",
            JobKind::Inference => "inference",
            JobKind::Notebook { .. } => "notebook",
            JobKind::Workflow(_) => "workflow",
        }
    }

    pub fn is_gang(&self) -> bool {
        matches!(self, JobKind::Training { .. })
    }
}

/// What a tenant submits. For a workflow, `pool`, `replicas` and the resource fields are
/// unused (each step carries its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub pool: PoolId,
    pub kind: JobKind,
    pub replicas: u32,
    pub per_replica: Resources,
    /// Required accelerator type when `per_replica.accelerators > 0`.
    pub accelerator_type: Option<String>,
    /// 1 (low) to 3 (high); only meaningful in dedicated pools.
    pub priority: u8,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// Environment variables whose values are secret: the replicas get them like the
    /// others, but listings, events and the audit trail show them redacted, and only the
    /// job's tenant (its admin or an operator) reads them, on explicit request. Their
    /// names are disjoint from `environment`'s, and both together are bounded by
    /// `MAX_ENVIRONMENT_VARIABLES`.
    pub secret_environment: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub max_runtime_ms: Option<u64>,
    /// The queue of the pool the job goes to (`queue.rs`); `None` in a pool without
    /// queues. At submission a pool's default queue is filled in for a job naming none.
    pub queue: Option<String>,
}

/// Every state a job can be in. Each kind uses a subset (see `allowed_transition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    Creating,
    /// Queued, waiting for placement.
    Pending,
    /// Inference: replicas being placed and started.
    Deploying,
    Running,
    /// Inference: some replicas are down and being replaced.
    Concerning,
    Completed,
    Failed,
    Terminating,
    Terminated,
    Abnormal,
    Stopping,
    Stopped,
}

impl JobState {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Terminated
        )
    }

    /// Stopped inference services and notebooks can be started again; they are not
    /// terminal but hold nothing.
    pub fn holds_nothing(&self) -> bool {
        self.is_terminal() || matches!(self, JobState::Stopped)
    }

    /// Waiting for the scheduler to place (some of) its replicas.
    pub fn wants_placement(&self) -> bool {
        matches!(
            self,
            JobState::Pending | JobState::Deploying | JobState::Concerning
        )
    }
}

/// How long a job waits before it may be placed again after its `disruptions`-th
/// disruption (0: at once). Exponential past `DISRUPTIONS_WITHOUT_BACKOFF`, capped.
pub fn disruption_backoff_ms(disruptions: u32) -> u64 {
    use crate::limits::{
        DISRUPTIONS_WITHOUT_BACKOFF, DISRUPTION_BACKOFF_BASE_MS, MAX_DISRUPTION_BACKOFF_MS,
    };
    if disruptions <= DISRUPTIONS_WITHOUT_BACKOFF {
        return 0;
    }
    let doublings = (disruptions - DISRUPTIONS_WITHOUT_BACKOFF - 1).min(32);
    DISRUPTION_BACKOFF_BASE_MS
        .saturating_mul(1u64 << doublings)
        .min(MAX_DISRUPTION_BACKOFF_MS)
}

/// The table of allowed transitions for each kind (invariant 4). The state machine
/// moves a job only through this function's `true` answers.
pub fn allowed_transition(kind: &JobKind, from: JobState, to: JobState) -> bool {
    use JobState::*;
    match kind {
        JobKind::Training { .. } => matches!(
            (from, to),
            (Creating, Pending)
                | (Pending, Running)
                | (Pending, Terminated)
                | (Pending, Failed)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Pending)
                | (Running, Abnormal)
                | (Running, Terminating)
                | (Running, Terminated)
                | (Abnormal, Pending)
                | (Abnormal, Failed)
                | (Abnormal, Terminating)
                | (Abnormal, Terminated)
                | (Terminating, Terminated)
                | (Terminating, Failed)
        ),
        JobKind::Inference => matches!(
            (from, to),
            (Creating, Deploying)
                | (Deploying, Running)
                | (Deploying, Concerning)
                | (Running, Concerning)
                | (Concerning, Running)
                | (Concerning, Deploying)
                | (Running, Deploying)
                | (Deploying | Running | Concerning, Stopping)
                | (Deploying | Running | Concerning, Stopped)
                | (Deploying | Running | Concerning, Failed)
                | (Deploying | Running | Concerning, Terminated)
                | (Stopping, Stopped)
                | (Stopping, Failed)
                | (Stopping, Terminated)
                | (Stopped, Deploying)
                | (Stopped, Terminated)
        ),
        JobKind::Notebook { .. } => matches!(
            (from, to),
            (Creating, Pending)
                | (Pending, Running)
                | (Pending, Stopped)
                | (Pending, Failed)
                | (Running, Pending)
                | (Running, Stopping)
                | (Running, Stopped)
                | (Running, Failed)
                | (Pending | Running, Terminated)
                | (Stopping, Stopped)
                | (Stopping, Failed)
                | (Stopping, Terminated)
                | (Stopped, Pending)
                | (Stopped, Terminated)
        ),
        JobKind::Workflow(_) => matches!(
            (from, to),
            (Creating, Running)
                | (Creating, Failed)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Terminated)
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Not on any node; waiting for placement.
    Unplaced,
    /// Placed; its agent has not reported it started.
    Assigned,
    Running,
    Exited {
        exit_code: i32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub rank: u32,
    pub node: Option<NodeId>,
    pub device_mask: u64,
    pub state: ReplicaState,
    /// The billing meter of this replica's current allocation, when public-pool work.
    pub meter: Option<MeterId>,
    pub assigned_at_ms: Option<u64>,
    /// The node of the latest placement, kept after release: its agent keeps the
    /// replica's output (`corral job logs` of a finished job).
    pub last_node: Option<NodeId>,
    /// The log index of the entry that placed the replica (0: never placed). Unique per
    /// placement, so an agent tells a re-placement on the same node from the run it
    /// already has.
    pub placed_at_index: u64,
    /// Rank 0 of a multi-replica job: the rendezvous port its agent allocated for this
    /// placement (None until it reported its start).
    pub master_port: Option<u16>,
}

impl Replica {
    pub fn unplaced(rank: u32) -> Replica {
        Replica {
            rank,
            node: None,
            device_mask: 0,
            state: ReplicaState::Unplaced,
            meter: None,
            assigned_at_ms: None,
            last_node: None,
            placed_at_index: 0,
            master_port: None,
        }
    }

    /// Holding resources on a node.
    pub fn is_placed(&self) -> bool {
        self.node.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub tenant: TenantId,
    pub spec: JobSpec,
    pub state: JobState,
    pub replicas: Vec<Replica>,
    /// Training: gang restarts used so far, for the job's own failures only.
    pub retries_used: u32,
    /// Restarts caused by infrastructure (node loss, agent restart, drain, driver
    /// upgrade, eviction), which spend no retry; bounded for training jobs by
    /// `MAX_DISRUPTIONS_PER_JOB`.
    pub disruptions: u32,
    /// After a disruption past `DISRUPTIONS_WITHOUT_BACKOFF`: the job is not placed
    /// before this time (the entry's time; the scheduler and the plan applier check it).
    pub not_before_ms: Option<u64>,
    /// Monotonic per job; bumped on every state change (for optimistic checks).
    pub generation: u64,
    pub submitted_at_ms: u64,
    /// When the job last entered a waiting state (Pending/Deploying); queue order uses
    /// `submitted_at_ms`, durations use this.
    pub queued_at_ms: u64,
    /// When the current run started (first replica placed).
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Why the job last changed state, for people.
    pub reason: String,
    /// The workflow this job is a step of.
    pub parent_workflow: Option<JobId>,
    pub workflow: Option<WorkflowProgress>,
    /// While Terminating or Stopping: the state to reach once every replica has exited.
    pub shutdown_target: Option<JobState>,
    /// Accumulated pending and running time of earlier runs, for queries.
    pub pending_ms_total: u64,
    pub running_ms_total: u64,
}

impl Job {
    pub fn job_type(&self) -> Option<JobType> {
        self.spec.kind.job_type()
    }

    pub fn placed_replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|replica| replica.is_placed())
    }

    pub fn unplaced_count(&self) -> u32 {
        self.replicas
            .iter()
            .filter(|replica| replica.state == ReplicaState::Unplaced)
            .count() as u32
    }

    /// Held back from placement at `now_ms` by a disruption's backoff.
    pub fn held_back_at(&self, now_ms: u64) -> bool {
        self.not_before_ms
            .is_some_and(|not_before| not_before > now_ms)
    }

    /// Resources the job holds right now.
    pub fn held(&self) -> Resources {
        let placed = self.placed_replicas().count() as u32;
        self.spec
            .per_replica
            .checked_mul(placed)
            .unwrap_or(Resources::ZERO)
    }
}

//! Read-only queries with filters and bounds, answered as the principal may see them:
//! a tenant sees the public pool and its own pools, nodes, jobs, bills and events.

use crate::apply::lifecycle::queue_key;
use crate::state::State;
use corral_model::billing::BillLine;
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::limits::MAX_LIST_PAGE;
use corral_model::{
    EventRecord, Job, JobState, Node, NodeStatus, Pool, PoolStatus, Principal, Reads, Rejection,
};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Rejected(Rejection),
    /// Events before `oldest_index` were compacted away; resume from a snapshot.
    Compacted {
        oldest_index: u64,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Rejected(rejection) => rejection.fmt(formatter),
            QueryError::Compacted { oldest_index } => write!(
                formatter,
                "events before index {oldest_index} were compacted"
            ),
        }
    }
}

impl std::error::Error for QueryError {}

impl From<Rejection> for QueryError {
    fn from(rejection: Rejection) -> Self {
        QueryError::Rejected(rejection)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolFilter {
    pub owner: Option<TenantId>,
    pub status: Option<PoolStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFilter {
    pub pool: Option<PoolId>,
    pub status: Option<NodeStatus>,
    /// Only nodes in no pool.
    pub free_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub tenant: Option<TenantId>,
    pub pool: Option<PoolId>,
    pub state: Option<JobState>,
    /// `training`, `inference`, `notebook` or `workflow`.
    pub kind: Option<String>,
}

/// A job with what a person wants to know about its wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub job: Job,
    /// 0-based place in its pool's queue, while queued.
    pub queue_position: Option<usize>,
    pub pending_ms: u64,
    pub running_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BillQuery {
    pub tenant: Option<TenantId>,
    pub from_ms: u64,
    /// Exclusive; `None` means no upper bound.
    pub to_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BillSummary {
    /// Retained lines overlapping the window, oldest first, at most `MAX_LIST_PAGE`.
    pub lines: Vec<BillLine>,
    /// Sum of every retained line overlapping the window (not only those returned).
    pub window_total_micros: u64,
    /// Everything ever billed to the tenant(s) in scope.
    pub lifetime_total_micros: u64,
    pub truncated: bool,
}

fn bounded(limit: usize) -> usize {
    limit.clamp(1, MAX_LIST_PAGE)
}

impl State {
    fn sees_pool(principal: &Principal, pool: &Pool) -> bool {
        match principal.reads() {
            Reads::Tenant(tenant) => pool.admits_tenant(tenant),
            Reads::Everything => true,
            Reads::Nothing => false,
        }
    }

    pub fn get_pool(&self, principal: &Principal, pool_id: PoolId) -> Result<&Pool, QueryError> {
        Ok(self.visible_pool(principal, pool_id)?)
    }

    pub fn list_pools(
        &self,
        principal: &Principal,
        filter: &PoolFilter,
        limit: usize,
    ) -> Vec<&Pool> {
        self.pools
            .values()
            .filter(|pool| State::sees_pool(principal, pool))
            .filter(|pool| filter.owner.is_none_or(|owner| pool.owner() == Some(owner)))
            .filter(|pool| filter.status.is_none_or(|status| pool.status == status))
            .take(bounded(limit))
            .collect()
    }

    /// Tenants see the nodes of their own dedicated pools; the platform admin sees all.
    fn sees_node(&self, principal: &Principal, node: &Node) -> bool {
        match principal.reads() {
            Reads::Everything => true,
            Reads::Tenant(tenant) => {
                node.pool
                    .and_then(|pool| self.pools.get(&pool))
                    .and_then(|pool| pool.owner())
                    == Some(tenant)
            }
            Reads::Nothing => false,
        }
    }

    pub fn get_node(&self, principal: &Principal, node_id: NodeId) -> Result<&Node, QueryError> {
        match self.nodes.get(&node_id) {
            Some(node) if self.sees_node(principal, node) => Ok(node),
            _ => Err(Rejection::not_found("node", node_id).into()),
        }
    }

    pub fn list_nodes(
        &self,
        principal: &Principal,
        filter: &NodeFilter,
        limit: usize,
    ) -> Vec<&Node> {
        let candidates: Box<dyn Iterator<Item = &Node>> = match filter.pool {
            Some(pool) => Box::new(self.pool_nodes(pool)),
            None => Box::new(self.nodes.values()),
        };
        candidates
            .filter(|node| self.sees_node(principal, node))
            .filter(|node| filter.status.is_none_or(|status| node.status == status))
            .filter(|node| !filter.free_only || node.pool.is_none())
            .take(bounded(limit))
            .collect()
    }

    fn sees_job(principal: &Principal, job: &Job) -> bool {
        principal.may_read(job.tenant)
    }

    pub fn get_job(&self, principal: &Principal, job_id: JobId) -> Result<JobView, QueryError> {
        match self.jobs.get(&job_id) {
            Some(job) if State::sees_job(principal, job) => {
                let position = self
                    .queue(job.spec.pool)
                    .position(|key| *key == queue_key(job));
                Ok(self.job_view(job, position))
            }
            _ => Err(Rejection::not_found("job", job_id).into()),
        }
    }

    pub fn list_jobs(
        &self,
        principal: &Principal,
        filter: &JobFilter,
        limit: usize,
    ) -> Vec<JobView> {
        let mut positions: BTreeMap<PoolId, BTreeMap<JobId, usize>> = BTreeMap::new();
        let mut views = Vec::new();
        let matching = self
            .jobs
            .values()
            .filter(|job| State::sees_job(principal, job))
            .filter(|job| filter.tenant.is_none_or(|tenant| job.tenant == tenant))
            .filter(|job| filter.pool.is_none_or(|pool| job.spec.pool == pool))
            .filter(|job| filter.state.is_none_or(|state| job.state == state))
            .filter(|job| {
                filter
                    .kind
                    .as_ref()
                    .is_none_or(|kind| job.spec.kind.label() == kind)
            })
            .take(bounded(limit));
        for job in matching {
            let pool_positions = positions.entry(job.spec.pool).or_insert_with(|| {
                self.queue(job.spec.pool)
                    .enumerate()
                    .map(|(position, key)| (key.job, position))
                    .collect()
            });
            views.push(self.job_view(job, pool_positions.get(&job.id).copied()));
        }
        views
    }

    fn job_view(&self, job: &Job, queue_position: Option<usize>) -> JobView {
        let now = self.now_ms;
        let pending_ms = job.pending_ms_total
            + if job.state.wants_placement() {
                now.saturating_sub(job.queued_at_ms)
            } else {
                0
            };
        let running_now = matches!(job.state, JobState::Running | JobState::Concerning);
        let running_ms = job.running_ms_total
            + if running_now {
                job.started_at_ms
                    .map_or(0, |started| now.saturating_sub(started))
            } else {
                0
            };
        JobView {
            job: job.clone(),
            queue_position,
            pending_ms,
            running_ms,
        }
    }

    /// Bill lines of a tenant (a tenant principal sees only its own) in a time window.
    pub fn bills(
        &self,
        principal: &Principal,
        query: &BillQuery,
    ) -> Result<BillSummary, QueryError> {
        let tenant = match (principal.reads(), query.tenant) {
            (Reads::Tenant(own), Some(asked)) if own != asked => {
                return Err(Rejection::not_found("tenant", asked).into())
            }
            (Reads::Tenant(own), _) => Some(own),
            (Reads::Everything, asked) => asked,
            (Reads::Nothing, _) => {
                return Err(Rejection::denied("this principal reads no bills").into())
            }
        };
        let to_ms = query.to_ms.unwrap_or(u64::MAX);
        let mut summary = BillSummary::default();
        for line in &self.bill_lines {
            if tenant.is_some_and(|tenant| line.tenant != tenant)
                || line.to_ms <= query.from_ms
                || line.from_ms >= to_ms
            {
                continue;
            }
            summary.window_total_micros += line.amount_micros;
            if summary.lines.len() < MAX_LIST_PAGE {
                summary.lines.push(line.clone());
            } else {
                summary.truncated = true;
            }
        }
        summary.lifetime_total_micros = match tenant {
            Some(tenant) => self.billed_micros_total.get(&tenant).copied().unwrap_or(0),
            None => self.billed_micros_total.values().sum(),
        };
        Ok(summary)
    }

    /// Events with index at least `from_index` that the principal may see: `limit` of
    /// them, and then the rest of the last one's entry, so the result always ends at an
    /// entry boundary and a reader can resume from the last index + 1 (an entry that
    /// carries a batch of writes has many events under one index).
    pub fn events_since(
        &self,
        principal: &Principal,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<&EventRecord>, QueryError> {
        if let Some(oldest) = self.events.front() {
            if from_index < oldest.index
                && self.events.len() >= corral_model::limits::MAX_EVENTS_RETAINED
            {
                return Err(QueryError::Compacted {
                    oldest_index: oldest.index,
                });
            }
        }
        let start = self
            .events
            .partition_point(|record| record.index < from_index);
        let limit = bounded(limit);
        let mut records: Vec<&EventRecord> = Vec::new();
        for record in self.events.range(start..) {
            let visible = match principal.reads() {
                Reads::Everything => true,
                Reads::Tenant(tenant) => record.tenant == Some(tenant),
                Reads::Nothing => false,
            };
            if !visible {
                continue;
            }
            if records.len() >= limit && records.last().map(|last| last.index) != Some(record.index)
            {
                break;
            }
            records.push(record);
        }
        Ok(records)
    }
}

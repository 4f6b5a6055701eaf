//! The `State` struct: every table of the cluster, the derived indexes that keep the
//! scheduler and queries fast, and small read accessors.

use corral_model::billing::{BillLine, Meter};
use corral_model::ids::{JobId, MeterId, NetworkId, NodeId, PoolId, TenantId, TokenId};
use corral_model::{
    EventRecord, Flavor, Job, Network, Node, Pool, Queue, Resources, Tenant, Token,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Queue order within a pool: higher priority first, then earlier submission, then job
/// id (unique, so the order is total and identical on every replica).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    /// `MAX_PRIORITY - priority`, so that priority 3 sorts first.
    pub priority_rank: u8,
    pub submitted_at_ms: u64,
    pub job: JobId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub tenant: u64,
    pub pool: u64,
    pub node: u64,
    pub network: u64,
    pub job: u64,
    pub meter: u64,
    pub token: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub(crate) applied_index: u64,
    /// Time of the latest applied entry; entries never move time backwards.
    pub(crate) now_ms: u64,
    pub(crate) counters: Counters,
    pub(crate) tenants: BTreeMap<TenantId, Tenant>,
    pub(crate) tenant_names: BTreeMap<String, TenantId>,
    /// Tokens by name; `token_ids` and `token_hashes` index them (current and
    /// rotated-out secrets alike), so authentication is a map look-up.
    pub(crate) tokens: BTreeMap<String, Token>,
    pub(crate) token_ids: BTreeMap<TokenId, String>,
    pub(crate) token_hashes: BTreeMap<String, TokenId>,
    pub(crate) flavors: BTreeMap<String, Flavor>,
    pub(crate) networks: BTreeMap<NetworkId, Network>,
    pub(crate) pools: BTreeMap<PoolId, Pool>,
    pub(crate) public_pool: Option<PoolId>,
    pub(crate) pool_nodes: BTreeMap<PoolId, BTreeSet<NodeId>>,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) node_names: BTreeMap<String, NodeId>,
    pub(crate) jobs: BTreeMap<JobId, Job>,
    /// Jobs with replicas waiting for placement, per pool, in queue order.
    pub(crate) queues: BTreeMap<PoolId, BTreeSet<QueueKey>>,
    /// Jobs that are not terminal.
    pub(crate) active_jobs: usize,
    /// Jobs that are not terminal, per tenant (tenants with none are absent).
    pub(crate) active_jobs_per_tenant: BTreeMap<TenantId, usize>,
    /// Terminal jobs in the order they finished, so the oldest can be forgotten.
    pub(crate) finished_jobs: VecDeque<JobId>,
    pub(crate) meters: BTreeMap<MeterId, Meter>,
    pub(crate) bill_lines: VecDeque<BillLine>,
    /// Amounts of bill lines dropped from `bill_lines` to keep it bounded, per tenant.
    pub(crate) folded_billed_micros: BTreeMap<TenantId, u64>,
    /// Everything ever billed, per tenant (retained lines plus folded).
    pub(crate) billed_micros_total: BTreeMap<TenantId, u64>,
    pub(crate) events: VecDeque<EventRecord>,
    /// Outcomes of recent client requests, for deduplicating retries (`requests.rs`).
    pub(crate) requests: crate::requests::RequestLedger,
    /// Every write a principal made, applied or refused, within bounds (`audit.rs`).
    pub(crate) audit: crate::audit::AuditLog,
    /// Cluster alarms in force, by replica and kind (`apply/alarms.rs`).
    pub(crate) alarms: Vec<corral_model::Alarm>,
    /// The queues of each pool (`corral_model::queue`), by name. A pool without queues
    /// has no entry.
    pub(crate) pool_queues: BTreeMap<PoolId, BTreeMap<String, Queue>>,
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn tenant(&self, tenant: TenantId) -> Option<&Tenant> {
        self.tenants.get(&tenant)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }

    pub fn tenant_by_name(&self, name: &str) -> Option<&Tenant> {
        self.tenant_names
            .get(name)
            .and_then(|id| self.tenants.get(id))
    }

    pub fn token_by_hash(&self, hash: &str) -> Option<&Token> {
        self.token_hashes
            .get(hash)
            .and_then(|id| self.token_by_id(*id))
    }

    pub fn token_by_id(&self, id: TokenId) -> Option<&Token> {
        self.token_ids
            .get(&id)
            .and_then(|name| self.tokens.get(name))
    }

    pub fn token(&self, name: &str) -> Option<&Token> {
        self.tokens.get(name)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    pub fn flavor(&self, name: &str) -> Option<&Flavor> {
        self.flavors.get(name)
    }

    pub fn flavors(&self) -> impl Iterator<Item = &Flavor> {
        self.flavors.values()
    }

    pub fn network(&self, network: NetworkId) -> Option<&Network> {
        self.networks.get(&network)
    }

    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    pub fn pool(&self, pool: PoolId) -> Option<&Pool> {
        self.pools.get(&pool)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    pub fn public_pool(&self) -> Option<PoolId> {
        self.public_pool
    }

    pub fn node(&self, node: NodeId) -> Option<&Node> {
        self.nodes.get(&node)
    }

    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.node_names.get(name).and_then(|id| self.nodes.get(id))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Nodes of one pool, in id order.
    pub fn pool_nodes(&self, pool: PoolId) -> impl Iterator<Item = &Node> {
        self.pool_nodes
            .get(&pool)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.nodes.get(id))
    }

    pub fn job(&self, job: JobId) -> Option<&Job> {
        self.jobs.get(&job)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Jobs waiting for placement in `pool`, in queue order.
    pub fn queue(&self, pool: PoolId) -> impl Iterator<Item = &QueueKey> {
        self.queues
            .get(&pool)
            .into_iter()
            .flat_map(|queue| queue.iter())
    }

    pub fn queue_length(&self, pool: PoolId) -> usize {
        self.queues.get(&pool).map_or(0, |queue| queue.len())
    }

    /// Pools that have queued work, in id order.
    pub fn pools_with_queued_work(&self) -> impl Iterator<Item = PoolId> + '_ {
        self.queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(pool, _)| *pool)
    }

    pub fn active_job_count(&self) -> usize {
        self.active_jobs
    }

    /// Jobs of `tenant` that are not terminal.
    pub fn tenant_active_job_count(&self, tenant: TenantId) -> usize {
        self.active_jobs_per_tenant
            .get(&tenant)
            .copied()
            .unwrap_or(0)
    }

    pub fn meters(&self) -> impl Iterator<Item = &Meter> {
        self.meters.values()
    }

    pub fn events(&self) -> impl Iterator<Item = &EventRecord> {
        self.events.iter()
    }

    /// The queues of one pool, in name order.
    pub fn queues_of_pool(&self, pool: PoolId) -> impl Iterator<Item = &Queue> {
        self.pool_queues
            .get(&pool)
            .into_iter()
            .flat_map(|queues| queues.values())
    }

    pub fn queue_record(&self, pool: PoolId, name: &str) -> Option<&Queue> {
        self.pool_queues
            .get(&pool)
            .and_then(|queues| queues.get(name))
    }

    pub fn pool_has_queues(&self, pool: PoolId) -> bool {
        self.pool_queues
            .get(&pool)
            .is_some_and(|queues| !queues.is_empty())
    }

    /// What a pool's nodes offer, standbys aside: the capacity the sum of its queues'
    /// guarantees must fit and the borrowing rule reads (`corral_model::queue::admits`).
    pub fn queue_capacity(&self, pool: PoolId) -> Resources {
        self.pool_nodes(pool)
            .filter(|node| !node.standby)
            .fold(Resources::ZERO, |total, node| {
                total.saturating_add(&node.capacity)
            })
    }

    /// The standings of a pool's queues in name order, for `corral_model::queue::admits`,
    /// and the position of `name` among them.
    pub fn queue_standings(
        &self,
        pool: PoolId,
        name: &str,
    ) -> (Vec<corral_model::queue::QueueStanding>, Option<usize>) {
        let mut position = None;
        let standings = self
            .queues_of_pool(pool)
            .enumerate()
            .map(|(index, queue)| {
                if queue.name == name {
                    position = Some(index);
                }
                corral_model::queue::QueueStanding {
                    guarantee: queue.guarantee,
                    limit: queue.limit,
                    used: queue.used,
                }
            })
            .collect();
        (standings, position)
    }

    /// Whether `tenant`'s work in `pool` counts against its tenant quota: everywhere but
    /// in a dedicated pool it owns.
    pub fn counts_against_quota(&self, tenant: TenantId, pool: PoolId) -> bool {
        self.pools
            .get(&pool)
            .is_none_or(|record| record.owner() != Some(tenant))
    }
}

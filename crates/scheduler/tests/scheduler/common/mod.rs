//! The scheduler's test kit, on the state layer's (`corral_state::testing`): a cluster
//! built only through real commands applied with `State::apply` (flavors of 4 or 8
//! accelerators, tenants, nodes, networks, pools, job submissions), and scheduler plans
//! applied the way the leader proposes them (`Principal::System`). Used by the tests
//! and the benchmark.
//!
//! Time moves only when a test says so (`advance_ms`), so a plan applied right after it
//! was computed is applied at the same `now` it was planned for. Nothing is checked on
//! apply (the benchmark builds 100,000 jobs); tests call `assert_invariants`.

#![allow(dead_code)]

pub mod random_cluster;

use corral_model::command::NodeRegister;
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::limits::HOUR_MS;
use corral_model::{
    BillingMode, Command, Flavor, JobKind, JobSpec, Placement, Principal, Rejection, Resources,
    Taint,
};
use corral_scheduler::{plan_round, Plan, RoundOptions};
use corral_state::testing::{job_spec, node_request, unlimited_quota, Fx, ZONE};
use corral_state::{Applied, State};
use std::collections::BTreeMap;

// Part of the kit; the benchmark uses only some.
#[allow(unused_imports)]
pub use corral_state::testing::{
    rejected_jobs, selecting, tolerating, with_priority, with_runtime_hours, ACCELERATOR, START_MS,
};

/// One accelerator's worth of the other resources; a node of `n` accelerators offers
/// `n` of these, so accelerators are what runs out first.
pub fn per_accelerator(accelerators: u32) -> Resources {
    let count = u64::from(accelerators.max(1));
    Resources {
        cpu_millicores: 8_000 * count,
        memory_mib: 64 * 1024 * count,
        accelerators,
        disk_gib: 100 * count,
        bandwidth_mbps: 1_000 * count,
    }
}

/// The kit's driver with a still clock and no checks, plus the names handed out.
#[derive(Clone)]
pub struct Cluster {
    pub fx: Fx,
    networks_created: u32,
    nodes_registered: u32,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl std::ops::Deref for Cluster {
    type Target = Fx;
    fn deref(&self) -> &Fx {
        &self.fx
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Fx {
        &mut self.fx
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            fx: Fx::new().with_step_ms(0).without_checks(),
            networks_created: 0,
            nodes_registered: 0,
        }
    }

    /// Apply one command at the current time.
    pub fn apply(&mut self, principal: Principal, command: Command) -> Result<Applied, Rejection> {
        self.fx.apply(principal, command)
    }

    /// Apply a setup command that must succeed.
    #[track_caller]
    pub fn must(&mut self, principal: Principal, command: Command) -> Applied {
        self.fx.ok(principal, command)
    }

    pub fn advance_ms(&mut self, milliseconds: u64) {
        self.fx.advance(milliseconds);
        self.fx.tick();
    }

    pub fn now_ms(&self) -> u64 {
        self.state.now_ms()
    }

    /// A flavor named `gpu-<n>` with `n` accelerators.
    pub fn define_flavor(&mut self, accelerators: u32) -> String {
        let name = format!("gpu-{accelerators}");
        self.fx.admin(Command::FlavorDefine(Flavor {
            name: name.clone(),
            capacity: per_accelerator(accelerators),
            accelerator_type: Some(ACCELERATOR.into()),
            cpu_architecture: "x86_64".into(),
            price_micros_per_hour: 8_000_000,
        }));
        name
    }

    pub fn tenant(&mut self, name: &str, quota_accelerators: u32) -> TenantId {
        self.fx
            .create_tenant(name, unlimited_quota(quota_accelerators), true)
    }

    /// Register `count` nodes of `flavor` as their agents would.
    pub fn register_nodes(
        &mut self,
        flavor: &str,
        count: u32,
        labels: &BTreeMap<String, String>,
        taints: &[Taint],
    ) -> Vec<NodeId> {
        (0..count)
            .map(|_| {
                self.nodes_registered += 1;
                let name = format!("host-{}", self.nodes_registered);
                self.fx.register_node(NodeRegister {
                    labels: labels.clone(),
                    taints: taints.to_vec(),
                    gpu_driver_version: None,
                    ..node_request(&name, flavor, ZONE)
                })
            })
            .collect()
    }

    /// The public pool, claiming free registered nodes: `(flavor, node_count)`.
    pub fn public_pool(&mut self, flavors: &[(&str, u32)]) -> PoolId {
        self.fx.create_public_pool(flavors)
    }

    /// A dedicated pool of `owner`, with a fresh network of the owner, created by the
    /// owner's user.
    pub fn dedicated_pool(
        &mut self,
        name: &str,
        owner: TenantId,
        flavors: &[(&str, u32)],
    ) -> PoolId {
        self.networks_created += 1;
        let network = self.fx.create_network(
            owner,
            &format!("net-{}", self.networks_created),
            &format!("172.{}.0.0/16", 15 + self.networks_created),
        );
        self.fx
            .create_dedicated_pool(owner, name, network, flavors, BillingMode::PayPerUse)
    }

    pub fn submit(&mut self, tenant: TenantId, spec: JobSpec) -> JobId {
        self.fx.submit(tenant, spec)
    }

    /// Propose a plan as the leader's scheduler loop does, at the current time.
    pub fn apply_placements(
        &mut self,
        pool: PoolId,
        placements: Vec<Placement>,
    ) -> Result<Applied, Rejection> {
        self.apply(
            Principal::System,
            Command::SchedulerPlan { pool, placements },
        )
    }

    pub fn apply_plan(&mut self, plan: &Plan) -> Applied {
        self.apply_placements(plan.pool, plan.placements.clone())
            .unwrap_or_else(|rejection| panic!("plan was rejected as a whole: {rejection}"))
    }

    /// Plan one round for `pool` and apply it; returns the plan and what apply did.
    pub fn run_round(&mut self, pool: PoolId) -> (Plan, Applied) {
        let plan = plan_round(&self.state, pool, &RoundOptions::default());
        let applied = self.apply_plan(&plan);
        (plan, applied)
    }

    /// Report every placed replica of every job as started, as agents do.
    pub fn start_all_replicas(&mut self) {
        let placed: Vec<(JobId, u32, NodeId)> = self
            .state
            .jobs()
            .flat_map(|job| {
                job.replicas
                    .iter()
                    .filter(|replica| replica.state == corral_model::ReplicaState::Assigned)
                    .map(move |replica| (job.id, replica.rank, replica.node.expect("assigned")))
            })
            .collect();
        for (job, rank, node) in placed {
            self.fx.agent(Command::ReplicaStarted {
                job,
                rank,
                node,
                master_port: None,
            });
        }
    }

    pub fn assert_invariants(&self) {
        self.fx.check();
    }
}

fn spec(pool: PoolId, kind: JobKind, replicas: u32, accelerators: u32) -> JobSpec {
    job_spec("job", pool, kind, replicas, per_accelerator(accelerators))
}

/// A training gang of `replicas` replicas with `accelerators` each.
pub fn training(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    spec(
        pool,
        JobKind::Training { retry_limit: 1 },
        replicas,
        accelerators,
    )
}

/// A training gang that the state machine fails after `hours` of running.
pub fn training_for_hours(pool: PoolId, replicas: u32, accelerators: u32, hours: u64) -> JobSpec {
    let mut job = training(pool, replicas, accelerators);
    job.max_runtime_ms = Some(hours * HOUR_MS);
    job
}

pub fn inference(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    spec(pool, JobKind::Inference, replicas, accelerators)
}

pub fn notebook(pool: PoolId, accelerators: u32) -> JobSpec {
    spec(
        pool,
        JobKind::Notebook {
            auto_stop_after_ms: None,
        },
        1,
        accelerators,
    )
}

/// Dominant share (ppm of the pool's capacity) of each tenant's work in `pool`.
pub fn dominant_shares(state: &State, pool: PoolId) -> BTreeMap<TenantId, u64> {
    let mut capacity = Resources::ZERO;
    let mut held: BTreeMap<TenantId, Resources> = BTreeMap::new();
    for node in state.pool_nodes(pool) {
        capacity = capacity.saturating_add(&node.capacity);
        for allocation in &node.allocations {
            let tenant = state
                .job(allocation.job)
                .expect("allocated job exists")
                .tenant;
            let total = held.entry(tenant).or_default();
            *total = total.saturating_add(&allocation.resources);
        }
    }
    held.into_iter()
        .map(|(tenant, resources)| (tenant, resources.dominant_share_ppm(&capacity)))
        .collect()
}

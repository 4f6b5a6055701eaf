//! Shared fixture of the state machine's unit tests: a driver that stamps entries with
//! increasing indexes and times and checks the invariants after every apply (and, for a
//! rejected entry, that nothing but the applied index changed), ready-made flavors,
//! nodes, networks, pools and job specs, and helpers to assert rejections.
#![allow(dead_code)]

use corral_model::command::{NodeRegister, PoolCreate, PoolKindRequest};
use corral_model::ids::{JobId, NetworkId, NodeId, PoolId, TenantId};
use corral_model::limits::HOUR_MS;
use corral_model::{
    BillingMode, Command, DriverSpec, Entry, Event, Flavor, Job, JobKind, JobSpec, JobState,
    JobType, Node, Placement, Pool, PoolFlavor, Principal, Rejection, ReplicaState, Resources,
    WorkflowSpec, WorkflowStep,
};
use corral_state::{Applied, Created, State};
use std::collections::{BTreeMap, BTreeSet};

pub const GPU: &str = "gpu-a100-8";
pub const CPU: &str = "cpu-16";
/// An aarch64 flavor, to test that a pool's flavors share one architecture.
pub const NPU: &str = "npu-910b-8";
pub const ZONE: &str = "zone-a";
pub const ZONE_B: &str = "zone-b";
pub const GPU_PRICE: u64 = 8_000_000;
pub const CPU_PRICE: u64 = 500_000;
pub const NPU_PRICE: u64 = 6_000_000;
pub const ACCELERATOR: &str = "nvidia-a100";

/// Time of the first entry, and how far the clock moves between entries.
pub const START_MS: u64 = 1_000_000;
pub const STEP_MS: u64 = 1_000;

pub fn gpu_flavor() -> Flavor {
    Flavor {
        name: GPU.into(),
        capacity: Resources {
            cpu_millicores: 64_000,
            memory_mib: 512 * 1024,
            accelerators: 8,
            disk_gib: 2_000,
            bandwidth_mbps: 25_000,
        },
        accelerator_type: Some(ACCELERATOR.into()),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: GPU_PRICE,
    }
}

pub fn cpu_flavor() -> Flavor {
    Flavor {
        name: CPU.into(),
        capacity: Resources {
            cpu_millicores: 16_000,
            memory_mib: 64 * 1024,
            accelerators: 0,
            disk_gib: 500,
            bandwidth_mbps: 10_000,
        },
        accelerator_type: None,
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: CPU_PRICE,
    }
}

pub fn npu_flavor() -> Flavor {
    Flavor {
        name: NPU.into(),
        capacity: Resources {
            cpu_millicores: 192_000,
            memory_mib: 1024 * 1024,
            accelerators: 8,
            disk_gib: 3_000,
            bandwidth_mbps: 25_000,
        },
        accelerator_type: Some("ascend-910b".into()),
        cpu_architecture: "aarch64".into(),
        price_micros_per_hour: NPU_PRICE,
    }
}

pub fn quota(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: 1_000_000,
        memory_mib: 16 * 1024 * 1024,
        accelerators,
        disk_gib: 1_000_000,
        bandwidth_mbps: 10_000_000,
    }
}

/// One replica's request: 8 cores, 64 GiB, `accelerators` A100s.
pub fn replica(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: 8_000,
        memory_mib: 64 * 1024,
        accelerators,
        disk_gib: 100,
        bandwidth_mbps: 1_000,
    }
}

fn base_spec(name: &str, pool: PoolId, kind: JobKind, replicas: u32, accelerators: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        pool,
        kind,
        replicas,
        per_replica: replica(accelerators),
        accelerator_type: (accelerators > 0).then(|| ACCELERATOR.to_string()),
        priority: 1,
        command: vec!["python".into(), "main.py".into()],
        environment: BTreeMap::new(),
        node_selector: BTreeMap::new(),
        tolerations: vec![],
        max_runtime_ms: None,
    }
}

/// A training gang with two retries.
pub fn training(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    base_spec(
        "train",
        pool,
        JobKind::Training { retry_limit: 2 },
        replicas,
        accelerators,
    )
}

pub fn inference(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    base_spec("serve", pool, JobKind::Inference, replicas, accelerators)
}

pub fn notebook(pool: PoolId, auto_stop_after_ms: Option<u64>) -> JobSpec {
    base_spec(
        "notebook",
        pool,
        JobKind::Notebook { auto_stop_after_ms },
        1,
        1,
    )
}

pub fn step(name: &str, depends_on: &[usize], spec: JobSpec) -> WorkflowStep {
    WorkflowStep {
        name: name.into(),
        depends_on: depends_on.to_vec(),
        spec,
        use_public_pool: false,
    }
}

pub fn workflow(pool: PoolId, steps: Vec<WorkflowStep>) -> JobSpec {
    let mut spec = training(pool, 1, 0);
    spec.name = "flow".into();
    spec.kind = JobKind::Workflow(WorkflowSpec { steps });
    spec
}

pub fn all_job_types() -> BTreeSet<JobType> {
    [JobType::Training, JobType::Inference, JobType::Notebook]
        .into_iter()
        .collect()
}

pub fn node_request(name: &str, flavor: &str, zone: &str) -> NodeRegister {
    NodeRegister {
        name: name.into(),
        flavor: flavor.into(),
        zone: zone.into(),
        labels: BTreeMap::new(),
        taints: vec![],
        gpu_driver_version: Some("535.1".into()),
        npu_driver_version: None,
        agent_address: None,
    }
}

pub fn pool_create(
    name: &str,
    kind: PoolKindRequest,
    network: Option<NetworkId>,
    flavors: &[(&str, u32)],
    billing: BillingMode,
) -> PoolCreate {
    PoolCreate {
        name: name.into(),
        description: String::new(),
        kind,
        flavors: flavors
            .iter()
            .map(|(flavor, count)| PoolFlavor {
                flavor: flavor.to_string(),
                zone: ZONE.into(),
                node_count: *count,
            })
            .collect(),
        job_types: all_job_types(),
        network,
        driver: DriverSpec::default(),
        billing,
        tags: BTreeMap::new(),
    }
}

pub fn prepaid(period_months: u32, auto_renew: bool) -> BillingMode {
    BillingMode::Prepaid {
        period_months,
        auto_renew,
    }
}

/// The driver: a state plus the index and time of the next entry.
pub struct Fx {
    pub state: State,
    next_index: u64,
    clock_ms: u64,
}

impl Default for Fx {
    fn default() -> Self {
        Fx::new()
    }
}

impl Fx {
    pub fn new() -> Fx {
        Fx {
            state: State::new(),
            next_index: 1,
            clock_ms: START_MS,
        }
    }

    /// The time the next entry is stamped with.
    pub fn clock(&self) -> u64 {
        self.clock_ms
    }

    pub fn advance(&mut self, ms: u64) {
        self.clock_ms += ms;
    }

    /// Stamp the next entry with exactly `at_ms` (may lie before the state's time).
    pub fn set_clock(&mut self, at_ms: u64) {
        self.clock_ms = at_ms;
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Apply one entry; check every invariant afterwards and, when it was rejected,
    /// that nothing but the applied index changed.
    #[track_caller]
    pub fn apply(&mut self, principal: Principal, command: Command) -> Result<Applied, Rejection> {
        let result = self.apply_unchecked(principal, command);
        if let Err(violation) = self.state.check_invariants() {
            panic!("after {result:?}: {violation}");
        }
        result
    }

    /// Apply one entry with the rejection check but without the (whole-state)
    /// invariant check, for bulk setup; call `check` afterwards.
    #[track_caller]
    pub fn apply_unchecked(
        &mut self,
        principal: Principal,
        command: Command,
    ) -> Result<Applied, Rejection> {
        let entry = Entry {
            index: self.next_index,
            at_ms: self.clock_ms,
            principal,
            command,
        };
        self.next_index += 1;
        self.clock_ms += STEP_MS;
        let before = self.state.content_digest();
        let now_before = self.state.now_ms();
        let events_before = self.state.events().count();
        let result = self.state.apply(&entry);
        assert_eq!(self.state.applied_index(), entry.index);
        match &result {
            Ok(applied) => {
                assert!(
                    applied
                        .events
                        .iter()
                        .all(|record| record.index == entry.index),
                    "events carry their entry's index"
                );
                assert_eq!(
                    self.state.events().count(),
                    events_before + applied.events.len()
                );
            }
            Err(rejection) => {
                assert_eq!(
                    before,
                    self.state.content_digest(),
                    "rejected {} ({rejection}) changed the state",
                    entry.command.name()
                );
                assert_eq!(self.state.now_ms(), now_before);
                assert_eq!(self.state.events().count(), events_before);
            }
        }
        result
    }

    /// Apply an entry that must be accepted, without the digest and invariant checks:
    /// for setting up thousands of objects quickly. Call `check` afterwards.
    #[track_caller]
    pub fn bulk(&mut self, principal: Principal, command: Command) -> Applied {
        let entry = Entry {
            index: self.next_index,
            at_ms: self.clock_ms,
            principal,
            command,
        };
        self.next_index += 1;
        self.clock_ms += STEP_MS;
        match self.state.apply(&entry) {
            Ok(applied) => applied,
            Err(rejection) => panic!("{} was rejected: {rejection}", entry.command.name()),
        }
    }

    pub fn check(&self) {
        self.state.check_invariants().unwrap();
    }

    #[track_caller]
    pub fn ok(&mut self, principal: Principal, command: Command) -> Applied {
        let name = command.name();
        match self.apply(principal, command) {
            Ok(applied) => applied,
            Err(rejection) => panic!("{name} was rejected: {rejection}"),
        }
    }

    #[track_caller]
    pub fn reject(&mut self, principal: Principal, command: Command) -> Rejection {
        let name = command.name();
        match self.apply(principal, command) {
            Ok(applied) => panic!("{name} was accepted: {:?}", applied.events),
            Err(rejection) => rejection,
        }
    }

    #[track_caller]
    pub fn admin(&mut self, command: Command) -> Applied {
        self.ok(Principal::PlatformAdmin, command)
    }

    #[track_caller]
    pub fn system(&mut self, command: Command) -> Applied {
        self.ok(Principal::System, command)
    }

    #[track_caller]
    pub fn agent(&mut self, command: Command) -> Applied {
        self.ok(Principal::Agent, command)
    }

    #[track_caller]
    pub fn user(&mut self, tenant: TenantId, command: Command) -> Applied {
        self.ok(Principal::TenantUser(tenant), command)
    }

    pub fn define_catalog(&mut self) {
        self.admin(Command::FlavorDefine(gpu_flavor()));
        self.admin(Command::FlavorDefine(cpu_flavor()));
        self.admin(Command::FlavorDefine(npu_flavor()));
    }

    #[track_caller]
    pub fn create_tenant(&mut self, name: &str, quota: Resources, high: bool) -> TenantId {
        let applied = self.admin(Command::TenantCreate {
            name: name.into(),
            quota,
            may_use_high_priority: high,
        });
        match applied.created {
            Some(Created::Tenant(id)) => id,
            other => panic!("tenant_create created {other:?}"),
        }
    }

    #[track_caller]
    pub fn register_node(&mut self, request: NodeRegister) -> NodeId {
        match self.agent(Command::NodeRegister(request)).created {
            Some(Created::Node(id)) => id,
            other => panic!("node_register created {other:?}"),
        }
    }

    #[track_caller]
    pub fn register_nodes(
        &mut self,
        prefix: &str,
        flavor: &str,
        zone: &str,
        count: u32,
    ) -> Vec<NodeId> {
        (0..count)
            .map(|index| {
                self.register_node(node_request(&format!("{prefix}-{index}"), flavor, zone))
            })
            .collect()
    }

    #[track_caller]
    pub fn create_network(&mut self, tenant: TenantId, name: &str, cidr: &str) -> NetworkId {
        let applied = self.user(
            tenant,
            Command::NetworkCreate {
                tenant,
                name: name.into(),
                cidr: cidr.into(),
            },
        );
        match applied.created {
            Some(Created::Network(id)) => id,
            other => panic!("network_create created {other:?}"),
        }
    }

    #[track_caller]
    pub fn create_pool(&mut self, principal: Principal, request: PoolCreate) -> PoolId {
        match self.ok(principal, Command::PoolCreate(request)).created {
            Some(Created::Pool(id)) => id,
            other => panic!("pool_create created {other:?}"),
        }
    }

    #[track_caller]
    pub fn create_public_pool(&mut self, flavors: &[(&str, u32)]) -> PoolId {
        self.create_pool(
            Principal::PlatformAdmin,
            pool_create(
                "public",
                PoolKindRequest::Public,
                None,
                flavors,
                BillingMode::PayPerUse,
            ),
        )
    }

    #[track_caller]
    pub fn create_dedicated_pool(
        &mut self,
        owner: TenantId,
        name: &str,
        network: NetworkId,
        flavors: &[(&str, u32)],
        billing: BillingMode,
    ) -> PoolId {
        self.create_pool(
            Principal::TenantUser(owner),
            pool_create(
                name,
                PoolKindRequest::Dedicated { owner },
                Some(network),
                flavors,
                billing,
            ),
        )
    }

    #[track_caller]
    pub fn submit(&mut self, tenant: TenantId, spec: JobSpec) -> JobId {
        match self.user(tenant, Command::JobSubmit(spec)).created {
            Some(Created::Job(id)) => id,
            other => panic!("job_submit created {other:?}"),
        }
    }

    /// Apply a hand-written plan for one job and assert it was committed.
    #[track_caller]
    pub fn place(&mut self, job: JobId, assignments: &[(u32, NodeId)]) -> Applied {
        let pool = self.job(job).spec.pool;
        let applied = self.system(Command::SchedulerPlan {
            pool,
            placements: vec![Placement {
                job,
                assignments: assignments.to_vec(),
            }],
        });
        if let Some(reason) = placement_rejection(&applied) {
            panic!("placement of {job} was rejected: {reason}");
        }
        applied
    }

    /// Place rank i on `nodes[i]`.
    #[track_caller]
    pub fn place_on(&mut self, job: JobId, nodes: &[NodeId]) -> Applied {
        let assignments: Vec<(u32, NodeId)> = nodes
            .iter()
            .enumerate()
            .map(|(rank, node)| (rank as u32, *node))
            .collect();
        self.place(job, &assignments)
    }

    /// Apply a plan for one job and return the `PlacementRejected` reason.
    #[track_caller]
    pub fn place_expecting_refusal(
        &mut self,
        pool: PoolId,
        job: JobId,
        assignments: &[(u32, NodeId)],
    ) -> String {
        let applied = self.system(Command::SchedulerPlan {
            pool,
            placements: vec![Placement {
                job,
                assignments: assignments.to_vec(),
            }],
        });
        match placement_rejection(&applied) {
            Some(reason) => reason,
            None => panic!("placement of {job} was accepted"),
        }
    }

    #[track_caller]
    pub fn started(&mut self, job: JobId, rank: u32) -> Applied {
        let node = self.job(job).replicas[rank as usize]
            .node
            .expect("replica is placed");
        self.agent(Command::ReplicaStarted { job, rank, node })
    }

    /// Report every Assigned replica of the job started.
    #[track_caller]
    pub fn start_all(&mut self, job: JobId) {
        let ranks: Vec<u32> = self
            .job(job)
            .replicas
            .iter()
            .filter(|replica| replica.state == ReplicaState::Assigned)
            .map(|replica| replica.rank)
            .collect();
        for rank in ranks {
            self.started(job, rank);
        }
    }

    #[track_caller]
    pub fn exited(&mut self, job: JobId, rank: u32, exit_code: i32) -> Applied {
        let node = self.job(job).replicas[rank as usize]
            .node
            .expect("replica is placed");
        self.agent(Command::ReplicaExited {
            job,
            rank,
            node,
            exit_code,
        })
    }

    /// Report every placed replica of the job exited with `exit_code`.
    #[track_caller]
    pub fn exit_all(&mut self, job: JobId, exit_code: i32) {
        let ranks: Vec<u32> = self
            .job(job)
            .placed_replicas()
            .map(|replica| replica.rank)
            .collect();
        for rank in ranks {
            if self.job(job).replicas[rank as usize].node.is_some() {
                self.exited(job, rank, exit_code);
            }
        }
    }

    #[track_caller]
    pub fn tick(&mut self) -> Applied {
        self.system(Command::MeterTick)
    }

    #[track_caller]
    pub fn job(&self, job: JobId) -> &Job {
        self.state.job(job).expect("job exists")
    }

    #[track_caller]
    pub fn job_state(&self, job: JobId) -> JobState {
        self.job(job).state
    }

    #[track_caller]
    pub fn node(&self, node: NodeId) -> &Node {
        self.state.node(node).expect("node exists")
    }

    #[track_caller]
    pub fn pool(&self, pool: PoolId) -> &Pool {
        self.state.pool(pool).expect("pool exists")
    }

    pub fn pool_node_ids(&self, pool: PoolId) -> Vec<NodeId> {
        self.state.pool_nodes(pool).map(|node| node.id).collect()
    }

    pub fn free_node_ids(&self, flavor: &str) -> Vec<NodeId> {
        self.state
            .nodes()
            .filter(|node| node.pool.is_none() && node.flavor == flavor)
            .map(|node| node.id)
            .collect()
    }

    pub fn queued(&self, pool: PoolId) -> Vec<JobId> {
        self.state.queue(pool).map(|key| key.job).collect()
    }

    /// Total of every bill line of the tenant (as the platform admin sees it).
    pub fn billed(&self, tenant: TenantId) -> u64 {
        self.state
            .bills(
                &Principal::PlatformAdmin,
                &corral_state::BillQuery {
                    tenant: Some(tenant),
                    from_ms: 0,
                    to_ms: None,
                },
            )
            .expect("admin may read bills")
            .lifetime_total_micros
    }
}

/// The standard world most tests start from:
/// - flavors GPU (8 A100, x86_64), CPU (x86_64), NPU (aarch64);
/// - tenants alpha (may use priority 3, 64 accelerators) and beta (32 accelerators);
/// - ten GPU nodes, four CPU nodes and two NPU nodes in zone-a, registered by agents;
/// - networks alpha-net 192.168.0.0/24 and beta-net 172.16.0.0/16;
/// - the public pool with 2 GPU + 1 CPU nodes; alpha's pay-per-use pool with 2 GPU +
///   1 CPU nodes. Six GPU, two CPU and both NPU nodes stay free.
pub struct World {
    pub fx: Fx,
    pub alpha: TenantId,
    pub beta: TenantId,
    pub alpha_net: NetworkId,
    pub beta_net: NetworkId,
    pub public: PoolId,
    pub alpha_pool: PoolId,
    pub public_gpus: Vec<NodeId>,
    pub public_cpu: NodeId,
    pub alpha_gpus: Vec<NodeId>,
    pub alpha_cpu: NodeId,
}

impl World {
    pub fn new() -> World {
        let mut fx = Fx::new();
        fx.define_catalog();
        let alpha = fx.create_tenant("alpha", quota(64), true);
        let beta = fx.create_tenant("beta", quota(32), false);
        fx.register_nodes("gpu", GPU, ZONE, 10);
        fx.register_nodes("cpu", CPU, ZONE, 4);
        fx.register_nodes("npu", NPU, ZONE, 2);
        let alpha_net = fx.create_network(alpha, "alpha-net", "192.168.0.0/24");
        let beta_net = fx.create_network(beta, "beta-net", "172.16.0.0/16");
        let public = fx.create_public_pool(&[(GPU, 2), (CPU, 1)]);
        let alpha_pool = fx.create_dedicated_pool(
            alpha,
            "alpha-pool",
            alpha_net,
            &[(GPU, 2), (CPU, 1)],
            BillingMode::PayPerUse,
        );
        let split = |fx: &Fx, pool: PoolId| {
            let nodes: Vec<&Node> = fx.state.pool_nodes(pool).collect();
            let gpus = nodes
                .iter()
                .filter(|node| node.flavor == GPU)
                .map(|node| node.id)
                .collect::<Vec<_>>();
            let cpu = nodes
                .iter()
                .find(|node| node.flavor == CPU)
                .map(|node| node.id)
                .expect("a CPU node");
            (gpus, cpu)
        };
        let (public_gpus, public_cpu) = split(&fx, public);
        let (alpha_gpus, alpha_cpu) = split(&fx, alpha_pool);
        World {
            fx,
            alpha,
            beta,
            alpha_net,
            beta_net,
            public,
            alpha_pool,
            public_gpus,
            public_cpu,
            alpha_gpus,
            alpha_cpu,
        }
    }

    pub fn alpha_user(&self) -> Principal {
        Principal::TenantUser(self.alpha)
    }

    pub fn beta_user(&self) -> Principal {
        Principal::TenantUser(self.beta)
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl std::ops::Deref for World {
    type Target = Fx;
    fn deref(&self) -> &Fx {
        &self.fx
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut Fx {
        &mut self.fx
    }
}

/// The events of an applied entry, without their records.
pub fn events(applied: &Applied) -> Vec<Event> {
    applied
        .events
        .iter()
        .map(|record| record.event.clone())
        .collect()
}

pub fn has_event(applied: &Applied, wanted: &Event) -> bool {
    applied.events.iter().any(|record| record.event == *wanted)
}

/// The job state changes of an applied entry, as `(job, from, to)`.
pub fn transitions(applied: &Applied) -> Vec<(JobId, JobState, JobState)> {
    applied
        .events
        .iter()
        .filter_map(|record| match &record.event {
            Event::JobStateChanged { job, from, to, .. } => Some((*job, *from, *to)),
            _ => None,
        })
        .collect()
}

pub fn placement_rejection(applied: &Applied) -> Option<String> {
    applied
        .events
        .iter()
        .find_map(|record| match &record.event {
            Event::PlacementRejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
}

/// Amount billed by `Billed` events of an applied entry.
pub fn billed_in(applied: &Applied) -> u64 {
    applied
        .events
        .iter()
        .map(|record| match record.event {
            Event::Billed { amount_micros, .. } => amount_micros,
            _ => 0,
        })
        .sum()
}

/// `floor(rate × duration / hour)`, the integral a meter owes.
pub fn owed(rate_micros_per_hour: u64, duration_ms: u64) -> u64 {
    (u128::from(rate_micros_per_hour) * u128::from(duration_ms) / u128::from(HOUR_MS)) as u64
}

// Rejection assertions: the variant and its key field.

#[track_caller]
pub fn expect_invalid(rejection: &Rejection, expected_field: &str) {
    match rejection {
        Rejection::InvalidArgument { field, .. } if field == expected_field => {}
        other => panic!("expected InvalidArgument on {expected_field}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_not_found(rejection: &Rejection, expected_kind: &str) {
    match rejection {
        Rejection::NotFound { kind, .. } if kind == expected_kind => {}
        other => panic!("expected NotFound of a {expected_kind}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_not_found_id(rejection: &Rejection, expected_kind: &str, expected_id: &str) {
    match rejection {
        Rejection::NotFound { kind, id } if kind == expected_kind && id == expected_id => {}
        other => panic!("expected NotFound of {expected_kind} {expected_id}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_denied(rejection: &Rejection) {
    assert!(
        matches!(rejection, Rejection::PermissionDenied { .. }),
        "expected PermissionDenied, got {rejection:?}"
    );
}

#[track_caller]
pub fn expect_exists(rejection: &Rejection, expected_kind: &str) {
    match rejection {
        Rejection::AlreadyExists { kind, .. } if kind == expected_kind => {}
        other => panic!("expected AlreadyExists of a {expected_kind}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_limit(rejection: &Rejection, expected_what: &str, expected_limit: u64) {
    match rejection {
        Rejection::LimitExceeded { what, limit }
            if what == expected_what && *limit == expected_limit => {}
        other => {
            panic!("expected LimitExceeded of {expected_what} at {expected_limit}, got {other:?}")
        }
    }
}

#[track_caller]
pub fn expect_state(
    rejection: &Rejection,
    expected_kind: &str,
    expected_state: &str,
    expected_operation: &str,
) {
    match rejection {
        Rejection::InvalidState {
            kind,
            state,
            operation,
            ..
        } if kind == expected_kind && state == expected_state && operation == expected_operation => {}
        other => panic!(
            "expected InvalidState of a {expected_kind} in {expected_state} for {expected_operation}, got {other:?}"
        ),
    }
}

#[track_caller]
pub fn expect_in_use(rejection: &Rejection, expected_kind: &str, by_contains: &str) {
    match rejection {
        Rejection::InUse { kind, by, .. } if kind == expected_kind && by.contains(by_contains) => {}
        other => panic!("expected InUse of a {expected_kind} by {by_contains}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_overlap(rejection: &Rejection, other_contains: &str) {
    match rejection {
        Rejection::Overlap { other, .. } if other.contains(other_contains) => {}
        other => panic!("expected Overlap with {other_contains}, got {other:?}"),
    }
}

//! The driver of state tests: a state plus the index and time of the next entry.

use crate::testing::{
    cpu_flavor, gpu_flavor, node_request, npu_flavor, placement_rejection, pool_create, START_MS,
    STEP_MS,
};
use crate::{Applied, Created, State};
use corral_model::command::{NodeRegister, PoolCreate, PoolKindRequest};
use corral_model::ids::{JobId, NetworkId, NodeId, PoolId, TenantId};
use corral_model::{
    BillingMode, Command, Credential, Entry, Job, JobSpec, JobState, Node, Placement, Pool,
    Principal, Rejection, ReplicaState, Resources,
};

/// The driver: a state plus the index and time of the next entry. Entries are stamped
/// `STEP_MS` apart and every apply is checked, unless the driver is built otherwise.
#[derive(Clone)]
pub struct Fx {
    pub state: State,
    next_index: u64,
    clock_ms: u64,
    step_ms: u64,
    checks: bool,
    /// The credential the next entry carries (`apply_with`).
    next_credential: Option<Credential>,
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
            step_ms: STEP_MS,
            next_credential: None,
            checks: true,
        }
    }

    /// Move the clock by `step_ms` after each entry (0: time moves only when a test
    /// says so, e.g. a plan applied right after it was computed sees the same `now`).
    pub fn with_step_ms(mut self, step_ms: u64) -> Fx {
        self.step_ms = step_ms;
        self
    }

    /// Check nothing on `apply` (and so on `ok`, `admin`, `submit`, ...): for setups
    /// of thousands of objects and for benchmarks. Call `check` where it matters.
    pub fn without_checks(mut self) -> Fx {
        self.checks = false;
        self
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

    /// The next entry: stamped with the next index and the clock, which then moves on.
    fn next_entry(&mut self, principal: Principal, command: Command) -> Entry {
        let entry = Entry {
            index: self.next_index,
            at_ms: self.clock_ms,
            principal,
            credential: self.next_credential.take(),
            command,
        };
        self.next_index += 1;
        self.clock_ms += self.step_ms;
        entry
    }

    /// Apply one entry; check every invariant afterwards and, when it was rejected,
    /// that nothing but the applied index changed (a driver built `without_checks`
    /// checks nothing).
    #[track_caller]
    pub fn apply(&mut self, principal: Principal, command: Command) -> Result<Applied, Rejection> {
        if !self.checks {
            return self.apply_plain(principal, command);
        }
        let result = self.apply_unchecked(principal, command);
        if let Err(violation) = self.state.check_invariants() {
            panic!("after {result:?}: {violation}");
        }
        result
    }

    /// `apply` of an entry that carries the token its principal was authenticated with.
    #[track_caller]
    pub fn apply_with(
        &mut self,
        principal: Principal,
        credential: Credential,
        command: Command,
    ) -> Result<Applied, Rejection> {
        self.next_credential = Some(credential);
        self.apply(principal, command)
    }

    /// Apply one entry and check nothing.
    pub fn apply_plain(
        &mut self,
        principal: Principal,
        command: Command,
    ) -> Result<Applied, Rejection> {
        let entry = self.next_entry(principal, command);
        self.state.apply(&entry)
    }

    /// Apply one entry with the rejection check but without the (whole-state)
    /// invariant check, for bulk setup; call `check` afterwards.
    #[track_caller]
    pub fn apply_unchecked(
        &mut self,
        principal: Principal,
        command: Command,
    ) -> Result<Applied, Rejection> {
        let entry = self.next_entry(principal, command);
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
        let name = command.name();
        match self.apply_plain(principal, command) {
            Ok(applied) => applied,
            Err(rejection) => panic!("{name} was rejected: {rejection}"),
        }
    }

    #[track_caller]
    pub fn check(&self) {
        if let Err(violation) = self.state.check_invariants() {
            panic!("{violation}");
        }
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
    /// A report by the agent of the node the command names, under its own identity.
    pub fn agent(&mut self, command: Command) -> Applied {
        let node = match &command {
            Command::ReplicaStarted { node, .. }
            | Command::ReplicaExited { node, .. }
            | Command::ReplicaLost { node, .. }
            | Command::NodeDriverReport { node, .. }
            | Command::NodeDriverUpgradeFailed { node, .. }
            | Command::NodeSetAgentAddress { node, .. }
            | Command::NodeRecovered { node } => *node,
            other => panic!("{} is not a node's report", other.name()),
        };
        self.ok(Principal::Node(node), command)
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
            max_active_jobs: None,
        });
        match applied.created {
            Some(Created::Tenant(id)) => id,
            other => panic!("tenant_create created {other:?}"),
        }
    }

    #[track_caller]
    pub fn register_node(&mut self, request: NodeRegister) -> NodeId {
        match self.admin(Command::NodeRegister(request)).created {
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
        self.agent(Command::ReplicaStarted {
            job,
            rank,
            node,
            master_port: None,
        })
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
            oom_killed: false,
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
                &crate::BillQuery {
                    tenant: Some(tenant),
                    from_ms: 0,
                    to_ms: None,
                },
            )
            .expect("admin may read bills")
            .lifetime_total_micros
    }
}

//! Property tests of the state machine: random command sequences (including stale and
//! conflicting plans, node loss, time jumps past prepaid expiry, driver upgrades that
//! isolate nodes, hot standbys and their promotion) keep every invariant;
//! a rejected command changes nothing; the same sequence gives the same digest twice;
//! snapshot, restore, then more commands gives the same digest as never
//! snapshotting; and the same writes grouped into log entries differently (group
//! commit) give the same outcomes and the same state but for the log indexes in it.
//!
//! The mix also creates, rotates and revokes tokens (tenant roles, platform tokens,
//! node bootstrap tokens and the node credentials they install) and sends writes that
//! carry credentials, live or dead, as their own principal or another; the driver keeps
//! its own record of every token it made and checks after each such write that no write
//! was accepted whose credential was revoked, expired, rotated out or standing for
//! another principal at that entry's index, and that every live one was not refused
//! as unauthenticated.

use corral_model::command::NodeRegister;
use corral_model::command::PoolKindRequest;
use corral_model::fit::fit;
use corral_model::ids::{JobId, NodeId, PoolId, TenantId, TokenId};
use corral_model::limits::{DAY_MS, DEFAULT_BOOTSTRAP_TTL_MS, DEFAULT_TOKEN_TTL_MS, HOUR_MS};
use corral_model::pool::UpgradeMode;
use corral_model::{
    BillingMode, Command, Credential, DriverSpec, JobKind, JobSpec, JobType, Placement, Principal,
    Rejection, ReplicaState, Resources, Taint, TaintEffect, TenantRole, TokenScope, WorkflowSpec,
    WorkflowStep,
};
use corral_state::testing::{
    cpu_flavor, gpu_flavor, node_request, pool_create, Fx, CPU, GPU, START_MS, ZONE,
};
use corral_state::{Created, RequestId, State, Write};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The driver stamps entries this far apart (the first at `START_MS + ENTRY_STEP_MS`).
const ENTRY_STEP_MS: u64 = 7;

/// The kit's driver, remembering a plan to apply later and every command applied.
struct Driver {
    fx: Fx,
    saved_plan: Option<(PoolId, Vec<Placement>)>,
    /// Every command applied, in order, with the credential it carried, to replay
    /// grouped differently.
    log: Vec<(Principal, Option<Credential>, Command)>,
    /// Every token the sequence made, as the test itself understands it.
    tokens: Vec<TokenModel>,
    /// Secrets (hashes) are never repeated.
    next_secret: u32,
    /// Writes under a credential: accepted, and refused as unauthenticated.
    credentialed_accepted: u32,
    credentialed_unauthenticated: u32,
}

/// What the test knows of a token it made, kept apart from the state's own tables: it
/// stands for `principal`, dies at `expires_at_ms`, accepts `generation` and, until
/// `previous_until_ms`, the generation before; revoked (or used up) is for ever.
#[derive(Clone, Debug)]
struct TokenModel {
    name: String,
    id: TokenId,
    principal: Principal,
    expires_at_ms: Option<u64>,
    generation: u32,
    previous_until_ms: Option<u64>,
    revoked: bool,
    bootstrap_uses: Option<u32>,
}

impl TokenModel {
    fn stands_at(&self, generation: u32, at_ms: u64) -> bool {
        let unexpired = self.expires_at_ms.is_none_or(|expires| at_ms < expires);
        let current = generation == self.generation;
        let in_grace = generation + 1 == self.generation
            && self.previous_until_ms.is_some_and(|until| at_ms < until);
        !self.revoked && unexpired && (current || in_grace)
    }
}

impl std::ops::Deref for Driver {
    type Target = Fx;
    fn deref(&self) -> &Fx {
        &self.fx
    }
}

impl std::ops::DerefMut for Driver {
    fn deref_mut(&mut self) -> &mut Fx {
        &mut self.fx
    }
}

impl Driver {
    fn new() -> Driver {
        let mut fx = Fx::new().with_step_ms(ENTRY_STEP_MS);
        fx.set_clock(START_MS + ENTRY_STEP_MS);
        Driver {
            fx,
            saved_plan: None,
            log: Vec::new(),
            tokens: Vec::new(),
            next_secret: 0,
            credentialed_accepted: 0,
            credentialed_unauthenticated: 0,
        }
    }

    /// Apply one entry (invariants and rejections checked by the kit): whether it was
    /// accepted.
    fn apply(&mut self, principal: Principal, command: Command) -> bool {
        self.log.push((principal.clone(), None, command.clone()));
        self.fx.apply(principal, command).is_ok()
    }

    /// Apply one entry carrying `credential`, and check the outcome against the test's
    /// own record of the token: accepted only if the credential stands at the entry's
    /// time for this principal; a standing credential is never refused as
    /// unauthenticated, and a dead one is refused as unauthenticated (or, for a
    /// read-only principal, as denied before its credential is looked at).
    fn apply_credentialed(
        &mut self,
        principal: Principal,
        credential: Credential,
        command: Command,
    ) -> Result<corral_state::Applied, Rejection> {
        self.log
            .push((principal.clone(), Some(credential), command.clone()));
        let at_ms = self.fx.clock().max(self.fx.state.now_ms());
        let index = self.fx.next_index();
        let stands = self.tokens.iter().any(|token| {
            token.id == credential.token
                && token.principal == principal
                && token.stands_at(credential.generation, at_ms)
        });
        let read_only = principal.is_read_only();
        let name = command.name();
        let result = self.fx.apply_with(principal, credential, command);
        match &result {
            Ok(_) => {
                assert!(
                    stands,
                    "{name} at index {index} was accepted under a dead credential {credential:?}"
                );
                self.credentialed_accepted += 1;
            }
            Err(Rejection::Unauthenticated { .. }) => {
                assert!(
                    !stands,
                    "{name} at index {index} was refused a standing credential {credential:?}"
                );
                self.credentialed_unauthenticated += 1;
            }
            Err(rejection) => assert!(
                stands || read_only,
                "{name} at index {index} under a dead credential was refused otherwise: {rejection}"
            ),
        }
        result
    }

    fn new_secret(&mut self) -> String {
        self.next_secret += 1;
        format!("secret-{}", self.next_secret)
    }

    /// Record a token the state just made.
    fn record_token(
        &mut self,
        name: &str,
        expires_at_ms: Option<u64>,
        bootstrap_uses: Option<u32>,
    ) {
        let token = self.fx.state.token(name).expect("the token was just made");
        self.tokens.push(TokenModel {
            name: name.to_string(),
            id: token.id,
            principal: token.scope.principal(),
            expires_at_ms,
            generation: 0,
            previous_until_ms: None,
            revoked: false,
            bootstrap_uses,
        });
    }

    /// A token the test made (live or not), and a tenant admin credential of the same
    /// tenant when `by_tenant_admin` asks for one and there is one.
    fn pick_token(&self, choice: u16) -> Option<TokenModel> {
        pick(&self.tokens.iter().collect::<Vec<_>>(), usize::from(choice)).cloned()
    }

    fn tenant_admin_of(&self, tenant: TenantId, choice: u16) -> Option<(Principal, Credential)> {
        let admins: Vec<&TokenModel> = self
            .tokens
            .iter()
            .filter(|token| token.principal == Principal::TenantAdmin(tenant))
            .collect();
        pick(&admins, usize::from(choice)).map(|token| {
            (
                token.principal.clone(),
                Credential {
                    token: token.id,
                    generation: token.generation,
                },
            )
        })
    }

    /// Manage a token as the platform admin, or under a tenant admin's credential.
    fn manage(&mut self, manager: Option<(Principal, Credential)>, command: Command) -> bool {
        match manager {
            Some((principal, credential)) => self
                .apply_credentialed(principal, credential, command)
                .is_ok(),
            None => self.apply(Principal::PlatformAdmin, command),
        }
    }

    fn admin(&mut self, command: Command) {
        assert!(
            self.apply(Principal::PlatformAdmin, command),
            "setup command failed"
        );
    }

    /// The time of the last entry applied.
    fn last_entry_ms(&self) -> u64 {
        self.fx.clock() - ENTRY_STEP_MS
    }
}

fn quota(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: 400_000,
        memory_mib: 4 * 1024 * 1024,
        accelerators,
        disk_gib: 100_000,
        bandwidth_mbps: 1_000_000,
    }
}

fn pool_request(
    name: &str,
    kind: PoolKindRequest,
    network: Option<corral_model::NetworkId>,
    gpu_nodes: u32,
    cpu_nodes: u32,
    billing: BillingMode,
) -> Command {
    let mut flavors = vec![(GPU, gpu_nodes)];
    if cpu_nodes > 0 {
        flavors.push((CPU, cpu_nodes));
    }
    Command::PoolCreate(pool_create(name, kind, network, &flavors, billing))
}

/// Three tenants, 16 GPU and 6 CPU nodes, a public pool, a pay-per-use dedicated pool
/// of tenant 1 and a prepaid dedicated pool of tenant 2; a few nodes stay free.
fn cluster() -> Driver {
    let mut driver = Driver::new();
    driver.admin(Command::FlavorDefine(gpu_flavor()));
    driver.admin(Command::FlavorDefine(cpu_flavor()));
    for (name, accelerators, high) in [
        ("alpha", 32, true),
        ("beta", 24, false),
        ("gamma", 16, false),
    ] {
        driver.admin(Command::TenantCreate {
            name: name.into(),
            quota: quota(accelerators),
            may_use_high_priority: high,
            max_active_jobs: None,
        });
    }
    for index in 0..22 {
        let flavor = if index < 16 { GPU } else { CPU };
        let mut request = node_request(&format!("host-{index}"), flavor, ZONE);
        if index % 3 == 0 {
            request.labels = [("rack".to_string(), "r1".to_string())].into();
        }
        assert!(driver.apply(Principal::PlatformAdmin, Command::NodeRegister(request)));
    }
    driver.admin(Command::NetworkCreate {
        tenant: TenantId(1),
        name: "net-a".into(),
        cidr: "192.168.0.0/24".into(),
    });
    driver.admin(Command::NetworkCreate {
        tenant: TenantId(2),
        name: "net-b".into(),
        cidr: "172.16.0.0/16".into(),
    });
    driver.admin(pool_request(
        "public",
        PoolKindRequest::Public,
        None,
        8,
        3,
        BillingMode::PayPerUse,
    ));
    driver.admin(pool_request(
        "alpha-pool",
        PoolKindRequest::Dedicated { owner: TenantId(1) },
        Some(corral_model::NetworkId(1)),
        4,
        1,
        BillingMode::PayPerUse,
    ));
    driver.admin(pool_request(
        "beta-pool",
        PoolKindRequest::Dedicated { owner: TenantId(2) },
        Some(corral_model::NetworkId(2)),
        2,
        0,
        BillingMode::Prepaid {
            period_months: 1,
            auto_renew: false,
        },
    ));
    driver
}

#[derive(Clone, Debug)]
enum Operation {
    Submit {
        tenant: u8,
        pool: u8,
        kind: u8,
        replicas: u8,
        accelerators: u8,
        priority: u8,
        max_runtime_hours: Option<u8>,
        rack: bool,
    },
    SubmitWorkflow {
        tenant: u8,
        steps: u8,
    },
    PlanGreedy {
        pool: u8,
    },
    SavePlan {
        pool: u8,
    },
    ApplySavedPlan,
    PlanRandom {
        job: u16,
        node: u16,
        rank: u8,
    },
    Started {
        job: u16,
        rank: u8,
    },
    Exited {
        job: u16,
        rank: u8,
        code: i8,
    },
    StaleReport {
        job: u16,
        node: u16,
    },
    NodeLost {
        node: u16,
    },
    /// A rack: `count` consecutive nodes from `first`, lost in one entry.
    NodesLost {
        first: u16,
        count: u8,
    },
    /// The agent found a replica's process gone (an agent or machine restart).
    ReplicaLost {
        job: u16,
        rank: u8,
    },
    NodeRecovered {
        node: u16,
    },
    Tick {
        advance_minutes: u16,
    },
    JumpDays {
        days: u8,
    },
    Terminate {
        job: u16,
        as_other_tenant: bool,
    },
    Stop {
        job: u16,
    },
    Start {
        job: u16,
    },
    ChangePriority {
        job: u16,
        priority: u8,
    },
    Scale {
        pool: u8,
        nodes: u8,
    },
    Drain {
        node: u16,
        deadline_minutes: Option<u8>,
    },
    Cordon {
        node: u16,
        on: bool,
    },
    Lock {
        node: u16,
        on: bool,
    },
    NoExecuteTaint {
        node: u16,
    },
    SetJobTypes {
        pool: u8,
        mask: u8,
    },
    DeletePool {
        pool: u8,
        force: bool,
    },
    Renew {
        periods: u8,
    },
    SetQuota {
        tenant: u8,
        accelerators: u8,
    },
    RequestUpgrade {
        pool: u8,
        version: u8,
        forcible: bool,
        batch: u8,
    },
    UpgradeBegin {
        node: u16,
    },
    DriverReport {
        node: u16,
        version: u8,
        isolated_first: bool,
    },
    SetStandby {
        node: u16,
        on: bool,
        as_admin: bool,
    },
    SetAgentAddress {
        node: u16,
        port: u8,
    },
    /// `role`: 0-2 a tenant admin, operator or viewer; 3 platform admin, 4 auditor,
    /// 5 a bootstrap token of one or two uses.
    CreateToken {
        tenant: u8,
        role: u8,
        ttl_minutes: Option<u16>,
        by_tenant_admin: Option<u16>,
    },
    RotateToken {
        token: u16,
        grace_minutes: u8,
        by_tenant_admin: Option<u16>,
    },
    RevokeToken {
        token: u16,
        by_tenant_admin: Option<u16>,
    },
    /// A write under a token's credential (the previous generation's when `stale`), as
    /// the token's own principal or, when `as_other`, as another.
    WriteWithToken {
        token: u16,
        stale: bool,
        as_other: bool,
        choice: u8,
    },
}

/// Driver versions the generator reports and asks for: the one nodes register with and
/// two upgrade targets.
const DRIVER_VERSIONS: [&str; 3] = ["535.1", "550.2", "560.0"];

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0u8..3, 0u8..3, 0u8..3, 1u8..5, 0u8..9, 1u8..4, proptest::option::of(1u8..6), any::<bool>()).prop_map(
            |(tenant, pool, kind, replicas, accelerators, priority, max_runtime_hours, rack)| Operation::Submit {
                tenant, pool, kind, replicas, accelerators, priority, max_runtime_hours, rack
            }
        ),
        1 => (0u8..3, 1u8..4).prop_map(|(tenant, steps)| Operation::SubmitWorkflow { tenant, steps }),
        6 => (0u8..3).prop_map(|pool| Operation::PlanGreedy { pool }),
        2 => (0u8..3).prop_map(|pool| Operation::SavePlan { pool }),
        2 => Just(Operation::ApplySavedPlan),
        1 => (any::<u16>(), any::<u16>(), 0u8..4).prop_map(|(job, node, rank)| Operation::PlanRandom { job, node, rank }),
        6 => (any::<u16>(), any::<u8>()).prop_map(|(job, rank)| Operation::Started { job, rank }),
        4 => (any::<u16>(), any::<u8>(), -1i8..2).prop_map(|(job, rank, code)| Operation::Exited { job, rank, code }),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(job, node)| Operation::StaleReport { job, node }),
        2 => any::<u16>().prop_map(|node| Operation::NodeLost { node }),
        1 => (any::<u16>(), 1u8..6).prop_map(|(first, count)| Operation::NodesLost { first, count }),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(job, rank)| Operation::ReplicaLost { job, rank }),
        2 => any::<u16>().prop_map(|node| Operation::NodeRecovered { node }),
        3 => (1u16..600).prop_map(|advance_minutes| Operation::Tick { advance_minutes }),
        1 => (1u8..20).prop_map(|days| Operation::JumpDays { days }),
        2 => (any::<u16>(), any::<bool>()).prop_map(|(job, as_other_tenant)| Operation::Terminate { job, as_other_tenant }),
        1 => any::<u16>().prop_map(|job| Operation::Stop { job }),
        1 => any::<u16>().prop_map(|job| Operation::Start { job }),
        1 => (any::<u16>(), 1u8..4).prop_map(|(job, priority)| Operation::ChangePriority { job, priority }),
        1 => (0u8..3, 0u8..6).prop_map(|(pool, nodes)| Operation::Scale { pool, nodes }),
        1 => (any::<u16>(), proptest::option::of(0u8..60)).prop_map(|(node, deadline_minutes)| Operation::Drain { node, deadline_minutes }),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(node, on)| Operation::Cordon { node, on }),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(node, on)| Operation::Lock { node, on }),
        1 => any::<u16>().prop_map(|node| Operation::NoExecuteTaint { node }),
        1 => (0u8..3, 1u8..8).prop_map(|(pool, mask)| Operation::SetJobTypes { pool, mask }),
        1 => (0u8..3, any::<bool>()).prop_map(|(pool, force)| Operation::DeletePool { pool, force }),
        1 => (1u8..3).prop_map(|periods| Operation::Renew { periods }),
        1 => (0u8..3, 0u8..40).prop_map(|(tenant, accelerators)| Operation::SetQuota { tenant, accelerators }),
        1 => (0u8..3, 1u8..3, any::<bool>(), 0u8..5).prop_map(|(pool, version, forcible, batch)| Operation::RequestUpgrade { pool, version, forcible, batch }),
        3 => any::<u16>().prop_map(|node| Operation::UpgradeBegin { node }),
        3 => (any::<u16>(), 0u8..3, any::<bool>()).prop_map(|(node, version, isolated_first)| Operation::DriverReport { node, version, isolated_first }),
        2 => (any::<u16>(), any::<bool>(), any::<bool>()).prop_map(|(node, on, as_admin)| Operation::SetStandby { node, on, as_admin }),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(node, port)| Operation::SetAgentAddress { node, port }),
        2 => (0u8..3, 0u8..6, proptest::option::of(1u16..600), proptest::option::of(any::<u16>())).prop_map(
            |(tenant, role, ttl_minutes, by_tenant_admin)| Operation::CreateToken { tenant, role, ttl_minutes, by_tenant_admin }
        ),
        1 => (any::<u16>(), 0u8..120, proptest::option::of(any::<u16>())).prop_map(
            |(token, grace_minutes, by_tenant_admin)| Operation::RotateToken { token, grace_minutes, by_tenant_admin }
        ),
        1 => (any::<u16>(), proptest::option::of(any::<u16>())).prop_map(|(token, by_tenant_admin)| Operation::RevokeToken { token, by_tenant_admin }),
        4 => (any::<u16>(), any::<bool>(), prop::bool::weighted(0.15), any::<u8>()).prop_map(
            |(token, stale, as_other, choice)| Operation::WriteWithToken { token, stale, as_other, choice }
        ),
    ]
}

fn pick<T: Copy>(items: &[T], choice: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[choice % items.len()])
}

fn job_spec(
    pool: PoolId,
    kind: u8,
    replicas: u8,
    accelerators: u8,
    priority: u8,
    max_runtime_hours: Option<u8>,
    rack: bool,
) -> JobSpec {
    let kind = match kind {
        0 => JobKind::Training { retry_limit: 2 },
        1 => JobKind::Inference,
        _ => JobKind::Notebook {
            auto_stop_after_ms: Some(3 * HOUR_MS),
        },
    };
    let replicas = if matches!(kind, JobKind::Notebook { .. }) {
        1
    } else {
        u32::from(replicas)
    };
    JobSpec {
        name: "job".into(),
        pool,
        kind,
        replicas,
        per_replica: Resources {
            cpu_millicores: 4_000,
            memory_mib: 16_384,
            accelerators: u32::from(accelerators),
            disk_gib: 50,
            bandwidth_mbps: 1_000,
        },
        accelerator_type: (accelerators > 0).then(|| "nvidia-a100".to_string()),
        priority,
        command: vec!["python".into(), "train.py".into()],
        environment: BTreeMap::new(),
        secret_environment: BTreeMap::new(),
        node_selector: if rack {
            [("rack".to_string(), "r1".to_string())].into()
        } else {
            BTreeMap::new()
        },
        tolerations: vec![],
        max_runtime_ms: max_runtime_hours.map(|hours| u64::from(hours) * HOUR_MS),
        queue: None,
    }
}

/// A first-fit plan using the shared fit function, as a stand-in scheduler.
fn greedy_plan(state: &State, pool: PoolId) -> Vec<Placement> {
    let mut taken: BTreeMap<NodeId, Resources> = BTreeMap::new();
    let nodes: Vec<_> = state.pool_nodes(pool).collect();
    let mut placements = Vec::new();
    let queued: Vec<JobId> = state.queue(pool).map(|key| key.job).collect();
    for job_id in queued {
        let job = state.job(job_id).expect("queued job exists");
        let mut tentative = taken.clone();
        let mut assignments = Vec::new();
        for replica in job
            .replicas
            .iter()
            .filter(|replica| replica.state == ReplicaState::Unplaced)
        {
            let chosen = nodes.iter().find(|node| {
                let used = tentative.get(&node.id).copied().unwrap_or(Resources::ZERO);
                let free = node.free().checked_sub(&used).unwrap_or(Resources::ZERO);
                fit(node, &free, &job.spec).is_ok()
            });
            match chosen {
                Some(node) => {
                    let used = tentative.entry(node.id).or_insert(Resources::ZERO);
                    *used = used.saturating_add(&job.spec.per_replica);
                    assignments.push((replica.rank, node.id));
                }
                None if job.spec.kind.is_gang() => {
                    assignments.clear();
                    break;
                }
                None => {}
            }
        }
        if !assignments.is_empty() {
            taken = tentative;
            placements.push(Placement {
                job: job_id,
                assignments,
            });
        }
    }
    placements
}

impl Driver {
    fn pools(&self) -> Vec<PoolId> {
        self.state.pools().map(|pool| pool.id).collect()
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.state.nodes().map(|node| node.id).collect()
    }

    fn job_ids(&self) -> Vec<JobId> {
        self.state.jobs().map(|job| job.id).collect()
    }

    /// Nodes matching `wanted`, or every node when none does, so that operations aimed
    /// at a kind of node (upgrading, in a dedicated pool) mostly hit one.
    fn node_ids_preferring(&self, wanted: impl Fn(&corral_model::Node) -> bool) -> Vec<NodeId> {
        let preferred: Vec<NodeId> = self
            .state
            .nodes()
            .filter(|node| wanted(node))
            .map(|node| node.id)
            .collect();
        if preferred.is_empty() {
            self.node_ids()
        } else {
            preferred
        }
    }

    fn owner_principal(&self, job: JobId) -> Principal {
        Principal::TenantUser(self.state.job(job).map_or(TenantId(1), |job| job.tenant))
    }

    fn pool_principal(&self, pool: PoolId) -> Principal {
        match self.state.pool(pool).and_then(|pool| pool.owner()) {
            Some(owner) => Principal::TenantUser(owner),
            None => Principal::PlatformAdmin,
        }
    }

    fn run(&mut self, operation: &Operation) {
        match operation.clone() {
            Operation::Submit {
                tenant,
                pool,
                kind,
                replicas,
                accelerators,
                priority,
                max_runtime_hours,
                rack,
            } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                let spec = job_spec(
                    pool,
                    kind,
                    replicas,
                    accelerators,
                    priority,
                    max_runtime_hours,
                    rack,
                );
                self.apply(
                    Principal::TenantUser(TenantId(u64::from(tenant) + 1)),
                    Command::JobSubmit(spec),
                );
            }
            Operation::SubmitWorkflow { tenant, steps } => {
                let Some(public) = self.state.public_pool() else {
                    return;
                };
                let steps = (0..steps)
                    .map(|index| WorkflowStep {
                        name: format!("step-{index}"),
                        depends_on: if index == 0 {
                            vec![]
                        } else {
                            vec![usize::from(index) - 1]
                        },
                        spec: job_spec(public, 0, 1, 1, 1, Some(2), false),
                        use_public_pool: true,
                    })
                    .collect();
                let mut spec = job_spec(public, 0, 1, 0, 1, None, false);
                spec.name = "flow".into();
                spec.kind = JobKind::Workflow(WorkflowSpec { steps });
                self.apply(
                    Principal::TenantUser(TenantId(u64::from(tenant) + 1)),
                    Command::JobSubmit(spec),
                );
            }
            Operation::PlanGreedy { pool } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                let placements = greedy_plan(&self.state, pool);
                self.apply(
                    Principal::System,
                    Command::SchedulerPlan { pool, placements },
                );
            }
            Operation::SavePlan { pool } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                self.saved_plan = Some((pool, greedy_plan(&self.state, pool)));
            }
            Operation::ApplySavedPlan => {
                if let Some((pool, placements)) = self.saved_plan.take() {
                    self.apply(
                        Principal::System,
                        Command::SchedulerPlan { pool, placements },
                    );
                }
            }
            Operation::PlanRandom { job, node, rank } => {
                let (Some(job), Some(node)) = (
                    pick(&self.job_ids(), job as usize),
                    pick(&self.node_ids(), node as usize),
                ) else {
                    return;
                };
                let pool = self
                    .state
                    .job(job)
                    .map(|job| job.spec.pool)
                    .unwrap_or(PoolId(1));
                let placements = vec![Placement {
                    job,
                    assignments: vec![(u32::from(rank), node)],
                }];
                self.apply(
                    Principal::System,
                    Command::SchedulerPlan { pool, placements },
                );
            }
            Operation::Started { job, rank } | Operation::Exited { job, rank, .. } => {
                let placed: Vec<(JobId, u32, NodeId)> = self
                    .state
                    .jobs()
                    .flat_map(|job| {
                        job.placed_replicas().map(move |replica| {
                            (job.id, replica.rank, replica.node.expect("placed"))
                        })
                    })
                    .collect();
                let Some((job_id, rank_id, node)) =
                    pick(&placed, usize::from(job) + usize::from(rank))
                else {
                    return;
                };
                let command = match operation {
                    Operation::Exited { code, .. } => Command::ReplicaExited {
                        job: job_id,
                        rank: rank_id,
                        node,
                        exit_code: i32::from(*code),
                        oom_killed: false,
                    },
                    _ => Command::ReplicaStarted {
                        job: job_id,
                        rank: rank_id,
                        node,
                        master_port: None,
                    },
                };
                self.apply(Principal::Node(node), command);
            }
            Operation::StaleReport { job, node } => {
                let (Some(job), Some(node)) = (
                    pick(&self.job_ids(), job as usize),
                    pick(&self.node_ids(), node as usize),
                ) else {
                    return;
                };
                self.apply(
                    Principal::Node(node),
                    Command::ReplicaExited {
                        job,
                        rank: 0,
                        node,
                        exit_code: 1,
                        oom_killed: false,
                    },
                );
            }
            Operation::NodeLost { node } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                self.apply(Principal::System, Command::NodeLost { node });
            }
            Operation::NodesLost { first, count } => {
                let ids = self.node_ids();
                if ids.is_empty() {
                    return;
                }
                let nodes: Vec<NodeId> = (0..usize::from(count).min(ids.len()))
                    .map(|offset| ids[(first as usize + offset) % ids.len()])
                    .collect();
                self.apply(Principal::System, Command::NodesLost { nodes });
            }
            Operation::ReplicaLost { job, rank } => {
                let Some(job) = pick(&self.job_ids(), job as usize) else {
                    return;
                };
                let Some(replica) = self.state.job(job).and_then(|job| {
                    let placed: Vec<_> = job.placed_replicas().collect();
                    pick(&placed, rank as usize).copied()
                }) else {
                    return;
                };
                let Some(node) = replica.node else {
                    return;
                };
                self.apply(
                    Principal::Node(node),
                    Command::ReplicaLost {
                        job,
                        rank: replica.rank,
                        node,
                    },
                );
            }
            Operation::NodeRecovered { node } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                self.apply(Principal::Node(node), Command::NodeRecovered { node });
            }
            Operation::Tick { advance_minutes } => {
                self.advance(u64::from(advance_minutes) * 60_000);
                self.apply(Principal::System, Command::MeterTick);
            }
            Operation::JumpDays { days } => {
                self.advance(u64::from(days) * DAY_MS);
                self.apply(Principal::System, Command::MeterTick);
            }
            Operation::Terminate {
                job,
                as_other_tenant,
            } => {
                let Some(job) = pick(&self.job_ids(), job as usize) else {
                    return;
                };
                let principal = match (as_other_tenant, self.owner_principal(job)) {
                    (true, Principal::TenantUser(TenantId(id))) => {
                        Principal::TenantUser(TenantId(id % 3 + 1))
                    }
                    (_, principal) => principal,
                };
                self.apply(principal, Command::JobTerminate { job });
            }
            Operation::Stop { job } => {
                let Some(job) = pick(&self.job_ids(), job as usize) else {
                    return;
                };
                self.apply(self.owner_principal(job), Command::JobStop { job });
            }
            Operation::Start { job } => {
                let Some(job) = pick(&self.job_ids(), job as usize) else {
                    return;
                };
                self.apply(self.owner_principal(job), Command::JobStart { job });
            }
            Operation::ChangePriority { job, priority } => {
                let Some(job) = pick(&self.job_ids(), job as usize) else {
                    return;
                };
                self.apply(
                    self.owner_principal(job),
                    Command::JobChangePriority { job, priority },
                );
            }
            Operation::Scale { pool, nodes } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                let command = Command::PoolScale {
                    pool,
                    flavor: GPU.into(),
                    zone: ZONE.into(),
                    node_count: u32::from(nodes),
                };
                self.apply(self.pool_principal(pool), command);
            }
            Operation::Drain {
                node,
                deadline_minutes,
            } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                let deadline_ms = deadline_minutes
                    .map(|minutes| self.last_entry_ms() + 10 + u64::from(minutes) * 60_000);
                self.apply(
                    Principal::PlatformAdmin,
                    Command::NodeDrain { node, deadline_ms },
                );
            }
            Operation::Cordon { node, on } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                let command = if on {
                    Command::NodeCordon { node }
                } else {
                    Command::NodeUncordon { node }
                };
                self.apply(Principal::PlatformAdmin, command);
            }
            Operation::Lock { node, on } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                self.apply(
                    Principal::PlatformAdmin,
                    Command::NodeSetDeletionLock { node, locked: on },
                );
            }
            Operation::NoExecuteTaint { node } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                let taints = vec![Taint {
                    key: "fault".into(),
                    value: "xid-79".into(),
                    effect: TaintEffect::NoExecute,
                }];
                self.apply(
                    Principal::PlatformAdmin,
                    Command::NodeSetTaints { node, taints },
                );
            }
            Operation::SetJobTypes { pool, mask } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                let all = [JobType::Training, JobType::Inference, JobType::Notebook];
                let job_types: BTreeSet<JobType> = all
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, job_type)| *job_type)
                    .collect();
                self.apply(
                    self.pool_principal(pool),
                    Command::PoolSetJobTypes { pool, job_types },
                );
            }
            Operation::DeletePool { pool, force } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                self.apply(
                    self.pool_principal(pool),
                    Command::PoolDelete { pool, force },
                );
            }
            Operation::Renew { periods } => {
                let prepaid: Vec<PoolId> = self
                    .state
                    .pools()
                    .filter(|pool| matches!(pool.billing, BillingMode::Prepaid { .. }))
                    .map(|pool| pool.id)
                    .collect();
                let Some(pool) = pick(&prepaid, 0) else {
                    return;
                };
                self.apply(
                    self.pool_principal(pool),
                    Command::PoolRenew {
                        pool,
                        periods: u32::from(periods),
                    },
                );
            }
            Operation::SetQuota {
                tenant,
                accelerators,
            } => {
                let tenant = TenantId(u64::from(tenant) + 1);
                self.apply(
                    Principal::PlatformAdmin,
                    Command::TenantSetQuota {
                        tenant,
                        quota: quota(u32::from(accelerators)),
                    },
                );
            }
            Operation::RequestUpgrade {
                pool,
                version,
                forcible,
                batch,
            } => {
                let Some(pool) = pick(&self.pools(), pool as usize) else {
                    return;
                };
                let mode = if forcible {
                    UpgradeMode::Forcible
                } else {
                    UpgradeMode::Secure
                };
                let command = Command::PoolRequestDriverUpgrade {
                    pool,
                    target: DriverSpec {
                        gpu_driver_version: Some(DRIVER_VERSIONS[version as usize].into()),
                        npu_driver_version: None,
                    },
                    mode,
                    batch_size: u32::from(batch),
                };
                self.apply(self.pool_principal(pool), command);
            }
            Operation::UpgradeBegin { node } => {
                let upgrading_pool = |candidate: &corral_model::Node| {
                    candidate
                        .pool
                        .and_then(|pool| self.state.pool(pool))
                        .is_some_and(|pool| pool.pending_upgrade.is_some())
                };
                let Some(node) = pick(&self.node_ids_preferring(upgrading_pool), node as usize)
                else {
                    return;
                };
                self.apply(Principal::System, Command::NodeUpgradeBegin { node });
            }
            Operation::DriverReport {
                node,
                version,
                isolated_first,
            } => {
                let candidates = if isolated_first {
                    self.node_ids_preferring(|candidate| candidate.upgrading.is_some())
                } else {
                    self.node_ids()
                };
                let Some(node) = pick(&candidates, node as usize) else {
                    return;
                };
                self.apply(
                    Principal::Node(node),
                    Command::NodeDriverReport {
                        node,
                        gpu_driver_version: Some(DRIVER_VERSIONS[version as usize].into()),
                        npu_driver_version: None,
                    },
                );
            }
            Operation::SetStandby { node, on, as_admin } => {
                let dedicated = |candidate: &corral_model::Node| {
                    candidate
                        .pool
                        .and_then(|pool| self.state.pool(pool))
                        .is_some_and(|pool| !pool.is_public())
                };
                let Some(node) = pick(&self.node_ids_preferring(dedicated), node as usize) else {
                    return;
                };
                let principal = match self.state.node(node).and_then(|node| node.pool) {
                    Some(pool) if !as_admin => self.pool_principal(pool),
                    _ => Principal::PlatformAdmin,
                };
                self.apply(principal, Command::NodeSetStandby { node, standby: on });
            }
            Operation::SetAgentAddress { node, port } => {
                let Some(node) = pick(&self.node_ids(), node as usize) else {
                    return;
                };
                let address = format!("10.0.0.{}:{}", node.0 % 250, 7000 + u16::from(port % 3));
                self.apply(
                    Principal::Node(node),
                    Command::NodeSetAgentAddress {
                        node,
                        address,
                        isolation: None,
                    },
                );
            }
            Operation::CreateToken {
                tenant,
                role,
                ttl_minutes,
                by_tenant_admin,
            } => {
                let tenant = TenantId(u64::from(tenant) + 1);
                let scope = match role {
                    0 => TokenScope::Tenant {
                        tenant,
                        role: TenantRole::Admin,
                    },
                    1 => TokenScope::Tenant {
                        tenant,
                        role: TenantRole::Operator,
                    },
                    2 => TokenScope::Tenant {
                        tenant,
                        role: TenantRole::Viewer,
                    },
                    3 => TokenScope::PlatformAdmin,
                    4 => TokenScope::PlatformAuditor,
                    _ => TokenScope::Bootstrap {
                        uses_left: u32::from(tenant.0.is_multiple_of(2)) + 1,
                    },
                };
                let ttl_ms = ttl_minutes.map(|minutes| u64::from(minutes) * 60_000);
                let at_ms = self.fx.clock().max(self.fx.state.now_ms());
                // The lifetimes the issue asks for, computed here independently.
                let (expires_at_ms, bootstrap_uses) = match &scope {
                    TokenScope::Tenant { .. } => {
                        (Some(at_ms + ttl_ms.unwrap_or(DEFAULT_TOKEN_TTL_MS)), None)
                    }
                    TokenScope::Bootstrap { uses_left } => (
                        Some(at_ms + ttl_ms.unwrap_or(DEFAULT_BOOTSTRAP_TTL_MS)),
                        Some(*uses_left),
                    ),
                    _ => (ttl_ms.map(|ttl| at_ms + ttl), None),
                };
                let manager = match (by_tenant_admin, scope.tenant()) {
                    (Some(choice), Some(tenant)) => self.tenant_admin_of(tenant, choice),
                    _ => None,
                };
                let name = format!("token-{}", self.tokens.len());
                let hash = self.new_secret();
                let command = Command::TokenCreate {
                    name: name.clone(),
                    hash,
                    scope,
                    ttl_ms,
                };
                if self.manage(manager, command) {
                    self.record_token(&name, expires_at_ms, bootstrap_uses);
                }
            }
            Operation::RotateToken {
                token,
                grace_minutes,
                by_tenant_admin,
            } => {
                let Some(model) = self.pick_token(token) else {
                    return;
                };
                let manager = match (by_tenant_admin, model.principal.tenant()) {
                    (Some(choice), Some(tenant)) => self.tenant_admin_of(tenant, choice),
                    _ => None,
                };
                let grace_ms = u64::from(grace_minutes) * 60_000;
                let at_ms = self.fx.clock().max(self.fx.state.now_ms());
                let hash = self.new_secret();
                // Names of node credentials come back on a rebind: the state acts on
                // the token the name has now.
                let live = self.state.token(&model.name).map(|token| token.id);
                let command = Command::TokenRotate {
                    name: model.name.clone(),
                    hash,
                    grace_ms,
                };
                if self.manage(manager, command) {
                    let model = self
                        .tokens
                        .iter_mut()
                        .find(|token| Some(token.id) == live)
                        .expect("recorded");
                    assert!(!model.revoked, "a revoked token was rotated");
                    model.generation += 1;
                    model.previous_until_ms = (grace_ms > 0).then_some(at_ms + grace_ms);
                }
            }
            Operation::RevokeToken {
                token,
                by_tenant_admin,
            } => {
                let Some(model) = self.pick_token(token) else {
                    return;
                };
                let manager = match (by_tenant_admin, model.principal.tenant()) {
                    (Some(choice), Some(tenant)) => self.tenant_admin_of(tenant, choice),
                    _ => None,
                };
                let live = self.state.token(&model.name).map(|token| token.id);
                let command = Command::TokenRevoke {
                    name: model.name.clone(),
                };
                if self.manage(manager, command) {
                    for token in &mut self.tokens {
                        if Some(token.id) == live {
                            assert!(!token.revoked, "a token was revoked twice");
                            token.revoked = true;
                        }
                    }
                }
            }
            Operation::WriteWithToken {
                token,
                stale,
                as_other,
                choice,
            } => {
                let Some(model) = self.pick_token(token) else {
                    return;
                };
                let credential = Credential {
                    token: model.id,
                    generation: if stale {
                        model.generation.saturating_sub(1)
                    } else {
                        model.generation
                    },
                };
                let principal = if as_other {
                    match &model.principal {
                        Principal::TenantUser(tenant) => {
                            Principal::TenantUser(TenantId(tenant.0 % 3 + 1))
                        }
                        Principal::TenantAdmin(tenant) => Principal::TenantUser(*tenant),
                        Principal::Node(node) => Principal::Node(NodeId(node.0 + 1)),
                        Principal::PlatformAdmin => Principal::TenantAdmin(TenantId(1)),
                        _ => Principal::PlatformAdmin,
                    }
                } else {
                    model.principal.clone()
                };
                self.write_as(principal, credential, choice);
            }
        }
    }

    /// A write that `principal` may propose, under `credential`.
    fn write_as(&mut self, principal: Principal, credential: Credential, choice: u8) {
        let command = match &principal {
            Principal::TenantUser(_) | Principal::TenantAdmin(_) | Principal::TenantViewer(_) => {
                let Some(public) = self.state.public_pool() else {
                    return;
                };
                Command::JobSubmit(job_spec(
                    public,
                    choice % 3,
                    1,
                    choice % 2,
                    1,
                    Some(1),
                    false,
                ))
            }
            Principal::PlatformAdmin | Principal::PlatformAuditor => {
                let Some(node) = pick(&self.node_ids(), usize::from(choice)) else {
                    return;
                };
                if choice.is_multiple_of(2) {
                    Command::NodeCordon { node }
                } else {
                    Command::NodeUncordon { node }
                }
            }
            Principal::Node(node) => Command::NodeSetAgentAddress {
                node: *node,
                address: format!("10.1.{}.{}:7070", node.0 % 250, choice),
                isolation: None,
            },
            Principal::Bootstrap => {
                let hash = self.new_secret();
                Command::NodeRegister(NodeRegister {
                    credential_hash: Some(hash),
                    ..node_request(&format!("boot-{}", choice % 4), GPU, ZONE)
                })
            }
            Principal::System => return,
        };
        let registered = match &command {
            Command::NodeRegister(request) => Some(request.name.clone()),
            _ => None,
        };
        let accepted = self
            .apply_credentialed(principal, credential, command)
            .is_ok();
        if let (true, Some(node_name)) = (accepted, registered) {
            // The bootstrap token spent a use; the node's credential replaced any other.
            for token in &mut self.tokens {
                if token.id == credential.token {
                    let uses = token.bootstrap_uses.expect("a bootstrap token");
                    token.bootstrap_uses = Some(uses - 1);
                    token.revoked |= uses == 1;
                }
                if token.name == corral_state::node_token_name(&node_name) {
                    token.revoked = true;
                }
            }
            self.record_token(&corral_state::node_token_name(&node_name), None, None);
        }
    }
}

fn run_all(operations: &[Operation]) -> Driver {
    let mut driver = cluster();
    for operation in operations {
        driver.run(operation);
    }
    driver
}

/// A write's outcome without its events (whose indexes differ between groupings).
type WriteOutcome = Result<Option<Created>, corral_model::Rejection>;

/// The writes of `log`, each under its own request id; every seventh is sent twice in
/// a row, as a client retry would be, so a retry can share an entry with its first
/// attempt.
fn writes_with_retries(log: &[(Principal, Option<Credential>, Command)]) -> Vec<Write> {
    let mut writes = Vec::new();
    for (position, (principal, credential, command)) in log.iter().enumerate() {
        let write = Write {
            principal: principal.clone(),
            credential: *credential,
            command: command.clone(),
            request_id: Some(RequestId(position as u128)),
        };
        if position % 7 == 3 {
            writes.push(write.clone());
        }
        writes.push(write);
    }
    writes
}

/// Apply `writes` in groups of the sizes `group_sizes` (cycled), each group at its own
/// time; as one entry per group when `grouped`, else one entry per write. The
/// invariants are checked after every entry.
fn replay(writes: &[Write], group_sizes: &[usize], grouped: bool) -> (State, Vec<WriteOutcome>) {
    let mut state = State::new();
    let mut outcomes = Vec::new();
    let mut index = 0;
    let mut remaining = writes;
    for (group, size) in group_sizes.iter().cycle().enumerate() {
        if remaining.is_empty() {
            break;
        }
        let (batch, rest) = remaining.split_at((*size).min(remaining.len()));
        remaining = rest;
        let at_ms = 1_000_000 + 1_000 * group as u64;
        let entries: Vec<Vec<Write>> = if grouped {
            vec![batch.to_vec()]
        } else {
            batch.iter().map(|write| vec![write.clone()]).collect()
        };
        for entry in entries {
            index += 1;
            for result in state.apply_batch(index, at_ms, entry) {
                outcomes.push(result.map(|applied| applied.created));
            }
            if let Err(violation) = state.check_invariants() {
                panic!("after entry {index}: {violation}");
            }
        }
    }
    (state, outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Group commit changes only how writes are cut into log entries: every write gets
    /// the outcome it would get in an entry of its own, a retry in the same entry as its
    /// first attempt gets the first outcome, and the state is the same but for indexes.
    #[test]
    fn grouping_writes_into_entries_changes_no_outcome_and_no_state(
        operations in proptest::collection::vec(operation(), 1..100),
        group_sizes in proptest::collection::vec(1usize..12, 1..20),
    ) {
        let log = run_all(&operations).log;
        let writes = writes_with_retries(&log);
        let (alone, alone_outcomes) = replay(&writes, &group_sizes, false);
        let (grouped, grouped_outcomes) = replay(&writes, &group_sizes, true);
        prop_assert_eq!(alone_outcomes, grouped_outcomes);
        prop_assert_eq!(alone.index_free_digest(), grouped.index_free_digest());
        prop_assert!(grouped.applied_index() <= alone.applied_index());
    }

    /// The audit trail records every write once — applied or refused, a retry not
    /// again — except the loops' ticks and plans and their refused proposals; its
    /// sequence numbers count up by one, its indexes never go back, and it stays within
    /// its bounds (`check_invariants`, after every entry inside `replay`).
    #[test]
    fn every_write_is_audited_once_in_log_order(
        operations in proptest::collection::vec(operation(), 1..100),
        group_sizes in proptest::collection::vec(1usize..12, 1..20),
    ) {
        let log = run_all(&operations).log;
        let writes = writes_with_retries(&log);
        let (state, outcomes) = replay(&writes, &group_sizes, true);
        let mut expected = Vec::new();
        for (position, (write, outcome)) in writes.iter().zip(&outcomes).enumerate() {
            let retry = position > 0 && writes[position - 1].request_id == write.request_id;
            let quiet_loop = write.principal == Principal::System
                && (matches!(write.command, Command::MeterTick | Command::SchedulerPlan { .. })
                    || outcome.is_err());
            if !retry && !quiet_loop {
                expected.push((write.principal.clone(), write.command.name(), outcome.is_ok()));
            }
        }
        let recorded: Vec<_> = state
            .audit_records()
            .map(|record| (
                record.principal.clone(),
                record.kind.clone(),
                record.outcome == corral_model::AuditOutcome::Applied,
            ))
            .collect();
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(principal, kind, applied)| (principal, kind.to_string(), applied))
            .collect();
        prop_assert_eq!(recorded, expected);
        let indexes: Vec<u64> = state.audit_records().map(|record| record.index).collect();
        prop_assert!(indexes.windows(2).all(|pair| pair[0] <= pair[1]));
        prop_assert!(indexes.last().is_none_or(|last| *last <= state.applied_index()));
    }

    /// Every invariant holds after every entry, and rejected entries change nothing
    /// (both checked inside `Driver::apply`).
    #[test]
    fn random_sequences_keep_every_invariant(operations in proptest::collection::vec(operation(), 1..160)) {
        let driver = run_all(&operations);
        prop_assert!(driver.state.check_invariants().is_ok());
    }

    #[test]
    fn the_same_sequence_gives_the_same_digest(operations in proptest::collection::vec(operation(), 1..120)) {
        let first = run_all(&operations);
        let second = run_all(&operations);
        prop_assert_eq!(first.state.digest(), second.state.digest());
        prop_assert_eq!(first.state.encode_snapshot(), second.state.encode_snapshot());
    }

    #[test]
    fn snapshot_restore_then_more_commands_matches_never_snapshotting(
        operations in proptest::collection::vec(operation(), 2..120),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(operations.len());
        let straight = run_all(&operations);

        let mut restored = cluster();
        for operation in &operations[..cut] {
            restored.run(operation);
        }
        let bytes = restored.state.encode_snapshot();
        restored.state = State::decode_snapshot(&bytes).expect("a snapshot decodes");
        prop_assert!(restored.state.check_invariants().is_ok());
        for operation in &operations[cut..] {
            restored.run(operation);
        }
        prop_assert_eq!(straight.state.digest(), restored.state.digest());
    }
}

/// The generator must actually reach the interesting states, or the properties above
/// prove little: check that a fixed long sequence places, starts and bills work.
#[test]
fn the_generator_reaches_placements_and_bills() {
    let mut driver = cluster();
    for round in 0..40u16 {
        driver.run(&Operation::Submit {
            tenant: (round % 3) as u8,
            pool: (round % 3) as u8,
            kind: (round % 3) as u8,
            replicas: 2,
            accelerators: 2,
            priority: 1,
            max_runtime_hours: Some(2),
            rack: false,
        });
        driver.run(&Operation::PlanGreedy {
            pool: (round % 3) as u8,
        });
        driver.run(&Operation::Started {
            job: round,
            rank: 0,
        });
        driver.run(&Operation::Tick {
            advance_minutes: 30,
        });
    }
    let placed = driver
        .state
        .jobs()
        .filter(|job| job.placed_replicas().next().is_some())
        .count();
    assert!(placed > 0, "no job was ever placed");
    assert!(driver.state.meters().next().is_some(), "no meter is open");
    let bills = driver
        .state
        .bills(
            &Principal::PlatformAdmin,
            &corral_state::BillQuery::default(),
        )
        .expect("admin sees bills");
    assert!(bills.lifetime_total_micros > 0, "nothing was billed");
}

/// The same for the node-role operations: a fixed sequence promotes a standby, isolates
/// nodes for an upgrade, ends their isolation by driver reports and completes the
/// pool's upgrade, so the properties above do cover them.
#[test]
fn the_generator_reaches_standby_promotion_and_upgrade_completion() {
    let mut driver = cluster();
    let alpha_pool = PoolId(2);
    driver.run(&Operation::SetStandby {
        node: 1,
        on: true,
        as_admin: false,
    });
    driver.run(&Operation::NodeLost { node: 8 });
    driver.run(&Operation::NodeRecovered { node: 8 });
    driver.run(&Operation::RequestUpgrade {
        pool: 1,
        version: 1,
        forcible: false,
        batch: 2,
    });
    assert!(driver
        .state
        .pool(alpha_pool)
        .expect("pool")
        .pending_upgrade
        .is_some());
    for round in 0..10u16 {
        driver.run(&Operation::UpgradeBegin { node: round });
        driver.run(&Operation::DriverReport {
            node: 0,
            version: 1,
            isolated_first: true,
        });
        driver.run(&Operation::SetAgentAddress {
            node: round,
            port: round as u8,
        });
    }
    let seen = |wanted: fn(&corral_model::Event) -> bool| {
        driver.state.events().any(|record| wanted(&record.event))
    };
    assert!(seen(|event| matches!(
        event,
        corral_model::Event::NodeStandbyPromoted { .. }
    )));
    assert!(seen(|event| matches!(
        event,
        corral_model::Event::NodeUpgradeStarted { .. }
    )));
    assert!(seen(|event| matches!(
        event,
        corral_model::Event::NodeUpgradeFinished { .. }
    )));
    let pool = driver.state.pool(alpha_pool).expect("pool");
    assert_eq!(pool.pending_upgrade, None, "the upgrade did not complete");
    assert_eq!(pool.driver.gpu_driver_version.as_deref(), Some("550.2"));
    assert!(driver
        .state
        .nodes()
        .any(|node| node.agent_address.is_some()));
}

/// The same for credentials: a fixed sequence makes tokens of every kind, uses them
/// while they stand (a tenant admin making a token, an operator, a bootstrap
/// registration, the node's own credential) and after they fell (rotated out without
/// grace, expired, used up, revoked), so the credential check of the properties above
/// sees both outcomes.
#[test]
fn the_generator_reaches_live_and_dead_credentials() {
    let mut driver = cluster();
    let create = |tenant, role, ttl_minutes, by_tenant_admin| Operation::CreateToken {
        tenant,
        role,
        ttl_minutes,
        by_tenant_admin,
    };
    let write = |token, stale| Operation::WriteWithToken {
        token,
        stale,
        as_other: false,
        choice: 1,
    };
    driver.run(&create(0, 0, None, None)); // 0: tenant 1's admin
    driver.run(&create(1, 1, Some(10), None)); // 1: tenant 2's operator, ten minutes
    driver.run(&create(0, 5, None, None)); // 2: a bootstrap token of one use
    driver.run(&create(0, 2, None, Some(0))); // 3: a viewer, made by token 0
    assert_eq!(driver.tokens.len(), 4);
    assert_eq!(driver.credentialed_accepted, 1);
    driver.run(&write(0, false));
    driver.run(&write(1, false));
    driver.run(&write(2, false)); // registers boot-1: 4 is its credential
    assert_eq!(driver.tokens.len(), 5);
    assert_eq!(driver.tokens[4].name, "node:boot-1");
    driver.run(&write(4, false));
    assert_eq!(driver.credentialed_accepted, 5);
    // Rotated out without grace, expired, used up, revoked.
    driver.run(&Operation::RotateToken {
        token: 0,
        grace_minutes: 0,
        by_tenant_admin: None,
    });
    driver.run(&write(0, true));
    driver.run(&write(0, false));
    driver.run(&Operation::Tick {
        advance_minutes: 11,
    });
    driver.run(&write(1, false));
    driver.run(&write(2, false));
    driver.run(&Operation::RevokeToken {
        token: 4,
        by_tenant_admin: None,
    });
    driver.run(&write(4, false));
    // Another principal's credential.
    driver.run(&Operation::WriteWithToken {
        token: 0,
        stale: false,
        as_other: true,
        choice: 1,
    });
    assert_eq!(driver.credentialed_accepted, 6);
    assert_eq!(driver.credentialed_unauthenticated, 5);
}

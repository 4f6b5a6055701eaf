//! `State::apply`: dispatch of one log entry to the handler of its command, the
//! per-entry context (time, principal, events), and authorization helpers.
//!
//! Every handler validates everything first and only then mutates, so a rejected
//! command changes nothing.

mod alarms;
mod billing;
mod jobs;
pub(crate) mod lifecycle;
mod networks;
mod nodes;
mod plan;
mod pools;
mod queues;
mod replicas;
mod standby;
mod tenants;
mod tick;
mod tokens;

pub use tokens::node_token_name;
mod upgrades;
mod workflows;

use crate::state::State;
use corral_model::ids::{JobId, NetworkId, NodeId, PoolId, TenantId};
use corral_model::limits::MAX_EVENTS_RETAINED;
use corral_model::{Command, Credential, Entry, Event, EventRecord, Principal, Rejection};

/// What a successful apply produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub events: Vec<EventRecord>,
    /// The object the command created, if any.
    pub created: Option<Created>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Created {
    Tenant(TenantId),
    Network(NetworkId),
    Pool(PoolId),
    Node(NodeId),
    Job(JobId),
}

/// Per-entry context handed to every handler.
pub(crate) struct Context<'a> {
    pub index: u64,
    pub at_ms: u64,
    pub principal: &'a Principal,
    /// The token the principal was authenticated with (checked before dispatch).
    pub credential: Option<Credential>,
    pub events: Vec<EventRecord>,
}

impl Context<'_> {
    pub fn emit(&mut self, tenant: Option<TenantId>, event: Event) {
        self.events.push(EventRecord {
            index: self.index,
            at_ms: self.at_ms,
            principal: self.principal.clone(),
            tenant,
            event,
        });
    }
}

pub(crate) type Handled = Result<Option<Created>, Rejection>;

impl State {
    /// Apply one log entry. Entries must come in increasing index order (gaps are
    /// allowed: raft's own entries never reach the state machine).
    pub fn apply(&mut self, entry: &Entry) -> Result<Applied, Rejection> {
        assert!(
            entry.index > self.applied_index,
            "entries must be applied in log order: {} after {}",
            entry.index,
            self.applied_index
        );
        self.apply_audited(entry, None)
    }

    /// `apply` for one of several commands that share a log entry (`apply_batch`): the
    /// index may equal the applied index, never go back.
    pub(crate) fn apply_within_entry(&mut self, entry: &Entry) -> Result<Applied, Rejection> {
        assert!(
            entry.index >= self.applied_index,
            "entries must be applied in log order: {} after {}",
            entry.index,
            self.applied_index
        );
        // A new leader's clock may be behind the old one's; time inside the state never
        // goes backwards, which billing relies on.
        let at_ms = entry.at_ms.max(self.now_ms);
        let mut context = Context {
            index: entry.index,
            at_ms,
            principal: &entry.principal,
            credential: entry.credential,
            events: Vec::new(),
        };
        let result = self
            .authorize_entry(entry, at_ms)
            .and_then(|()| self.dispatch(&mut context, &entry.command));
        self.applied_index = entry.index;
        match result {
            Ok(created) => {
                self.now_ms = at_ms;
                self.record_events(&context.events);
                Ok(Applied {
                    events: context.events,
                    created,
                })
            }
            Err(rejection) => {
                assert!(
                    context.events.is_empty(),
                    "a rejected command must not have changed anything"
                );
                Err(rejection)
            }
        }
    }

    fn record_events(&mut self, events: &[EventRecord]) {
        self.events.extend(events.iter().cloned());
        while self.events.len() > MAX_EVENTS_RETAINED {
            self.events.pop_front();
        }
    }

    fn dispatch(&mut self, context: &mut Context, command: &Command) -> Handled {
        match command {
            Command::TenantCreate {
                name,
                quota,
                may_use_high_priority,
                max_active_jobs,
            } => self.tenant_create(
                context,
                name,
                quota,
                *may_use_high_priority,
                *max_active_jobs,
            ),
            Command::TenantSetQuota { tenant, quota } => {
                self.tenant_set_quota(context, *tenant, quota)
            }
            Command::TenantDelete { tenant } => self.tenant_delete(context, *tenant),
            Command::TokenCreate {
                name,
                hash,
                scope,
                ttl_ms,
            } => self.token_create(context, name, hash, scope, *ttl_ms),
            Command::TokenRotate {
                name,
                hash,
                grace_ms,
            } => self.token_rotate(context, name, hash, *grace_ms),
            Command::TokenRevoke { name } => self.token_revoke(context, name),
            Command::FlavorDefine(flavor) => self.flavor_define(context, flavor),
            Command::NetworkCreate { tenant, name, cidr } => {
                self.network_create(context, *tenant, name, cidr)
            }
            Command::NetworkDelete { network } => self.network_delete(context, *network),
            Command::NetworkSetStorage { network, endpoints } => {
                self.network_set_storage(context, *network, endpoints)
            }
            Command::PoolCreate(request) => self.pool_create(context, request),
            Command::PoolScale {
                pool,
                flavor,
                zone,
                node_count,
            } => self.pool_scale(context, *pool, flavor, zone, *node_count),
            Command::PoolDelete { pool, force } => self.pool_delete(context, *pool, *force),
            Command::PoolSetJobTypes { pool, job_types } => {
                self.pool_set_job_types(context, *pool, job_types)
            }
            Command::PoolRequestDriverUpgrade {
                pool,
                target,
                mode,
                batch_size,
            } => self.pool_request_driver_upgrade(context, *pool, target, *mode, *batch_size),
            Command::PoolCancelDriverUpgrade { pool } => {
                self.pool_cancel_driver_upgrade(context, *pool)
            }
            Command::PoolRenew { pool, periods } => self.pool_renew(context, *pool, *periods),
            Command::NodeRegister(request) => self.node_register(context, request),
            Command::NodeDrain { node, deadline_ms } => {
                self.node_drain(context, *node, *deadline_ms)
            }
            Command::NodeCordon { node } => self.node_set_schedulable(context, *node, false),
            Command::NodeUncordon { node } => self.node_set_schedulable(context, *node, true),
            Command::NodeSetDeletionLock { node, locked } => {
                self.node_set_deletion_lock(context, *node, *locked)
            }
            Command::NodeSetTaints { node, taints } => self.node_set_taints(context, *node, taints),
            Command::NodeSetLabels { node, labels } => self.node_set_labels(context, *node, labels),
            Command::NodeDelete { node } => self.node_delete(context, *node),
            Command::NodeSetAgentAddress {
                node,
                address,
                isolation,
            } => self.node_set_agent_address(context, *node, address, *isolation),
            Command::NodeSetStandby { node, standby } => {
                self.node_set_standby(context, *node, *standby)
            }
            Command::NodeUpgradeBegin { node } => self.node_upgrade_begin(context, *node),
            Command::NodeLost { node } => self.node_lost(context, *node),
            Command::NodeRecovered { node } => self.node_recovered(context, *node),
            Command::NodesLost { nodes } => self.nodes_lost(context, nodes),
            Command::ReplicaLost { job, rank, node } => {
                self.replica_lost(context, *job, *rank, *node)
            }
            Command::NodeDriverReport {
                node,
                gpu_driver_version,
                npu_driver_version,
            } => self.node_driver_report(context, *node, gpu_driver_version, npu_driver_version),
            Command::NodeDriverUpgradeFailed {
                node,
                attempt,
                final_attempt,
                output_tail,
            } => self.node_driver_upgrade_failed(
                context,
                *node,
                *attempt,
                *final_attempt,
                output_tail,
            ),
            Command::JobSubmit(spec) => self.job_submit(context, spec),
            Command::JobTerminate { job } => self.job_terminate(context, *job),
            Command::JobStop { job } => self.job_stop(context, *job),
            Command::JobStart { job } => self.job_start(context, *job),
            Command::JobChangePriority { job, priority } => {
                self.job_change_priority(context, *job, *priority)
            }
            Command::SchedulerPlan { pool, placements } => {
                self.scheduler_plan(context, *pool, placements)
            }
            Command::ReplicaStarted {
                job,
                rank,
                node,
                master_port,
            } => self.replica_started(context, *job, *rank, *node, *master_port),
            Command::ReplicaExited {
                job,
                rank,
                node,
                exit_code,
                oom_killed,
            } => self.replica_exited(context, *job, *rank, *node, *exit_code, *oom_killed),
            Command::MeterTick => self.meter_tick(context),
            Command::AlarmRaise {
                replica,
                kind,
                detail,
            } => self.alarm_raise(context, *replica, *kind, detail),
            Command::AlarmDisarm { replica } => self.alarm_disarm(context, *replica),
            Command::QueueCreate(spec) => self.queue_create(context, spec),
            Command::QueueUpdate(spec) => self.queue_update(context, spec),
            Command::QueueDelete { pool, name } => self.queue_delete(context, *pool, name),
        }
    }
}

// Authorization helpers. Objects of another tenant are answered with NotFound, so that
// a tenant cannot learn which ids exist (documented in ARCHITECTURE.md).

pub(crate) fn require_admin(principal: &Principal) -> Result<(), Rejection> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(Rejection::denied("only the platform admin may do this"))
    }
}

pub(crate) fn require_system(principal: &Principal) -> Result<(), Rejection> {
    if matches!(principal, Principal::System) {
        Ok(())
    } else {
        Err(Rejection::denied(
            "only the leader's own loops may propose this",
        ))
    }
}

/// Reports about a node come from the leader's loops or from that node's own agent;
/// a node's credential never speaks for another node (NodeRestriction).
pub(crate) fn require_node_itself(principal: &Principal, node: NodeId) -> Result<(), Rejection> {
    match principal {
        Principal::System => Ok(()),
        Principal::Node(own) if *own == node => Ok(()),
        Principal::Node(own) => Err(Rejection::denied(format!(
            "{own} may report only about itself, not {node}"
        ))),
        _ => Err(Rejection::denied("only node agents may report this")),
    }
}

/// The principal may act for `owner`; otherwise the object is reported as not found.
pub(crate) fn require_owner(
    principal: &Principal,
    owner: TenantId,
    kind: &str,
    id: impl std::fmt::Display,
) -> Result<(), Rejection> {
    if principal.may_act_for(owner) {
        Ok(())
    } else {
        Err(Rejection::not_found(kind, id))
    }
}

//! The audit trail in the replicated state: every write a principal made, applied or
//! refused, with its principal, token name, request id, time, target and outcome
//! (`corral_model::AuditRecord`). It is part of the state, so it is the same on every
//! replica, goes into snapshots and outlives raft log compaction; it is bounded by
//! count and by age (`MAX_AUDIT_RECORDS`, `MAX_AUDIT_AGE_MS`), oldest first out, pruned
//! by entry time only (no clock).

use crate::requests::RequestId;
use crate::state::State;
use crate::{Applied, Created};
use corral_model::ids::TenantId;
use corral_model::limits::{MAX_AUDIT_AGE_MS, MAX_AUDIT_RECORDS, MAX_LIST_PAGE};
use corral_model::{AuditOutcome, AuditRecord, Command, Entry, Principal, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The retained records, oldest first; sequence, index and time never decrease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AuditLog {
    pub(crate) records: VecDeque<AuditRecord>,
    /// The sequence number of the next record.
    pub(crate) next_sequence: u64,
}

/// What a write is about, read before it is applied (a deletion removes its object).
struct Subject {
    token: Option<String>,
    target: String,
    owner: Option<TenantId>,
}

/// A query of the trail. Text filters match exactly; times are the entries' `at_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The principal as `Principal::describe` writes it (`tenant-3/operator`), or the
    /// name of the token used.
    pub principal: Option<String>,
    /// The target, e.g. `job-7`.
    pub object: Option<String>,
    /// The command's name, e.g. `job_submit`.
    pub kind: Option<String>,
    /// Inclusive.
    pub since_ms: Option<u64>,
    /// Exclusive.
    pub until_ms: Option<u64>,
    /// Only records after this sequence number (the previous page's `next_after`).
    pub after_sequence: Option<u64>,
}

/// One page of the trail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Set when the page is full: pass it as `after_sequence` for the next page.
    pub next_after: Option<u64>,
}

/// Which writes the trail records: every write of a person, a tool or an agent,
/// applied or refused. The leader's own loops (`System`) are recorded only for what
/// they decide about objects — a node found lost or recovered, a node isolated for an
/// upgrade — and only when applied. Their metering ticks and scheduler plans come
/// every few hundred milliseconds, change objects only as the consequence of earlier,
/// audited writes and of time (their effects are in the event stream, which names the
/// system as their principal), and would push the people's records out of the bound
/// within hours.
fn audits(entry: &Entry) -> bool {
    !matches!(
        (&entry.principal, &entry.command),
        (
            Principal::System,
            Command::MeterTick | Command::SchedulerPlan { .. }
        )
    )
}

fn created_target(created: Created) -> String {
    match created {
        Created::Tenant(id) => id.to_string(),
        Created::Network(id) => id.to_string(),
        Created::Pool(id) => id.to_string(),
        Created::Node(id) => id.to_string(),
        Created::Job(id) => id.to_string(),
    }
}

impl AuditLog {
    fn push(&mut self, mut record: AuditRecord) {
        if let Some(last) = self.records.back() {
            // Time in the trail never goes back, even after a refused write stamped
            // later than the state's time (which a refusal does not move).
            record.at_ms = record.at_ms.max(last.at_ms);
        }
        record.sequence = self.next_sequence;
        self.next_sequence += 1;
        let at_ms = record.at_ms;
        self.records.push_back(record);
        while self.records.len() > MAX_AUDIT_RECORDS {
            self.records.pop_front();
        }
        self.prune(at_ms);
    }

    /// Drops the records older than `MAX_AUDIT_AGE_MS` at `now_ms`.
    fn prune(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(MAX_AUDIT_AGE_MS);
        while self
            .records
            .front()
            .is_some_and(|record| record.at_ms < cutoff)
        {
            self.records.pop_front();
        }
    }
}

impl State {
    /// Apply one write and record it in the trail (`audits` says which are recorded).
    pub(crate) fn apply_audited(
        &mut self,
        entry: &Entry,
        request: Option<RequestId>,
    ) -> Result<Applied, Rejection> {
        if !audits(entry) {
            let result = self.apply_within_entry(entry);
            self.audit.prune(self.now_ms);
            return result;
        }
        let at_ms = entry.at_ms.max(self.now_ms);
        let subject = self.audit_subject(entry);
        let result = self.apply_within_entry(entry);
        let outcome = match &result {
            // The loops' refused proposals are stale plans of a state that moved on.
            Err(_) if entry.principal == Principal::System => return result,
            Err(rejection) => Err(rejection),
            Ok(applied) => Ok(applied.created),
        };
        self.audit_record(entry, at_ms, request, subject, outcome);
        result
    }

    /// Records a write refused before it was applied (a request id reused for another
    /// command).
    pub(crate) fn audit_refusal(
        &mut self,
        entry: &Entry,
        request: RequestId,
        rejection: &Rejection,
    ) {
        if !audits(entry) {
            return;
        }
        let at_ms = entry.at_ms.max(self.now_ms);
        let subject = self.audit_subject(entry);
        self.audit_record(entry, at_ms, Some(request), subject, Err(rejection));
    }

    fn audit_record(
        &mut self,
        entry: &Entry,
        at_ms: u64,
        request: Option<RequestId>,
        subject: Subject,
        outcome: Result<Option<Created>, &Rejection>,
    ) {
        let (target, outcome) = match outcome {
            Ok(created) => (
                created.map_or(subject.target, created_target),
                AuditOutcome::Applied,
            ),
            Err(rejection) => (
                subject.target,
                AuditOutcome::Refused {
                    reason: rejection.to_string(),
                },
            ),
        };
        self.audit.push(AuditRecord {
            sequence: 0,
            index: entry.index,
            at_ms,
            principal: entry.principal.clone(),
            token: subject.token,
            request_id: request.map(|request| request.0),
            kind: entry.command.name().to_string(),
            target,
            tenant: entry.principal.tenant().or(subject.owner),
            outcome,
        });
    }

    /// The token, target and the target's owning tenant of a write, from the state
    /// before it is applied.
    fn audit_subject(&self, entry: &Entry) -> Subject {
        // A token revoked (or used up) before the write reached the log is gone from
        // the state; its id still says which one it was.
        let token = entry.credential.map(|credential| {
            self.token_by_id(credential.token)
                .map_or_else(|| credential.token.to_string(), |token| token.name.clone())
        });
        let job_owner = |job| self.jobs.get(&job).map(|job| job.tenant);
        let pool_owner = |pool| self.pools.get(&pool).and_then(|pool| pool.owner());
        let node_owner = |node| {
            self.nodes
                .get(&node)
                .and_then(|node| node.pool)
                .and_then(pool_owner)
        };
        let token_owner = |name: &str| self.tokens.get(name).and_then(|token| token.tenant());
        let (target, owner) = match &entry.command {
            Command::TenantCreate { name, .. } => (format!("tenant:{name}"), None),
            Command::TenantSetQuota { tenant, .. } | Command::TenantDelete { tenant } => {
                (tenant.to_string(), Some(*tenant))
            }
            Command::TokenCreate { name, scope, .. } => (format!("token:{name}"), scope.tenant()),
            Command::TokenRotate { name, .. } | Command::TokenRevoke { name } => {
                (format!("token:{name}"), token_owner(name))
            }
            Command::FlavorDefine(flavor) => (format!("flavor:{}", flavor.name), None),
            Command::NetworkCreate { tenant, name, .. } => {
                (format!("network:{name}"), Some(*tenant))
            }
            Command::NetworkDelete { network } | Command::NetworkSetStorage { network, .. } => (
                network.to_string(),
                self.networks.get(network).map(|network| network.tenant),
            ),
            Command::PoolCreate(request) => (
                format!("pool:{}", request.name),
                match request.kind {
                    corral_model::command::PoolKindRequest::Dedicated { owner } => Some(owner),
                    corral_model::command::PoolKindRequest::Public => None,
                },
            ),
            Command::PoolScale { pool, .. }
            | Command::PoolDelete { pool, .. }
            | Command::PoolSetJobTypes { pool, .. }
            | Command::PoolRequestDriverUpgrade { pool, .. }
            | Command::PoolCancelDriverUpgrade { pool }
            | Command::PoolRenew { pool, .. }
            | Command::SchedulerPlan { pool, .. } => (pool.to_string(), pool_owner(*pool)),
            Command::NodeRegister(request) => (format!("node:{}", request.name), None),
            Command::NodesLost { nodes } => (
                format!(
                    "nodes:{}",
                    nodes
                        .iter()
                        .map(|node| node.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None,
            ),
            Command::NodeDrain { node, .. }
            | Command::NodeCordon { node }
            | Command::NodeUncordon { node }
            | Command::NodeSetDeletionLock { node, .. }
            | Command::NodeSetTaints { node, .. }
            | Command::NodeSetLabels { node, .. }
            | Command::NodeDelete { node }
            | Command::NodeSetAgentAddress { node, .. }
            | Command::NodeSetStandby { node, .. }
            | Command::NodeUpgradeBegin { node }
            | Command::NodeLost { node }
            | Command::NodeRecovered { node }
            | Command::NodeDriverReport { node, .. }
            | Command::NodeDriverUpgradeFailed { node, .. } => {
                (node.to_string(), node_owner(*node))
            }
            Command::JobSubmit(spec) => (format!("job:{}", spec.name), None),
            Command::JobTerminate { job }
            | Command::JobStop { job }
            | Command::JobStart { job }
            | Command::JobChangePriority { job, .. }
            | Command::ReplicaStarted { job, .. }
            | Command::ReplicaExited { job, .. }
            | Command::ReplicaLost { job, .. } => (job.to_string(), job_owner(*job)),
            Command::MeterTick => ("cluster".to_string(), None),
            Command::AlarmRaise { replica, .. } => (format!("replica:{replica}"), None),
            Command::AlarmDisarm { replica } => match replica {
                Some(replica) => (format!("replica:{replica}"), None),
                None => ("cluster".to_string(), None),
            },
            Command::QueueCreate(spec) | Command::QueueUpdate(spec) => (
                format!("{}/queue:{}", spec.pool, spec.name),
                pool_owner(spec.pool),
            ),
            Command::QueueDelete { pool, name } => {
                (format!("{pool}/queue:{name}"), pool_owner(*pool))
            }
        };
        Subject {
            token,
            target,
            owner,
        }
    }

    /// Audit records `principal` may see that match `filter`, oldest first, at most
    /// `limit` (clamped to 1..=`MAX_LIST_PAGE`).
    pub fn list_audit(
        &self,
        principal: &Principal,
        filter: &AuditFilter,
        limit: usize,
    ) -> AuditPage {
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let records = &self.audit.records;
        let start = match filter.after_sequence {
            Some(after) => records.partition_point(|record| record.sequence <= after),
            None => 0,
        };
        let start = match filter.since_ms {
            Some(since) => start.max(records.partition_point(|record| record.at_ms < since)),
            None => start,
        };
        let mut page = AuditPage::default();
        for record in records.range(start..) {
            if filter.until_ms.is_some_and(|until| record.at_ms >= until) {
                break;
            }
            if !record.visible_to(principal) || !matches(filter, record) {
                continue;
            }
            if page.records.len() == limit {
                page.next_after = page.records.last().map(|last| last.sequence);
                break;
            }
            page.records.push(record.clone());
        }
        page
    }

    /// Every retained audit record, oldest first.
    pub fn audit_records(&self) -> impl Iterator<Item = &AuditRecord> {
        self.audit.records.iter()
    }
}

fn matches(filter: &AuditFilter, record: &AuditRecord) -> bool {
    let principal_matches = filter.principal.as_deref().is_none_or(|wanted| {
        record.token.as_deref() == Some(wanted) || record.principal.describe() == wanted
    });
    principal_matches
        && filter
            .object
            .as_deref()
            .is_none_or(|wanted| record.target == wanted)
        && filter
            .kind
            .as_deref()
            .is_none_or(|wanted| record.kind == wanted)
}

/// The bounds and orders `check_invariants` checks.
pub(crate) fn check(log: &AuditLog, now_ms: u64) -> Result<(), String> {
    if log.records.len() > MAX_AUDIT_RECORDS {
        return Err(format!(
            "{} audit records, more than {MAX_AUDIT_RECORDS}",
            log.records.len()
        ));
    }
    let cutoff = now_ms.saturating_sub(MAX_AUDIT_AGE_MS);
    if let Some(oldest) = log.records.front() {
        if oldest.at_ms < cutoff {
            return Err(format!(
                "audit record {} at {} ms is older than the bound at {now_ms} ms",
                oldest.sequence, oldest.at_ms
            ));
        }
    }
    if let Some(newest) = log.records.back() {
        if newest.sequence >= log.next_sequence {
            return Err("an audit record's sequence is not below the next one".into());
        }
    }
    for (earlier, later) in log.records.iter().zip(log.records.iter().skip(1)) {
        if later.sequence != earlier.sequence + 1
            || later.index < earlier.index
            || later.at_ms < earlier.at_ms
        {
            return Err(format!(
                "audit records {} and {} are out of order",
                earlier.sequence, later.sequence
            ));
        }
    }
    Ok(())
}

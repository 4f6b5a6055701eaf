//! The token-lifecycle check: no replica ever applies a write under a credential that
//! was revoked, expired or rotated out (past its grace) at that write's log index.
//!
//! Independent of the state machine's own check (`authorize_entry`): every replica's
//! applied entries are read back from its own raft log (the memory engine's log, which
//! the simulation keeps) in log order, and a model of every token's life is built from
//! the `TokenCreate`, `TokenRotate` and `TokenRevoke` writes that were applied
//! successfully: when it was created, when it expires (the entry's time plus the TTL the
//! command asked for), its current generation, the generation still in its grace and
//! until when, and from which index it was revoked. Each write's outcome comes from the
//! replica's request ledger (`State::remembered_request`: every client write carries a
//! request id) and, for the few writes without one (the platform admin token installed
//! at start), from whether the state shows the change. Only a token's id is read from
//! the state (by the hash its creation stored), because ids are counted over every kind
//! of token, node credentials included. A repeat of a request id (a client's retry,
//! answered with the first outcome, not applied again) is no new acceptance and is not
//! checked again.
//!
//! A replica that jumps (a snapshot installed, or entries re-applied after a restart)
//! takes the model as of that index from the first replica that got there; every
//! replica's model must equal that one at every index it applies.

use corral_model::{Command, Credential, Principal, Rejection, TenantId, TokenId};
use corral_state::State;
use corral_store::{EntryPayload, LogEntry, LogStore};
use futures::FutureExt;
use openraft::RaftLogReader;
use std::collections::{BTreeMap, BTreeSet};

/// One token as the check models it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenLife {
    name: String,
    principal: Principal,
    created_index: u64,
    /// The latest it can expire (see `TokenModel`). `None`: the command gave no TTL;
    /// the defaults (90 days and more) are never reached in a run, so such a token
    /// never expires here.
    expires_at_ms: Option<u64>,
    generation: u32,
    /// The generation before the last rotation and the latest end of its grace.
    previous: Option<(u32, u64)>,
    revoked_at_index: Option<u64>,
}

/// Every token created by a `TokenCreate` so far, by id, and bounds on the state's
/// clock.
///
/// A write's time in the state is not its entry's `at_ms` but `max(at_ms, now)`, where
/// `now` is the time of the last write applied successfully (time never goes back when
/// a new leader's clock is behind); the outcome of a write without a request id (the
/// leader's loops) is not known here, so the model keeps bounds instead: `now` is at
/// least `known_now_ms` (the latest time of a write known applied) and at most
/// `latest_at_ms` (the latest `at_ms` of any write). A token is judged expired only
/// when the write's earliest possible time is past the latest possible expiry, and so
/// for a grace period: no false alarm, and exact while one leader's clock runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenModel {
    tokens: BTreeMap<TokenId, TokenLife>,
    known_now_ms: u64,
    latest_at_ms: u64,
}

impl TokenModel {
    /// The unrevoked token named `name`, if the model knows one.
    fn present(&self, name: &str) -> Option<TokenId> {
        self.tokens
            .iter()
            .find(|(_, life)| life.name == name && life.revoked_at_index.is_none())
            .map(|(id, _)| *id)
    }

    fn knows(&self, token: TokenId) -> bool {
        self.tokens.contains_key(&token)
    }

    /// Why a write by `principal` under `credential` at `at_ms` must be refused, or
    /// `None` when it may be applied (or the token is not modelled: node credentials).
    fn refusal(&self, credential: Credential, principal: &Principal, at_ms: u64) -> Option<String> {
        let life = self.tokens.get(&credential.token)?;
        let token = format!("token {} ({})", credential.token.0, life.name);
        if let Some(index) = life.revoked_at_index {
            return Some(format!("{token} was revoked at index {index}"));
        }
        if let Some(expires) = life.expires_at_ms {
            if at_ms >= expires {
                return Some(format!(
                    "{token} expired at {expires} at the latest, {} ms before the write's time (at the earliest)",
                    at_ms - expires
                ));
            }
        }
        if credential.generation != life.generation {
            let in_grace = life.previous.is_some_and(|(generation, until)| {
                generation == credential.generation && at_ms < until
            });
            if !in_grace {
                return Some(format!(
                    "{token}'s generation {} was rotated out (current {}, previous {:?} as (generation, grace end))",
                    credential.generation, life.generation, life.previous
                ));
            }
        }
        if *principal != life.principal {
            return Some(format!(
                "{token} stands for {:?}, the write is by {principal:?}",
                life.principal
            ));
        }
        None
    }
}

/// What one write's first application did, as far as the replica's state tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    Unauthenticated,
    Refused,
    /// Not recorded (no request id): token commands are judged from the state instead.
    Unknown,
}

#[derive(Default)]
struct ReplicaTrack {
    /// The last index this replica applied (or installed).
    last: Option<u64>,
    model: TokenModel,
}

/// What the check counted (once per log index, by the first replica to apply it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Writes applied under a credential of a modelled token (the check ran on them).
    pub applied_with_credential: u64,
    /// Writes the state machine refused `Unauthenticated` at apply.
    pub refused_unauthenticated: u64,
    /// ... of which the model held the credential valid (only counted: a token the
    /// model cannot follow, e.g. one removed with its tenant, would show here).
    pub refused_while_valid: u64,
    pub tokens_created: u64,
    pub tokens_rotated: u64,
    pub tokens_revoked: u64,
}

#[derive(Default)]
pub struct TokenCheck {
    replicas: BTreeMap<u64, ReplicaTrack>,
    /// The model after index k, at every k where it changed, as the first replica to
    /// apply k had it.
    checkpoints: BTreeMap<u64, TokenModel>,
    /// Highest index any replica applied.
    frontier: Option<u64>,
    /// (principal, request id) -> the first index whose entry carried it.
    first_seen: BTreeMap<(Principal, u128), u64>,
    pub counts: TokenCounts,
}

/// The entry at `index` of a memory-engine log (`None`: purged, or another engine).
pub(crate) fn read_entry(log: &LogStore, index: u64) -> Option<LogEntry> {
    let mut log = log.clone();
    // The memory engine never awaits: its reads complete on the first poll.
    let entries = log
        .try_get_log_entries(index..index + 1)
        .now_or_never()?
        .ok()?;
    entries
        .into_iter()
        .find(|entry| entry.log_id.index == index)
}

impl TokenCheck {
    fn model_at(&self, index: u64) -> TokenModel {
        self.checkpoints
            .range(..=index)
            .next_back()
            .map(|(_, model)| model.clone())
            .unwrap_or_default()
    }

    /// Replica `replica` applied `index` (or installed a snapshot ending there); `state`
    /// is its state right after. Returns the violations found.
    pub fn observe(
        &mut self,
        replica: u64,
        index: u64,
        state: &State,
        log: &LogStore,
    ) -> Vec<String> {
        let mut violations = Vec::new();
        let last = self.replicas.entry(replica).or_default().last;
        let in_order = match last {
            None => index <= 1,
            Some(last) => index <= last + 1,
        };
        let mut model = if !in_order {
            // A snapshot install: no entry to read, the state stands for all before it.
            self.model_at(index)
        } else if last.is_some_and(|last| index <= last) {
            // Entries re-applied after a restart, from the replica's own snapshot.
            self.model_at(index.saturating_sub(1))
        } else {
            std::mem::take(&mut self.replicas.entry(replica).or_default().model)
        };
        let first_at_index = self.frontier.is_none_or(|frontier| index > frontier);
        if in_order {
            match read_entry(log, index) {
                Some(entry) => {
                    if let EntryPayload::Normal(proposal) = entry.payload {
                        self.apply_writes(
                            replica,
                            index,
                            proposal.at_ms,
                            &proposal.writes,
                            state,
                            &mut model,
                            first_at_index,
                            &mut violations,
                        );
                    }
                }
                // Purged meanwhile: the state stands for it, as after an install.
                None => model = self.model_at(index),
            }
        }
        if first_at_index {
            if model != self.model_at(index) {
                self.checkpoints.insert(index, model.clone());
            }
            self.frontier = Some(index);
        } else if model != self.model_at(index) {
            violations.push(format!(
                "replica {replica} after index {index}: its token lifecycle differs from the first replica's there"
            ));
            model = self.model_at(index);
        }
        let track = self.replicas.entry(replica).or_default();
        track.last = Some(index);
        track.model = model;
        violations
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_writes(
        &mut self,
        replica: u64,
        index: u64,
        at_ms: u64,
        writes: &[corral_store::Write],
        state: &State,
        model: &mut TokenModel,
        count: bool,
        violations: &mut Vec<String>,
    ) {
        let mut in_this_entry = BTreeSet::new();
        for (slot, write) in writes.iter().enumerate() {
            let first = match write.request_id {
                Some(request) => {
                    let key = (write.principal.clone(), request.0);
                    let seen = self.first_seen.entry(key.clone()).or_insert(index);
                    *seen = (*seen).min(index);
                    *seen == index && in_this_entry.insert(key)
                }
                None => true,
            };
            if !first {
                // A retry answered with the first outcome: nothing was applied.
                continue;
            }
            // The write's time in the state: at least `earliest`, at most `latest`.
            let earliest = at_ms.max(model.known_now_ms);
            let latest = at_ms.max(model.latest_at_ms);
            model.latest_at_ms = latest;
            let outcome = match write.request_id {
                Some(request) => match state.remembered_request(&write.principal, request) {
                    Some(Ok(_)) => Outcome::Applied,
                    Some(Err(Rejection::Unauthenticated { .. })) => Outcome::Unauthenticated,
                    Some(Err(_)) => Outcome::Refused,
                    None => Outcome::Unknown,
                },
                None => Outcome::Unknown,
            };
            if let Some(credential) = write.credential {
                let refusal = model.refusal(credential, &write.principal, earliest);
                match outcome {
                    Outcome::Applied if model.knows(credential.token) => {
                        if count {
                            self.counts.applied_with_credential += 1;
                        }
                        if let Some(reason) = refusal {
                            violations.push(format!(
                                "replica {replica} applied write {slot} of index {index} (entry at {at_ms} ms, write at {earliest} ms or later, {} by {:?}, request {:?}) under token {} generation {}: {reason}",
                                write.command.name(),
                                write.principal,
                                write.request_id.map(|request| format!("{:032x}", request.0)),
                                credential.token.0,
                                credential.generation,
                            ));
                        }
                    }
                    Outcome::Unauthenticated if count => {
                        self.counts.refused_unauthenticated += 1;
                        if refusal.is_none() && model.knows(credential.token) {
                            self.counts.refused_while_valid += 1;
                        }
                    }
                    _ => {}
                }
            }
            if outcome == Outcome::Applied {
                model.known_now_ms = earliest;
            }
            self.follow_token_command(index, latest, write, outcome, state, model, count);
        }
    }

    /// Update the model with a token command that was applied; `at_ms` is the latest
    /// time the state can have given it.
    #[allow(clippy::too_many_arguments)]
    fn follow_token_command(
        &mut self,
        index: u64,
        at_ms: u64,
        write: &corral_store::Write,
        outcome: Outcome,
        state: &State,
        model: &mut TokenModel,
        count: bool,
    ) {
        if matches!(outcome, Outcome::Refused | Outcome::Unauthenticated) {
            return;
        }
        let known = outcome == Outcome::Applied;
        match &write.command {
            Command::TokenCreate {
                name,
                hash,
                scope,
                ttl_ms,
            } => {
                // The id is the state's (ids count every kind of token); a token created
                // and removed within one entry is not there, and was never usable.
                let Some(token) = state
                    .token_by_hash(hash)
                    .filter(|token| token.name == *name)
                else {
                    return;
                };
                if !known && model.knows(token.id) {
                    // A repeated installation without a request id, refused.
                    return;
                }
                // An expired token's name may be taken again: the old token is removed.
                if let Some(old) = model.present(name) {
                    if let Some(life) = model.tokens.get_mut(&old) {
                        life.revoked_at_index = Some(index);
                    }
                }
                model.tokens.insert(
                    token.id,
                    TokenLife {
                        name: name.clone(),
                        principal: scope.principal(),
                        created_index: index,
                        expires_at_ms: ttl_ms.map(|ttl| at_ms + ttl),
                        generation: 0,
                        previous: None,
                        revoked_at_index: None,
                    },
                );
                if count {
                    self.counts.tokens_created += 1;
                }
            }
            Command::TokenRotate {
                name,
                hash,
                grace_ms,
            } => {
                let Some(id) = model.present(name) else {
                    return;
                };
                let rotated = known
                    || state
                        .token_by_id(id)
                        .is_some_and(|token| token.hash == *hash);
                if let (true, Some(life)) = (rotated, model.tokens.get_mut(&id)) {
                    life.previous = (*grace_ms > 0).then_some((life.generation, at_ms + grace_ms));
                    life.generation += 1;
                    if count {
                        self.counts.tokens_rotated += 1;
                    }
                }
            }
            Command::TokenRevoke { name } => {
                let Some(id) = model.present(name) else {
                    return;
                };
                let revoked = known || state.token_by_id(id).is_none();
                if let (true, Some(life)) = (revoked, model.tokens.get_mut(&id)) {
                    life.revoked_at_index = Some(index);
                    if count {
                        self.counts.tokens_revoked += 1;
                    }
                }
            }
            Command::TenantDelete { tenant } if known => {
                // Whatever a deleted tenant's tokens became, the state shows it.
                let tenant: TenantId = *tenant;
                for (id, life) in model.tokens.iter_mut() {
                    if life.revoked_at_index.is_none()
                        && life.principal.tenant() == Some(tenant)
                        && state.token_by_id(*id).is_none()
                    {
                        life.revoked_at_index = Some(index);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::TokenScope;

    fn model_with(life: TokenLife) -> TokenModel {
        let mut model = TokenModel::default();
        model.tokens.insert(TokenId(3), life);
        model
    }

    fn life() -> TokenLife {
        TokenLife {
            name: "t".into(),
            principal: TokenScope::Tenant {
                tenant: TenantId(1),
                role: corral_model::TenantRole::Operator,
            }
            .principal(),
            created_index: 5,
            expires_at_ms: Some(10_000),
            generation: 2,
            previous: Some((1, 6_000)),
            revoked_at_index: None,
        }
    }

    fn credential(generation: u32) -> Credential {
        Credential {
            token: TokenId(3),
            generation,
        }
    }

    #[test]
    fn the_model_refuses_what_is_revoked_expired_or_rotated_out() {
        let principal = Principal::TenantUser(TenantId(1));
        let model = model_with(life());
        assert_eq!(model.refusal(credential(2), &principal, 9_999), None);
        assert_eq!(model.refusal(credential(1), &principal, 5_999), None);
        assert!(model.refusal(credential(1), &principal, 6_000).is_some());
        assert!(model.refusal(credential(0), &principal, 1_000).is_some());
        assert!(model.refusal(credential(2), &principal, 10_000).is_some());
        assert!(model
            .refusal(credential(2), &Principal::TenantUser(TenantId(2)), 1_000)
            .is_some());
        let revoked = model_with(TokenLife {
            revoked_at_index: Some(7),
            ..life()
        });
        assert!(revoked.refusal(credential(2), &principal, 1_000).is_some());
        // A token the model does not follow (a node's credential) is not judged.
        let other = Credential {
            token: TokenId(4),
            generation: 0,
        };
        assert_eq!(model.refusal(other, &principal, 1_000), None);
    }
}

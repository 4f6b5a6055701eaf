//! Authentication: a bearer token in gRPC metadata names a caller. Every token (the
//! platform's, tenants', nodes' own credentials and bootstrap tokens) is stored in the
//! replicated state as a SHA-256 hash with its scope and expiry; the cluster secret for
//! peer calls comes from the config and is compared in constant time.
//!
//! What the edge decides is decided again where it matters: a write carries the
//! token it was authenticated with and the state machine refuses it at apply if the
//! token was revoked, expired or rotated out by then (`corral_state`'s `tokens`); a
//! linearizable read checks the token again after its read barrier, when this replica
//! has caught up with the leader.
//!
//! Refusing is cheap and bounded: a malformed header or a token the state knows to be
//! expired costs a hash and a map look-up; a source that keeps failing is left
//! only the cheap path (`FailedAttempts`); and the one expensive case, a token this
//! replica does not know (it may lag), waits for a bounded number of slots.

use crate::api::failed_attempts::FailedAttempts;
use crate::environment::Clock;
use crate::replication::proposer::read_index;
use corral_model::{Caller, Credential, Principal, TokenId};
use corral_store::{Raft, StateMachineStore};
use corral_wire::credentials::{bearer_token, constant_time_equal};
use openraft::async_runtime::WatchReceiver;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// SHA-256 of a token secret, hex encoded: what the state stores.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// How long a replica that does not know a token waits to catch up with the commit
/// index before refusing it (a token created a moment ago on another replica).
const CATCH_UP_WAIT: Duration = Duration::from_millis(1_000);
/// Calls with a token this replica does not know that may wait for it at once; more
/// are refused at once, so unknown tokens cannot tie up the replica.
const MAX_UNKNOWN_TOKEN_WAITS: usize = 16;
/// Tokens whose last use this replica remembers (bounded by the token limits anyway).
const MAX_LAST_USED: usize = 200_000;

#[derive(Clone)]
pub(crate) struct Authenticator {
    state_machine: StateMachineStore,
    raft: Raft,
    clock: Clock,
    cluster_secret: String,
    failures: FailedAttempts,
    unknown_waits: Arc<Semaphore>,
    /// When each token last authenticated a call here (this replica's view only).
    last_used_ms: Arc<Mutex<BTreeMap<TokenId, u64>>>,
}

/// What the state says about a token hash at a given time.
enum Lookup {
    Found(Caller),
    Expired,
    Unknown,
}

impl Authenticator {
    pub(crate) fn new(
        state_machine: StateMachineStore,
        raft: Raft,
        clock: Clock,
        cluster_secret: String,
    ) -> Authenticator {
        Authenticator {
            state_machine,
            raft,
            clock,
            cluster_secret,
            failures: FailedAttempts::default(),
            unknown_waits: Arc::new(Semaphore::new(MAX_UNKNOWN_TOKEN_WAITS)),
            last_used_ms: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn lookup(&self, hash: &str, now_ms: u64) -> Lookup {
        self.state_machine
            .read(|state| match state.token_by_hash(hash) {
                None => Lookup::Unknown,
                Some(token) => match token.generation_of(hash, now_ms) {
                    Some(generation) => Lookup::Found(Caller {
                        principal: token.scope.principal(),
                        credential: Some(Credential {
                            token: token.id,
                            generation,
                        }),
                    }),
                    None => Lookup::Expired,
                },
            })
    }

    /// The caller of a request: the one the gate authenticated before the message was
    /// read (`gate`), or, for a request that did not pass the gate, from its token.
    pub(crate) async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if let Some(caller) = request.extensions().get::<Caller>() {
            return Ok(caller.clone());
        }
        let source = request.remote_addr().map(|address| address.ip());
        self.authenticate(request.metadata(), source).await
    }

    /// The caller `metadata`'s token names, or why not; failures count against
    /// `source` (`FailedAttempts`).
    pub(crate) async fn authenticate(
        &self,
        metadata: &MetadataMap,
        source: Option<std::net::IpAddr>,
    ) -> Result<Caller, Status> {
        let result = self.resolve(metadata, source).await;
        match &result {
            Ok(caller) => self.note_use(caller),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                self.failures.record(source)
            }
            Err(_) => {}
        }
        result
    }

    async fn resolve(
        &self,
        metadata: &MetadataMap,
        source: Option<std::net::IpAddr>,
    ) -> Result<Caller, Status> {
        let token = bearer_token(metadata)?;
        let hash = hash_token(token);
        match self.lookup(&hash, self.clock.now_ms()) {
            Lookup::Found(caller) => return Ok(caller),
            Lookup::Expired => return Err(Status::unauthenticated("the token has expired")),
            Lookup::Unknown => {}
        }
        self.failures.check(source)?;
        let _slot = self.unknown_waits.try_acquire().map_err(|_| {
            Status::unavailable("too many calls with unknown tokens at once; retry later")
        })?;
        // This replica may lag: wait until it has applied what it knows is committed.
        let committed = self
            .raft
            .metrics()
            .borrow_watched()
            .local_committed
            .map_or(0, |log_id| log_id.index);
        let mut applied = self.state_machine.applied_index();
        let _ = tokio::time::timeout(CATCH_UP_WAIT, applied.wait_for(|index| *index >= committed))
            .await;
        if let Lookup::Found(caller) = self.lookup(&hash, self.clock.now_ms()) {
            return Ok(caller);
        }
        self.confirm_unknown().await?;
        match self.lookup(&hash, self.clock.now_ms()) {
            Lookup::Found(caller) => Ok(caller),
            Lookup::Expired => Err(Status::unauthenticated("the token has expired")),
            Lookup::Unknown => Err(Status::unauthenticated("unknown or revoked token")),
        }
    }

    /// Whether `caller`'s token still stands in this replica's state: checked after a
    /// read barrier, so a token revoked on the leader is refused by a follower too.
    pub(crate) fn still_valid(&self, caller: &Caller) -> Result<(), Status> {
        let Some(credential) = caller.credential else {
            return Ok(());
        };
        let now_ms = self.clock.now_ms();
        let valid = self.state_machine.read(|state| {
            state.token_by_id(credential.token).is_some_and(|token| {
                token.accepts(credential.generation, now_ms)
                    && token.scope.principal() == caller.principal
            })
        });
        if valid {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "the token was revoked or has expired",
            ))
        }
    }

    fn note_use(&self, caller: &Caller) {
        let Some(credential) = caller.credential else {
            return;
        };
        let now_ms = self.clock.now_ms();
        let mut last_used = self
            .last_used_ms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last_used.len() >= MAX_LAST_USED && !last_used.contains_key(&credential.token) {
            last_used.clear();
        }
        last_used.insert(credential.token, now_ms);
    }

    /// When this replica last authenticated a call with `token`.
    pub(crate) fn last_used_ms(&self, token: TokenId) -> Option<u64> {
        self.last_used_ms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&token)
            .copied()
    }

    /// Only a replica whose state reflects every committed write may call a token
    /// unknown: a follower that lags without knowing it (restarted, cut off, just added)
    /// would refuse a token the cluster has (the simulation caught a follower answering
    /// Unauthenticated for a tenant's valid token). The leader confirms with a read
    /// index; a follower sends the caller to the leader, as for a linearizable read.
    async fn confirm_unknown(&self) -> Result<(), Status> {
        read_index(
            &self.raft,
            "this replica does not know the token and is not the leader; retry at the leader",
            "cannot confirm the token now",
        )
        .await
    }

    /// The secret of a token created under a client's request id (`token_secret`).
    pub(crate) fn derived_token_secret(
        &self,
        request_id: corral_state::RequestId,
        tenant: Option<corral_model::ids::TenantId>,
        name: &str,
    ) -> String {
        crate::api::token_secret::derived_secret(&self.cluster_secret, request_id, tenant, name)
    }

    /// The key managers present to `node`'s log server (`token_secret::log_key`).
    pub(crate) fn node_log_key(&self, node: corral_model::NodeId) -> String {
        crate::api::token_secret::log_key(&self.cluster_secret, node)
    }

    /// Peer calls (raft, forwarding) must carry the cluster secret.
    pub(crate) fn check_peer(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let token = bearer_token(metadata)?;
        if constant_time_equal(token.as_bytes(), self.cluster_secret.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong cluster secret"))
        }
    }
}

/// The principal must be one of the platform's read-everything roles.
pub(crate) fn require_platform_reader(principal: &Principal) -> Result<(), Status> {
    match principal {
        Principal::PlatformAdmin | Principal::PlatformAuditor => Ok(()),
        _ => Err(Status::permission_denied(
            "only the platform admin and auditor may do this",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_secrets_random() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

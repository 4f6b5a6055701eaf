//! Authentication: bearer tokens in gRPC metadata name a principal. Tenant and admin
//! tokens are stored in the replicated state as SHA-256 hashes; the agent credential and
//! the cluster secret come from the config. Comparison of configured secrets is
//! constant-time.

use crate::replication::proposer::read_index;
use corral_model::Principal;
use corral_store::{Raft, StateMachineStore};
use corral_wire::credentials::{bearer_token, constant_time_equal};
use openraft::async_runtime::WatchReceiver;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// SHA-256 of a token secret, hex encoded: what the state stores.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// How long a replica that does not know a token waits to catch up with the commit
/// index before refusing it (a token created a moment ago on another replica).
const CATCH_UP_WAIT: Duration = Duration::from_millis(1_000);

#[derive(Clone)]
pub(crate) struct Authenticator {
    state_machine: StateMachineStore,
    raft: Raft,
    agent_token: Option<String>,
    cluster_secret: String,
}

impl Authenticator {
    pub(crate) fn new(
        state_machine: StateMachineStore,
        raft: Raft,
        agent_token: Option<String>,
        cluster_secret: String,
    ) -> Authenticator {
        Authenticator {
            state_machine,
            raft,
            agent_token,
            cluster_secret,
        }
    }

    fn lookup(&self, hash: &str) -> Option<Principal> {
        self.state_machine.read(|state| {
            state.token_by_hash(hash).map(|token| match token.tenant {
                Some(tenant) => Principal::TenantUser(tenant),
                None => Principal::PlatformAdmin,
            })
        })
    }

    /// Map a request's token to the principal it names.
    pub(crate) async fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let token = bearer_token(metadata)?;
        if let Some(agent_token) = &self.agent_token {
            if constant_time_equal(token.as_bytes(), agent_token.as_bytes()) {
                return Ok(Principal::Agent);
            }
        }
        let hash = hash_token(token);
        if let Some(principal) = self.lookup(&hash) {
            return Ok(principal);
        }
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
        if let Some(principal) = self.lookup(&hash) {
            return Ok(principal);
        }
        self.confirm_unknown().await?;
        self.lookup(&hash)
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))
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

    /// Peer calls (raft, forwarding) must carry the cluster secret.
    /// The secret of a token created under a client's request id (`token_secret`).
    pub(crate) fn derived_token_secret(
        &self,
        request_id: corral_state::RequestId,
        tenant: Option<corral_model::ids::TenantId>,
        name: &str,
    ) -> String {
        crate::api::token_secret::derived_secret(&self.cluster_secret, request_id, tenant, name)
    }

    pub(crate) fn check_peer(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let token = bearer_token(metadata)?;
        if constant_time_equal(token.as_bytes(), self.cluster_secret.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong cluster secret"))
        }
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

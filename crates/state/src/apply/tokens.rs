//! Tokens and the credential check every entry passes before its command runs.
//!
//! A write carries the token it was authenticated with (`Credential`). The edge decided
//! with the state it had; the state machine decides again at apply, with the state of
//! the entry's log index and the leader's time: a token revoked, expired or rotated out
//! before that index authorizes nothing, on every replica, whatever a lagging replica
//! believed when it forwarded the write.

use super::{Context, Handled};
use crate::state::State;
use corral_model::ids::{NodeId, TokenId};
use corral_model::limits::{
    DEFAULT_BOOTSTRAP_TTL_MS, DEFAULT_TOKEN_TTL_MS, MAX_BOOTSTRAP_USES, MAX_NODES,
    MAX_PLATFORM_TOKENS, MAX_ROTATION_GRACE_MS, MAX_TOKENS_PER_TENANT, MAX_TOKEN_HASH_BYTES,
    MAX_TOKEN_TTL_MS,
};
use corral_model::names::{validate_name, validate_token_text};
use corral_model::{
    Command, Credential, Entry, Event, PreviousSecret, Principal, Rejection, Token, TokenScope,
};

/// The name a node's own credential is listed under; `:` keeps it apart from the
/// names clients choose (`validate_name` allows no colon).
pub fn node_token_name(node_name: &str) -> String {
    format!("node:{node_name}")
}

impl State {
    /// Whether the entry's principal may propose its command at all, and whether the
    /// credential it came with still stands at `at_ms`.
    pub(super) fn authorize_entry(&self, entry: &Entry, at_ms: u64) -> Result<(), Rejection> {
        if entry.principal.is_read_only() {
            return Err(Rejection::denied(format!(
                "{} is read-only",
                entry.principal.describe()
            )));
        }
        let allowed = match &entry.principal {
            Principal::Node(_) => matches!(
                entry.command,
                Command::ReplicaStarted { .. }
                    | Command::ReplicaExited { .. }
                    | Command::ReplicaLost { .. }
                    | Command::NodeDriverReport { .. }
                    | Command::NodeDriverUpgradeFailed { .. }
                    | Command::NodeSetAgentAddress { .. }
                    | Command::NodeRecovered { .. }
            ),
            Principal::Bootstrap => matches!(entry.command, Command::NodeRegister(_)),
            _ => true,
        };
        if !allowed {
            return Err(Rejection::denied(format!(
                "{} may not {}",
                entry.principal.describe(),
                entry.command.name()
            )));
        }
        match entry.credential {
            Some(credential) => self.check_credential(credential, &entry.principal, at_ms),
            None => Ok(()),
        }
    }

    fn check_credential(
        &self,
        credential: Credential,
        principal: &Principal,
        at_ms: u64,
    ) -> Result<(), Rejection> {
        let token = self
            .token_by_id(credential.token)
            .ok_or_else(|| Rejection::unauthenticated("the token was revoked"))?;
        if !token.accepts(credential.generation, at_ms) {
            return Err(Rejection::unauthenticated(
                "the token expired or its secret was rotated out",
            ));
        }
        if token.scope.principal() != *principal {
            return Err(Rejection::unauthenticated(
                "the token does not stand for this principal",
            ));
        }
        Ok(())
    }

    pub(super) fn token_create(
        &mut self,
        context: &mut Context,
        name: &str,
        hash: &str,
        scope: &TokenScope,
        ttl_ms: Option<u64>,
    ) -> Handled {
        if !context.principal.may_manage_tokens_of(scope) {
            return Err(Rejection::denied(format!(
                "{} may not create {} tokens",
                context.principal.describe(),
                scope.role_name()
            )));
        }
        validate_name("name", name)?;
        self.validate_new_hash(hash)?;
        // An expired token's name may be taken again; expired tokens count against no
        // limit (they are removed when their name is reused, or revoked).
        let expired = self
            .tokens
            .get(name)
            .is_some_and(|token| !token.live_at(context.at_ms));
        if self.tokens.contains_key(name) && !expired {
            return Err(Rejection::exists("token", name));
        }
        let expires_at_ms = match (scope, ttl_ms) {
            (TokenScope::Bootstrap { uses_left }, ttl) => {
                if *uses_left == 0 || *uses_left > MAX_BOOTSTRAP_USES {
                    return Err(Rejection::invalid(
                        "uses",
                        format!("must be 1..={MAX_BOOTSTRAP_USES}"),
                    ));
                }
                Some(context.at_ms + checked_ttl(ttl.unwrap_or(DEFAULT_BOOTSTRAP_TTL_MS))?)
            }
            (TokenScope::Tenant { .. }, ttl) => {
                Some(context.at_ms + checked_ttl(ttl.unwrap_or(DEFAULT_TOKEN_TTL_MS))?)
            }
            // Platform tokens may be given no expiry: the admin's own break-glass token.
            (_, Some(ttl)) => Some(context.at_ms + checked_ttl(ttl)?),
            (_, None) => None,
        };
        match scope.tenant() {
            Some(tenant_id) => {
                if !self.tenants.contains_key(&tenant_id) {
                    return Err(Rejection::not_found("tenant", tenant_id));
                }
                let count = self
                    .tokens
                    .values()
                    .filter(|token| token.tenant() == Some(tenant_id))
                    .filter(|token| token.live_at(context.at_ms))
                    .count();
                if count >= MAX_TOKENS_PER_TENANT {
                    return Err(Rejection::limit("tokens per tenant", MAX_TOKENS_PER_TENANT));
                }
            }
            None => {
                let count = self
                    .tokens
                    .values()
                    .filter(|token| token.tenant().is_none())
                    .filter(|token| !matches!(token.scope, TokenScope::Node(_)))
                    .filter(|token| token.live_at(context.at_ms))
                    .count();
                if count >= MAX_PLATFORM_TOKENS {
                    return Err(Rejection::limit("platform tokens", MAX_PLATFORM_TOKENS));
                }
            }
        }
        if expired {
            self.remove_token(context, name);
        }
        self.insert_token(context, name, hash, scope.clone(), expires_at_ms);
        Ok(None)
    }

    pub(super) fn token_rotate(
        &mut self,
        context: &mut Context,
        name: &str,
        hash: &str,
        grace_ms: u64,
    ) -> Handled {
        let token = self
            .tokens
            .get(name)
            .ok_or_else(|| Rejection::not_found("token", name))?;
        self.require_token_manager(context.principal, token)?;
        if grace_ms > MAX_ROTATION_GRACE_MS {
            return Err(Rejection::invalid(
                "grace_ms",
                format!("at most {MAX_ROTATION_GRACE_MS}"),
            ));
        }
        self.validate_new_hash(hash)?;
        let id = token.id;
        let old_hash = token.hash.clone();
        let dropped = token
            .previous
            .as_ref()
            .map(|previous| previous.hash.clone());
        if let Some(dropped) = dropped {
            self.token_hashes.remove(&dropped);
        }
        self.token_hashes.remove(&old_hash);
        let token = self.tokens.get_mut(name).unwrap_or_else(|| unreachable!());
        token.previous = (grace_ms > 0).then(|| PreviousSecret {
            hash: old_hash.clone(),
            valid_until_ms: context.at_ms + grace_ms,
        });
        token.hash = hash.to_string();
        token.generation += 1;
        let tenant = token.tenant();
        if grace_ms > 0 {
            self.token_hashes.insert(old_hash, id);
        }
        self.token_hashes.insert(hash.to_string(), id);
        context.emit(
            tenant,
            Event::TokenRotated {
                name: name.to_string(),
            },
        );
        Ok(None)
    }

    pub(super) fn token_revoke(&mut self, context: &mut Context, name: &str) -> Handled {
        let token = self
            .tokens
            .get(name)
            .ok_or_else(|| Rejection::not_found("token", name))?;
        self.require_token_manager(context.principal, token)?;
        self.remove_token(context, name);
        Ok(None)
    }

    /// Tokens of another tenant are not found; a tenant's own tokens need its admin
    /// role; node credentials are the platform admin's to revoke.
    fn require_token_manager(&self, principal: &Principal, token: &Token) -> Result<(), Rejection> {
        let manages = principal.may_manage_tokens_of(&token.scope)
            || (principal.is_admin() && matches!(token.scope, TokenScope::Node(_)));
        if manages {
            return Ok(());
        }
        match token.tenant() {
            Some(tenant) if principal.may_read(tenant) => Err(Rejection::denied(
                "only the tenant's admin may manage its tokens",
            )),
            _ => Err(Rejection::not_found("token", &token.name)),
        }
    }

    fn validate_new_hash(&self, hash: &str) -> Result<(), Rejection> {
        validate_token_text("hash", hash, MAX_TOKEN_HASH_BYTES)?;
        if self.token_hashes.contains_key(hash) {
            return Err(Rejection::invalid(
                "hash",
                "another token has the same hash",
            ));
        }
        Ok(())
    }

    fn insert_token(
        &mut self,
        context: &mut Context,
        name: &str,
        hash: &str,
        scope: TokenScope,
        expires_at_ms: Option<u64>,
    ) -> TokenId {
        self.counters.token += 1;
        let id = TokenId(self.counters.token);
        let tenant = scope.tenant();
        let token = Token {
            id,
            name: name.to_string(),
            hash: hash.to_string(),
            scope,
            created_at_ms: context.at_ms,
            expires_at_ms,
            generation: 0,
            previous: None,
        };
        self.tokens.insert(name.to_string(), token);
        self.token_ids.insert(id, name.to_string());
        self.token_hashes.insert(hash.to_string(), id);
        context.emit(
            tenant,
            Event::TokenCreated {
                name: name.to_string(),
            },
        );
        id
    }

    /// Remove a token and its index entries (revocation, a deleted tenant or node).
    pub(super) fn remove_token(&mut self, context: &mut Context, name: &str) {
        let Some(token) = self.tokens.remove(name) else {
            return;
        };
        self.token_ids.remove(&token.id);
        self.token_hashes.remove(&token.hash);
        if let Some(previous) = &token.previous {
            self.token_hashes.remove(&previous.hash);
        }
        context.emit(
            token.tenant(),
            Event::TokenRevoked {
                name: name.to_string(),
            },
        );
    }

    /// Checks for a registration that installs a node credential: the hash is new and,
    /// under a bootstrap token, the token still has a use left.
    pub(super) fn validate_node_credential(
        &self,
        context: &Context,
        hash: &str,
    ) -> Result<(), Rejection> {
        validate_token_text("credential_hash", hash, MAX_TOKEN_HASH_BYTES)?;
        self.validate_new_hash(hash)?;
        if self.tokens.len() >= MAX_NODES + MAX_PLATFORM_TOKENS * 2 {
            return Err(Rejection::limit("tokens", MAX_NODES));
        }
        if matches!(context.principal, Principal::Bootstrap) && context.credential.is_none() {
            return Err(Rejection::unauthenticated(
                "a bootstrap registration must name its bootstrap token",
            ));
        }
        Ok(())
    }

    /// Give `node` the credential `hash` (replacing one it had: a replaced machine
    /// bootstrapped again), and use up one use of the bootstrap token that asked.
    pub(super) fn install_node_credential(
        &mut self,
        context: &mut Context,
        node: NodeId,
        node_name: &str,
        hash: &str,
    ) {
        let name = node_token_name(node_name);
        self.remove_token(context, &name);
        self.insert_token(context, &name, hash, TokenScope::Node(node), None);
        let Some(credential) = context.credential else {
            return;
        };
        let Some(bootstrap_name) = self.token_ids.get(&credential.token).cloned() else {
            return;
        };
        let used_up = match self.tokens.get_mut(&bootstrap_name) {
            Some(Token {
                scope: TokenScope::Bootstrap { uses_left },
                ..
            }) => {
                *uses_left = uses_left.saturating_sub(1);
                *uses_left == 0
            }
            _ => false,
        };
        if used_up {
            self.remove_token(context, &bootstrap_name);
        }
    }
}

fn checked_ttl(ttl_ms: u64) -> Result<u64, Rejection> {
    if ttl_ms == 0 || ttl_ms > MAX_TOKEN_TTL_MS {
        return Err(Rejection::invalid(
            "ttl_ms",
            format!("must be 1..={MAX_TOKEN_TTL_MS}"),
        ));
    }
    Ok(ttl_ms)
}

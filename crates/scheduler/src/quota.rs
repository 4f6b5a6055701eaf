//! Tenant quotas during a round: what each tenant holds (from the state) plus what the
//! round has placed for it so far must stay within its quota, as the plan applier
//! checks. The room left is kept per tenant, so a check is one lookup. Work in a
//! tenant's own dedicated pool does not count against its quota.

use crate::capacity::{replica_slots, saturating_sub};
use corral_model::ids::{PoolId, TenantId};
use corral_model::Resources;
use corral_state::State;
use std::collections::BTreeMap;

pub(crate) struct QuotaLedger<'a> {
    state: &'a State,
    /// Quota minus use (state) minus what this round placed, per tenant seen so far.
    room: BTreeMap<TenantId, Resources>,
}

impl<'a> QuotaLedger<'a> {
    pub(crate) fn new(state: &'a State) -> Self {
        QuotaLedger {
            state,
            room: BTreeMap::new(),
        }
    }

    /// How many more replicas of `per_replica` the tenant's quota has room for; zero
    /// for a tenant that no longer exists; no bound in the tenant's own pool.
    pub(crate) fn replicas_allowed(
        &mut self,
        tenant: TenantId,
        pool: PoolId,
        per_replica: &Resources,
    ) -> u32 {
        let state = self.state;
        if !state.counts_against_quota(tenant, pool) {
            return u32::MAX;
        }
        let room = self.room.entry(tenant).or_insert_with(|| {
            state.tenant(tenant).map_or(Resources::ZERO, |record| {
                saturating_sub(&record.quota, &record.used)
            })
        });
        replica_slots(room, per_replica)
    }

    /// Count `resources` placed for the tenant (after `replicas_allowed` allowed them).
    pub(crate) fn record(&mut self, tenant: TenantId, pool: PoolId, resources: &Resources) {
        if !self.state.counts_against_quota(tenant, pool) {
            return;
        }
        if let Some(room) = self.room.get_mut(&tenant) {
            *room = saturating_sub(room, resources);
        }
    }
}

//! Streams one principal may hold open at once, per kind (Watch, JobLogs): one tenant
//! holding every log stream an agent serves, or thousands of watchers, left nothing for
//! the others. A slot is taken when a stream opens and given back when it is dropped
//! (the client went away or the stream ended).

use corral_model::Principal;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tonic::Status;

/// Watch streams one principal may hold open.
pub(crate) const MAX_WATCH_STREAMS_PER_PRINCIPAL: usize = 16;
/// JobLogs streams one principal may hold open (an agent serves 64 in all).
pub(crate) const MAX_LOG_STREAMS_PER_PRINCIPAL: usize = 16;

#[derive(Clone, Default)]
pub(crate) struct StreamSlots {
    held: Arc<Mutex<BTreeMap<Principal, usize>>>,
}

/// One open stream's slot; given back on drop.
pub(crate) struct StreamSlot {
    slots: StreamSlots,
    principal: Principal,
}

impl StreamSlots {
    /// A slot for `principal`, or ResourceExhausted when it holds `limit` already.
    pub(crate) fn take(
        &self,
        principal: &Principal,
        limit: usize,
        what: &str,
    ) -> Result<StreamSlot, Status> {
        let mut held = self.held.lock().unwrap_or_else(|error| error.into_inner());
        let count = held.entry(principal.clone()).or_insert(0);
        if *count >= limit {
            return Err(Status::resource_exhausted(format!(
                "at most {limit} {what} streams open at once per caller; close one first"
            )));
        }
        *count += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            principal: principal.clone(),
        })
    }

    #[cfg(test)]
    fn held_by(&self, principal: &Principal) -> usize {
        let held = self.held.lock().unwrap_or_else(|error| error.into_inner());
        held.get(principal).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        if let Some(count) = held.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::TenantId;

    #[test]
    fn a_principal_holds_at_most_its_limit_and_others_are_not_affected() {
        let slots = StreamSlots::default();
        let alpha = Principal::TenantUser(TenantId(1));
        let beta = Principal::TenantUser(TenantId(2));
        let held: Vec<StreamSlot> = (0..3)
            .map(|_| slots.take(&alpha, 3, "watch").unwrap())
            .collect();
        let Err(refused) = slots.take(&alpha, 3, "watch") else {
            panic!("a fourth slot");
        };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(slots.take(&beta, 3, "watch").is_ok());
        drop(held);
        assert_eq!(slots.held_by(&alpha), 0);
        assert!(slots.take(&alpha, 3, "watch").is_ok());
    }
}

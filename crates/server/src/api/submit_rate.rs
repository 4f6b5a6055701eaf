//! Job submissions per second, per tenant: a token bucket for each tenant that submits,
//! kept by each replica at the API edge (a wall-clock rate cannot live in the state
//! machine). The gate takes one submission for a SubmitJob or SubmitJobs call before its
//! message is read; SubmitJobs takes one more for each further spec after decoding and
//! before anything is converted or proposed. A refusal is `RESOURCE_EXHAUSTED` with the
//! time to wait. Each replica counts the calls it receives, so a tenant spreading its
//! calls over several replicas gets up to their number times the rate.

use crate::environment::Clock;
use corral_model::ids::TenantId;
use corral_model::limits::MAX_TENANTS;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tonic::Status;

/// One tenant's bucket, in thousandths of a submission (a rate of `r` per second
/// refills `r` of them every millisecond).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    millis_left: u64,
    updated_ms: u64,
}

#[derive(Clone)]
pub(crate) struct SubmitRate {
    buckets: Arc<Mutex<BTreeMap<TenantId, Bucket>>>,
    clock: Clock,
    per_second: u64,
    burst: u64,
}

impl SubmitRate {
    /// `per_second` submissions a second, up to `burst` at once (both at least 1).
    pub(crate) fn new(per_second: u32, burst: u32, clock: Clock) -> SubmitRate {
        SubmitRate {
            buckets: Arc::default(),
            clock,
            per_second: u64::from(per_second.max(1)),
            burst: u64::from(burst.max(1)),
        }
    }

    /// Refuses a call of more jobs than the bucket ever holds: it could never pass.
    pub(crate) fn check_call_size(&self, tenant: TenantId, jobs: u64) -> Result<(), Status> {
        if jobs > self.burst {
            return Err(Status::resource_exhausted(format!(
                "{tenant} may submit at most {} jobs at once ({} a second); split the call",
                self.burst, self.per_second
            )));
        }
        Ok(())
    }

    /// Takes `jobs` submissions from `tenant`'s bucket, or refuses (and takes nothing)
    /// when fewer are left.
    pub(crate) fn take(&self, tenant: TenantId, jobs: u64) -> Result<(), Status> {
        self.check_call_size(tenant, jobs)?;
        let now_ms = self.clock.now_ms();
        let full = self.burst * 1_000;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            millis_left: full,
            updated_ms: now_ms,
        });
        // A clock that went back refills nothing.
        let elapsed_ms = now_ms.saturating_sub(bucket.updated_ms);
        bucket.millis_left = bucket
            .millis_left
            .saturating_add(elapsed_ms.saturating_mul(self.per_second))
            .min(full);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        let wanted = jobs * 1_000;
        let answer = if bucket.millis_left >= wanted {
            bucket.millis_left -= wanted;
            Ok(())
        } else {
            let wait_ms = (wanted - bucket.millis_left).div_ceil(self.per_second);
            Err(Status::resource_exhausted(format!(
                "{tenant} submits at most {} jobs a second (bursts of {}); retry in {wait_ms} ms",
                self.per_second, self.burst
            )))
        };
        // Only tenants that authenticated have buckets, so there are at most as many as
        // tenants; should there be more, the idle (full) ones go.
        if buckets.len() > MAX_TENANTS {
            buckets.retain(|_, bucket| {
                bucket.millis_left + now_ms.saturating_sub(bucket.updated_ms) * self.per_second
                    < full
            });
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn clocked(per_second: u32, burst: u32) -> (SubmitRate, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let read = now.clone();
        let rate = SubmitRate::new(
            per_second,
            burst,
            Clock::from_fn(move || read.load(Ordering::SeqCst)),
        );
        (rate, now)
    }

    #[test]
    fn a_burst_then_the_rate_and_each_tenant_on_its_own() {
        let (rate, now) = clocked(10, 20);
        let (alpha, beta) = (TenantId(1), TenantId(2));
        assert!(rate.take(alpha, 20).is_ok(), "the burst");
        let refused = rate.take(alpha, 1).expect_err("the bucket is empty");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("retry in 100 ms"), "{refused}");
        assert!(rate.take(beta, 20).is_ok(), "beta has its own bucket");
        now.fetch_add(100, Ordering::SeqCst);
        assert!(rate.take(alpha, 1).is_ok(), "one refilled in 100 ms");
        assert!(rate.take(alpha, 1).is_err());
        now.fetch_add(10_000, Ordering::SeqCst);
        assert!(
            rate.take(alpha, 20).is_ok(),
            "refilled to the burst, no more"
        );
        assert!(rate.take(alpha, 1).is_err());
    }

    #[test]
    fn a_call_larger_than_the_burst_is_refused_and_takes_nothing() {
        let (rate, _) = clocked(10, 20);
        let refused = rate.take(TenantId(1), 21).expect_err("too many at once");
        assert!(refused.message().contains("split the call"), "{refused}");
        assert!(rate.take(TenantId(1), 20).is_ok());
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let (rate, now) = clocked(10, 1);
        assert!(rate.take(TenantId(1), 1).is_ok());
        now.fetch_sub(60_000, Ordering::SeqCst);
        assert!(rate.take(TenantId(1), 1).is_err());
    }
}

//! Failed authentication attempts per source address (Nomad and etcd both rate limit
//! failed logins per client). A token this replica knows costs a map look-up and is
//! always answered; the expensive case is a token it does not know, which may wait for
//! the replica to catch up and for the leader to confirm. A source that keeps presenting
//! bad tokens loses that slow path: its unknown tokens are refused at once, while its
//! good tokens (other clients behind the same address) keep working. A token bucket
//! per address: `BURST` failures at once, then one per `REFILL_MS`; at most
//! `MAX_SOURCES` addresses are tracked, the longest-quiet forgotten first. Calls
//! without an address (a simulated network) are not limited.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::Status;

/// Failures a source may have in a burst.
const BURST: u32 = 20;
/// One more failure is allowed per this interval.
const REFILL_MS: u64 = 500;
/// Sources tracked at once.
const MAX_SOURCES: usize = 4_096;

#[derive(Clone, Copy)]
struct Bucket {
    /// Failures still allowed.
    allowance: u32,
    /// When `allowance` was last computed.
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let elapsed_ms = now.saturating_duration_since(self.at).as_millis() as u64;
        let refill = (elapsed_ms / REFILL_MS).min(u64::from(BURST)) as u32;
        if refill == 0 {
            return self;
        }
        Bucket {
            allowance: (self.allowance + refill).min(BURST),
            at: now,
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct FailedAttempts {
    buckets: Arc<Mutex<BTreeMap<IpAddr, Bucket>>>,
}

impl FailedAttempts {
    /// Whether `source` may still take the slow path for an unknown token.
    pub(crate) fn check(&self, source: Option<IpAddr>) -> Result<(), Status> {
        let Some(source) = source else {
            return Ok(());
        };
        let now = Instant::now();
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        match buckets.get(&source) {
            Some(bucket) if bucket.refilled(now).allowance == 0 => Err(Status::unauthenticated(
                "unknown token, and too many failed attempts from this address to wait for it; \
                 slow down",
            )),
            _ => Ok(()),
        }
    }

    /// Count one failure against `source`.
    pub(crate) fn record(&self, source: Option<IpAddr>) {
        let Some(source) = source else {
            return;
        };
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            let quietest = buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.at)
                .map(|(address, _)| *address);
            if let Some(quietest) = quietest {
                buckets.remove(&quietest);
            }
        }
        let bucket = buckets
            .get(&source)
            .copied()
            .unwrap_or(Bucket {
                allowance: BURST,
                at: now,
            })
            .refilled(now);
        buckets.insert(
            source,
            Bucket {
                allowance: bucket.allowance.saturating_sub(1),
                at: bucket.at,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_refused_after_its_burst_and_others_are_not() {
        let attempts = FailedAttempts::default();
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..BURST {
            assert!(attempts.check(Some(bad)).is_ok());
            attempts.record(Some(bad));
        }
        let refused = attempts.check(Some(bad)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(attempts.check(Some(good)).is_ok());
        assert!(attempts.check(None).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let attempts = FailedAttempts::default();
        for index in 0..(MAX_SOURCES as u32 + 100) {
            attempts.record(Some(IpAddr::from(index.to_be_bytes())));
        }
        assert!(attempts.buckets.lock().unwrap().len() <= MAX_SOURCES);
    }
}

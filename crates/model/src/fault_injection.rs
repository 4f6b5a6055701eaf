//! Deliberate bugs, to prove that the simulation's checks bite. They exist only when the
//! crate is built with the `fault-injection` feature (only `simulations` asks for it),
//! and even then stay off until the simulation binary is told to turn one on.

#[cfg(feature = "fault-injection")]
static SKIP_CAPACITY_CHECKS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether capacity is ignored, both where the scheduler plans and where the state
/// machine re-checks a plan (the bug a fit re-check exists to stop).
#[inline]
pub fn skip_capacity_checks() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        SKIP_CAPACITY_CHECKS.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        false
    }
}

/// Turn the capacity bug on for this process.
#[cfg(feature = "fault-injection")]
pub fn enable_skip_capacity_checks() {
    SKIP_CAPACITY_CHECKS.store(true, std::sync::atomic::Ordering::Relaxed);
}

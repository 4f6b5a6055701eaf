//! The async runtime openraft runs on: tokio, with one difference. openraft draws its
//! randomized election timeouts and tick jitter from `AsyncRuntime::thread_rng`; tokio's
//! runtime takes that from the operating system, so two runs of the same simulation seed
//! would elect different leaders. `SeededRuntime` draws from a seed carried by the
//! current task when there is one (the simulation starts each replica inside
//! `SeededRuntime::scope`), and from the operating system otherwise (every real replica).
//!
//! The seed travels like openraft's own `DeterministicRng`: every spawn gives the child a
//! seed mixed from the parent's, and every draw advances the parent's, so a replica's
//! whole tree of raft tasks draws one reproducible sequence. Unlike `DeterministicRng`
//! it never panics outside a scope, which a production replica always is.

use openraft::rt::{AsyncRuntime, OptionalSend, Select2, Select3, Select4};
use openraft_rt_tokio::TokioRuntime;
use rand_for_openraft::rngs::SmallRng;
use rand_for_openraft::SeedableRng;
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

tokio::task_local! {
    static SEED: Cell<u64>;
}

/// Golden ratio fractional bits: the mixing constant for a spawned child's seed.
const CHILD_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
/// sqrt(2) fractional bits: the mixing constant for advancing the parent's seed.
const ADVANCE_GAMMA: u64 = 0x6a09_e667_f3bc_c908;

/// SplitMix64: a bijective mixer, so distinct seeds stay distinct.
fn split_mix(seed: u64, gamma: u64) -> u64 {
    let mixed = seed.wrapping_add(gamma);
    let mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_133f_11eb);
    mixed ^ (mixed >> 31)
}

/// How many times raft drew randomness or spawned a task outside a seeded scope, in
/// this process. Always growing on a real replica; a simulation reads it before and
/// after a run and must see no change (a draw from the operating system would make the
/// seed replay differently).
static UNSEEDED_USES: AtomicU64 = AtomicU64::new(0);

/// Raft's unseeded draws and spawns so far in this process.
pub fn unseeded_uses() -> u64 {
    UNSEEDED_USES.load(Ordering::Relaxed)
}

/// The current task's seed, advanced; None outside a seeded scope.
fn take_seed() -> Option<u64> {
    let seed = SEED
        .try_with(|cell| {
            let seed = cell.get();
            cell.set(split_mix(seed, ADVANCE_GAMMA));
            seed
        })
        .ok();
    if seed.is_none() {
        UNSEEDED_USES.fetch_add(1, Ordering::Relaxed);
    }
    seed
}

/// tokio, with reproducible randomness inside `SeededRuntime::scope`.
#[derive(Debug)]
pub struct SeededRuntime {
    inner: TokioRuntime,
}

impl SeededRuntime {
    /// Run `future` (and every raft task it spawns) with randomness drawn from `seed`.
    pub fn scope<F: Future>(
        seed: u64,
        future: F,
    ) -> tokio::task::futures::TaskLocalFuture<Cell<u64>, F> {
        SEED.scope(Cell::new(seed), future)
    }
}

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match take_seed() {
            Some(seed) => {
                TokioRuntime::spawn(SEED.scope(Cell::new(split_mix(seed, CHILD_GAMMA)), future))
            }
            None => TokioRuntime::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn select2<A, B>(
        a: A,
        b: B,
    ) -> impl Future<Output = Select2<A::Output, B::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
    {
        TokioRuntime::select2(a, b)
    }

    fn select3<A, B, C>(
        a: A,
        b: B,
        c: C,
    ) -> impl Future<Output = Select3<A::Output, B::Output, C::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
    {
        TokioRuntime::select3(a, b, c)
    }

    fn select4<A, B, C, D>(
        a: A,
        b: B,
        c: C,
        d: D,
    ) -> impl Future<Output = Select4<A::Output, B::Output, C::Output, D::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
        D: Future + OptionalSend,
    {
        TokioRuntime::select4(a, b, c, d)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        match take_seed() {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => rand_for_openraft::make_rng(),
        }
    }

    fn new(threads: usize) -> Self {
        SeededRuntime {
            inner: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }

    fn spawn_blocking<F, T>(work: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        TokioRuntime::spawn_blocking(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_for_openraft::RngExt;

    async fn draws() -> Vec<u64> {
        let mut first = SeededRuntime::thread_rng();
        let child = SeededRuntime::spawn(async {
            let mut rng = SeededRuntime::thread_rng();
            rng.random::<u64>()
        });
        vec![first.random(), child.await.expect("child task")]
    }

    #[tokio::test]
    async fn a_seeded_scope_draws_the_same_numbers_twice() {
        let once = SeededRuntime::scope(7, draws()).await;
        let twice = SeededRuntime::scope(7, draws()).await;
        let other_seed = SeededRuntime::scope(8, draws()).await;
        assert_eq!(once, twice);
        assert_ne!(once, other_seed);
        assert_ne!(once[0], once[1], "a child draws from its own sequence");
    }

    #[tokio::test]
    async fn outside_a_scope_it_still_draws() {
        // Production replicas never enter a scope; this must not panic.
        let values = draws().await;
        assert_eq!(values.len(), 2);
    }
}

//! Tokens with a lifecycle under faults: the token client creates tenant tokens
//! through the admin API (some living a few seconds), and in each round races writes
//! under one of them (job submissions and terminations of its tenant, each sent to a
//! random replica, which forwards it if it does not lead) against its revocation, its
//! rotation without grace, its rotation with a grace period, or its expiry. Writes
//! keep coming after the token is gone (with the old secret, and with the new one after
//! a rotation), so some reach the state machine after the change: a follower that has
//! not applied it yet, or the leader before the change committed, let them through and
//! the state machine must refuse them at apply. `token_check` judges every applied
//! entry; the calls and replies here are only traced.

use crate::managers::{manager_address, mix, EPOCH_MS};
use crate::options::RunPlan;
use crate::recorder::Recorder;
use crate::workload::{admin_client, client_options, resources, wait_for_world, SharedWorld};
use corral_client::{pb, ClientOptions, CorralClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::{Cell, RefCell};
use std::time::Duration;

/// Rounds stop this long before the fault phase ends, so the heal phase settles only
/// what the fault phase left.
const STOP_BEFORE_FAULT_END: Duration = Duration::from_secs(3);
/// Writes raced against one lifecycle change (a few more follow it).
const RACE_WRITES: usize = 8;

/// What a round does to its token.
#[derive(Clone, Copy, Debug)]
enum Change {
    Revoke,
    RotateWithoutGrace,
    RotateWithGrace { grace_seconds: u64 },
    Expire,
}

/// A write under one secret, to one replica (which may forward it to the leader).
struct Writer {
    client: CorralClient,
    label: &'static str,
    replica: u64,
}

/// The token client's state: the round's tenant and the jobs its writes created.
struct TokenRound<'a> {
    plan: &'a RunPlan,
    recorder: &'a Recorder,
    round: u64,
    public_pool: u64,
    writes: Cell<u64>,
    writers: Cell<u64>,
    jobs: RefCell<Vec<u64>>,
}

impl TokenRound<'_> {
    fn writer(&self, secret: &str, label: &'static str, replica: u64) -> Option<Writer> {
        // Each writer its own request-id sequence: two sharing one would send a second
        // command under an id the first already used (refused as a reused id).
        self.writers.set(self.writers.get() + 1);
        let salt = 0x7000_0000 + self.round * 1_024 + self.writers.get();
        let options = ClientOptions {
            timeout: Duration::from_secs(2),
            max_attempts: 3,
            ..client_options(mix(self.plan.seed, salt))
        };
        CorralClient::connect(
            vec![manager_address(replica)],
            Some(secret.to_string()),
            options,
        )
        .ok()
        .map(|client| Writer {
            client,
            label,
            replica,
        })
    }

    /// One write: mostly a short job's submission, sometimes the termination of a job
    /// an earlier write of this round created.
    async fn write(&self, writer: &Writer, terminate: bool) {
        self.writes.set(self.writes.get() + 1);
        let last_job = self.jobs.borrow().last().copied();
        let outcome = match last_job {
            Some(job) if terminate => writer
                .client
                .terminate_job(pb::JobRef { job })
                .await
                .map(|_| format!("terminated {job}")),
            _ => {
                let name = format!("token-round-{}-write-{}", self.round, self.writes.get());
                let spec = pb::JobSpec {
                    name,
                    pool: self.public_pool,
                    kind: "training".into(),
                    replicas: 1,
                    per_replica: Some(resources(1_000, 2_048, 1)),
                    accelerator_type: "nvidia-sim".into(),
                    priority: 1,
                    command: vec!["sim-run".into(), "100".into(), "0".into()],
                    ..Default::default()
                };
                writer.client.submit_job(spec).await.map(|submitted| {
                    self.jobs.borrow_mut().push(submitted.job);
                    format!("submitted {}", submitted.job)
                })
            }
        };
        self.recorder.trace(format!(
            "token round {} write with the {} secret at manager-{} -> {:?}",
            self.round,
            writer.label,
            writer.replica,
            outcome.map_err(|error| format!("{:?}: {}", error.code(), error.message()))
        ));
    }
}

/// The longest the client waits for a token's expiry (see `Change::Expire`).
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(10);

/// Sleep until `at` (simulated time since the run started), if it is ahead.
async fn sleep_until_elapsed(at: Duration) {
    if let Some(now) = turmoil::sim_elapsed() {
        if at > now {
            tokio::time::sleep(at - now).await;
        }
    }
}

fn elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// The token client: a round every second or two until shortly before the faults end.
pub async fn token_client(
    plan: RunPlan,
    world: SharedWorld,
    recorder: Recorder,
) -> Result<(), String> {
    let world = wait_for_world(&world).await;
    // Salt 6: every admin client has its own request-id sequence.
    let admin = admin_client(&plan, 6)?;
    let mut random = StdRng::seed_from_u64(mix(plan.seed, 83));
    let fault_end = Duration::from_secs(8 + plan.fault_seconds);
    let mut round = 0u64;
    while elapsed() + STOP_BEFORE_FAULT_END < fault_end {
        round += 1;
        tokio::time::sleep(Duration::from_millis(random.random_range(100..600))).await;
        let tenant = world.tenant_ids[random.random_range(0..world.tenant_ids.len())];
        let change = match random.random_range(0..8) {
            0..=2 => Change::Revoke,
            3..=4 => Change::RotateWithoutGrace,
            5 => Change::RotateWithGrace {
                grace_seconds: random.random_range(1..=2),
            },
            _ => Change::Expire,
        };
        let ttl_seconds = match change {
            Change::Expire => random.random_range(1..=3),
            // Long enough to outlive the round, short enough not to pile up.
            _ => 30,
        };
        let name = format!("sim-token-{round}");
        let created = admin
            .create_token(pb::CreateTokenRequest {
                name: name.clone(),
                tenant,
                ttl_seconds,
                ..Default::default()
            })
            .await;
        recorder.trace(format!(
            "token round {round}: create {name} for tenant {tenant} ttl {ttl_seconds} s ({change:?}) -> {:?}",
            created
                .as_ref()
                .map(|created| created.expires_at_ms)
                .map_err(|error| error.to_string())
        ));
        // Under a lost reply the token may exist with a secret nobody has: next round.
        let Ok(created) = created else {
            continue;
        };
        let state = TokenRound {
            plan: &plan,
            recorder: &recorder,
            round,
            public_pool: world.pools[1],
            writes: Cell::new(0),
            writers: Cell::new(0),
            jobs: RefCell::new(Vec::new()),
        };
        let pick = |random: &mut StdRng| random.random_range(1..=plan.replicas);
        // The token works: a first write under it.
        let replica = pick(&mut random);
        if let Some(writer) = state.writer(&created.secret, "old", replica) {
            state.write(&writer, false).await;
        }
        // The race: writes under the old secret around the change, most of them just
        // after it was sent (while it commits, a replica still lets them through).
        let change_delay_ms = random.random_range(0..30u64);
        let delays: Vec<(u64, u64, bool)> = (0..RACE_WRITES)
            .map(|_| {
                (
                    change_delay_ms + random.random_range(0..50u64) - 10.min(change_delay_ms),
                    pick(&mut random),
                    random.random_bool(0.25),
                )
            })
            .collect();
        let writers: Vec<Option<Writer>> = delays
            .iter()
            .map(|(_, replica, _)| state.writer(&created.secret, "old", *replica))
            .collect();
        let change_delay = Duration::from_millis(change_delay_ms);
        let new_secret = match change {
            Change::Expire => {
                // Writes from a little before the expiry (on the leader's clock, which
                // may be skewed) to a little after it.
                let expires = Duration::from_millis(created.expires_at_ms.saturating_sub(EPOCH_MS));
                // At most `MAX_EXPIRY_WAIT` ahead: an expiry stamped by a leader whose
                // clock stepped an hour forward is an hour away (skew and lifetime
                // alone keep it within seconds).
                let until = expires
                    .saturating_sub(Duration::from_millis(150))
                    .min(elapsed() + MAX_EXPIRY_WAIT);
                sleep_until_elapsed(until).await;
                race(&state, &writers, &delays, async { None }).await
            }
            Change::Revoke => {
                let revoke = async {
                    tokio::time::sleep(change_delay).await;
                    let revoked = admin
                        .revoke_token(pb::RevokeTokenRequest { name: name.clone() })
                        .await;
                    if revoked.is_ok() {
                        recorder.with(|recording| recording.token_changes_acknowledged += 1);
                    }
                    recorder.trace(format!(
                        "token round {round}: revoke {name} -> {:?}",
                        revoked.map(drop).map_err(|error| error.to_string())
                    ));
                    None
                };
                race(&state, &writers, &delays, revoke).await
            }
            Change::RotateWithoutGrace | Change::RotateWithGrace { .. } => {
                let grace_seconds = match change {
                    Change::RotateWithGrace { grace_seconds } => grace_seconds,
                    _ => 0,
                };
                let rotate = async {
                    tokio::time::sleep(change_delay).await;
                    let rotated = admin
                        .rotate_token(pb::RotateTokenRequest {
                            name: name.clone(),
                            grace_seconds,
                        })
                        .await;
                    recorder.trace(format!(
                        "token round {round}: rotate {name} grace {grace_seconds} s -> {:?}",
                        rotated
                            .as_ref()
                            .map(drop)
                            .map_err(|error| error.to_string())
                    ));
                    // With a grace period the old secret keeps working: no count.
                    if rotated.is_ok() && grace_seconds == 0 {
                        recorder.with(|recording| recording.token_changes_acknowledged += 1);
                    }
                    rotated.ok().map(|rotated| rotated.secret)
                };
                race(&state, &writers, &delays, rotate).await
            }
        };
        // At once after the change was acknowledged, the old secret at every replica:
        // a follower that has not applied the change yet lets the write through and
        // forwards it, and the state machine must refuse it (unless in a grace period).
        let burst: Vec<Writer> = (1..=plan.replicas)
            .filter_map(|replica| state.writer(&created.secret, "old", replica))
            .collect();
        futures::future::join_all(burst.iter().map(|writer| state.write(writer, false))).await;
        // Then the old secret again, and the new one after a rotation.
        let after = [
            (Some(created.secret.as_str()), "old"),
            (new_secret.as_deref(), "new"),
            (Some(created.secret.as_str()), "old"),
        ];
        for (secret, label) in after {
            let Some(secret) = secret else { continue };
            tokio::time::sleep(Duration::from_millis(random.random_range(0..300))).await;
            let replica = pick(&mut random);
            if let Some(writer) = state.writer(secret, label, replica) {
                let terminate = random.random_bool(0.25);
                state.write(&writer, terminate).await;
            }
        }
        if let Change::RotateWithGrace { grace_seconds } = change {
            // Past the grace period, the old secret once more.
            tokio::time::sleep(Duration::from_millis(grace_seconds * 1_000)).await;
            let replica = pick(&mut random);
            if let Some(writer) = state.writer(&created.secret, "old", replica) {
                state.write(&writer, false).await;
            }
        }
        if !matches!(change, Change::Revoke | Change::Expire) {
            // Rotated tokens go too, so live tokens do not pile up against the limit.
            let revoked = admin
                .revoke_token(pb::RevokeTokenRequest { name: name.clone() })
                .await;
            recorder.trace(format!(
                "token round {round}: revoke {name} -> {:?}",
                revoked.map(drop).map_err(|error| error.to_string())
            ));
            if let Some(secret) = &new_secret {
                let replica = pick(&mut random);
                if let Some(writer) = state.writer(secret, "new", replica) {
                    state.write(&writer, false).await;
                }
            }
        }
    }
    recorder.trace(format!("token client: {round} rounds"));
    Ok(())
}

/// The race writes (each after its delay, to its replica) alongside `change`; what the
/// change returned (a rotation's new secret).
async fn race(
    state: &TokenRound<'_>,
    writers: &[Option<Writer>],
    delays: &[(u64, u64, bool)],
    change: impl std::future::Future<Output = Option<String>>,
) -> Option<String> {
    let writes = writers
        .iter()
        .zip(delays)
        .filter_map(|(writer, (delay_ms, _, terminate))| {
            let writer = writer.as_ref()?;
            Some(async move {
                tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
                state.write(writer, *terminate).await;
            })
        });
    let (_, changed) = tokio::join!(futures::future::join_all(writes), change);
    changed
}

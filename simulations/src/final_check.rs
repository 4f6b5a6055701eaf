//! The checks after every fault is healed, through the admin API like any client: the
//! long-running work (inference, notebooks) is terminated, and then every job must reach
//! a final state within the bound; every submit the clients saw acknowledged must exist,
//! exactly once, under the id they were given.
//!
//! Liveness mode (issue 19): beside that, a probe job is submitted at once; within
//! [`LIVENESS_BOUND`] of the healing the cluster must have committed it (the submit is
//! acknowledged) and the scheduler must have placed it on a node, or the seed fails.

use crate::history::{now_ns, Call, History, Record, Reply};
use crate::managers::{manager_addresses, mix};
use crate::options::RunPlan;
use crate::workload::reply_of;
use crate::workload::{admin_client, client_options, SharedWorld};
use corral_client::{pb, CorralClient};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FINAL_STATES: [&str; 4] = ["Completed", "Failed", "Terminated", "Stopped"];
const POLL_PAUSE: Duration = Duration::from_millis(250);
/// Once every fault is healed, the cluster must commit a write and place pending work
/// within this much simulated time.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(10);
const PROBE_NAME: &str = "liveness-probe";

#[derive(Clone, Default)]
pub struct FinalReport(pub Arc<Mutex<Vec<String>>>);

impl FinalReport {
    fn problem(&self, message: String) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(message);
    }

    pub fn problems(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

async fn all_jobs(admin: &corral_client::CorralClient) -> Option<Vec<pb::Job>> {
    admin
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .ok()
        .map(|response| response.jobs)
}

/// Terminate a long-running job, as client 0 of the history (a client sees it).
/// Answers whether the outcome is known (an unknown one is tried again).
async fn terminate(admin: &corral_client::CorralClient, job: &pb::Job, history: &History) -> bool {
    let name = job
        .spec
        .as_ref()
        .map_or(String::new(), |spec| spec.name.clone());
    let called_at_ns = now_ns();
    let result = admin.terminate_job(pb::JobRef { job: job.id }).await;
    let reply = reply_of(&result, |_| Reply::Acknowledged);
    let known = reply != Reply::Unknown;
    history.push(Record {
        client: 0,
        call: Call::Terminate { name, job: job.id },
        reply,
        called_at_ns,
        returned_at_ns: now_ns(),
    });
    known
}

/// A job placed on a node, or past it.
fn placed(job: &pb::Job) -> bool {
    job.replicas.iter().any(|replica| replica.node != 0)
        || job.state == "Running"
        || job.state == "Completed"
}

/// The liveness probe: a small job of tenant 0 in the public pool, submitted until
/// acknowledged, then read until placed, all within `LIVENESS_BOUND` of `healed`.
async fn liveness_probe(plan: &RunPlan, world: &SharedWorld, report: &FinalReport) {
    let healed = tokio::time::Instant::now();
    let deadline = healed + LIVENESS_BOUND;
    let bound = LIVENESS_BOUND.as_secs();
    let world = loop {
        let set_up = world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(world) = set_up {
            break world;
        }
        if tokio::time::Instant::now() >= deadline {
            report.problem(format!(
                "liveness: the setup had not finished {bound} s after healing"
            ));
            return;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    };
    let client = match CorralClient::connect(
        manager_addresses(plan.replicas),
        Some(world.tenant_tokens[0].clone()),
        client_options(mix(plan.seed, 0x11fe)),
    ) {
        Ok(client) => client,
        Err(error) => {
            report.problem(format!("liveness: no probe client: {error}"));
            return;
        }
    };
    let spec = pb::JobSpec {
        name: PROBE_NAME.into(),
        pool: world.pools[1],
        kind: "training".into(),
        replicas: 1,
        // Little of anything, so capacity held by work still being terminated does
        // not keep it waiting.
        per_replica: Some(pb::Resources {
            cpu_millicores: 100,
            memory_mib: 64,
            accelerators: 0,
            disk_gib: 1,
            bandwidth_mbps: 1,
        }),
        command: vec!["sim-run".into(), "100".into(), "0".into()],
        priority: 1,
        ..Default::default()
    };
    // One request id for every attempt (the client's own retries share it too), so
    // a retry after a lost reply is answered with the first outcome.
    let mut last_error = String::new();
    let job = loop {
        match tokio::time::timeout_at(deadline, client.submit_job(spec.clone())).await {
            Ok(Ok(submitted)) => break submitted.job,
            Ok(Err(error)) if error.code() == tonic::Code::AlreadyExists => {
                report.problem(format!("liveness: the probe was refused: {error}"));
                return;
            }
            Ok(Err(error)) => last_error = error.to_string(),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            report.problem(format!(
                "liveness: no write committed within {bound} s after healing (the probe submit's last error: {last_error})"
            ));
            return;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    };
    let committed_ms = healed.elapsed().as_millis();
    let mut last_seen = String::from("never read");
    loop {
        match tokio::time::timeout_at(deadline, client.get_job(job)).await {
            Ok(Ok(found)) if placed(&found) => return,
            Ok(Ok(found)) => {
                last_seen = format!(
                    "{} ({}), queue position {}",
                    found.state, found.reason, found.queue_position
                )
            }
            Ok(Err(error)) => last_seen = error.to_string(),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            report.problem(format!(
                "liveness: the probe job {job}, committed {committed_ms} ms after healing, was not placed within {bound} s (last seen: {last_seen})"
            ));
            return;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

pub async fn final_check(
    plan: RunPlan,
    history: History,
    report: FinalReport,
    world: SharedWorld,
    settle_within: Duration,
) -> Result<(), String> {
    let (settled, ()) = futures::join!(
        settle(&plan, &history, &report, settle_within),
        liveness_probe(&plan, &world, &report)
    );
    settled
}

/// When the settling must be done: `settle_within` after the healing, or after the
/// last submit a tenant client made, if it made one after the healing (clients slowed
/// by the faults go on submitting in the liveness phase, and a training job submitted
/// then may fail and be retried for longer than what is left of the bound).
fn settle_deadline(
    history: &History,
    healed: tokio::time::Instant,
    healed_ns: u64,
    settle_within: Duration,
) -> (tokio::time::Instant, u64) {
    let last_submit_ns = history
        .records()
        .iter()
        .filter(|record| record.client != 0 && matches!(record.call, Call::Submit { .. }))
        .map(|record| record.returned_at_ns)
        .max()
        .unwrap_or(0);
    let submitted_after_ms = last_submit_ns.saturating_sub(healed_ns) / 1_000_000;
    (
        healed + settle_within + Duration::from_millis(submitted_after_ms),
        submitted_after_ms,
    )
}

/// Terminate the long-running work and wait for every job to be final.
async fn settle(
    plan: &RunPlan,
    history: &History,
    report: &FinalReport,
    settle_within: Duration,
) -> Result<(), String> {
    let admin = admin_client(plan, 4)?;
    let (healed, healed_ns) = (tokio::time::Instant::now(), now_ns());
    let mut jobs = Vec::new();
    let mut settled = false;
    let mut terminated = Vec::new();
    let mut submitted_after_ms;
    // A driver upgrade still rolling after the healing (a forcible one evicts work, which
    // spends no retry) moves jobs on by design: the bound counts from its end, but the
    // wait for it is bounded too.
    let mut upgrade_seen_at: Option<tokio::time::Instant> = None;
    loop {
        let mut deadline;
        (deadline, submitted_after_ms) = settle_deadline(history, healed, healed_ns, settle_within);
        if let Some(seen) = upgrade_seen_at {
            deadline = deadline.max((seen + settle_within).min(healed + 2 * settle_within));
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        if let Ok(pools) = admin.list_pools(pb::ListPoolsRequest::default()).await {
            if pools
                .pools
                .iter()
                .any(|pool| !pool.pending_upgrade.is_empty())
            {
                upgrade_seen_at = Some(tokio::time::Instant::now());
            }
        }
        let Some(listed) = all_jobs(&admin).await else {
            tokio::time::sleep(POLL_PAUSE).await;
            continue;
        };
        for job in &listed {
            let kind = job.spec.as_ref().map_or("", |spec| spec.kind.as_str());
            let long_running = kind == "inference" || kind == "notebook";
            if long_running
                && !FINAL_STATES.contains(&job.state.as_str())
                && !terminated.contains(&job.id)
                && terminate(&admin, job, history).await
            {
                terminated.push(job.id);
            }
        }
        settled = listed
            .iter()
            .all(|job| FINAL_STATES.contains(&job.state.as_str()));
        jobs = listed;
        if settled {
            break;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    if !settled {
        let unsettled: Vec<String> = jobs
            .iter()
            .filter(|job| !FINAL_STATES.contains(&job.state.as_str()))
            .take(5)
            .map(|job| {
                let replicas: Vec<String> = job
                    .replicas
                    .iter()
                    .map(|replica| format!("r{}@n{}:{}", replica.rank, replica.node, replica.state))
                    .collect();
                let kind = job.spec.as_ref().map_or("", |spec| spec.kind.as_str());
                format!(
                    "{} {kind} {} ({}) {replicas:?}",
                    job.id, job.state, job.reason
                )
            })
            .collect();
        let nodes: Vec<String> = admin
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .map(|listed| {
                listed
                    .nodes
                    .iter()
                    .map(|node| {
                        format!(
                            "{}:{}{}{} gpus {}/{}",
                            node.id,
                            node.status,
                            if node.schedulable {
                                ""
                            } else {
                                " unschedulable"
                            },
                            if node.upgrading.is_empty() {
                                String::new()
                            } else {
                                format!(" upgrading {}", node.upgrading)
                            },
                            node.allocated.as_ref().map_or(0, |used| used.accelerators),
                            node.capacity
                                .as_ref()
                                .map_or(0, |capacity| capacity.accelerators),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        report.problem(format!(
            "{} jobs not final {}s after healing (or after the last submit, {submitted_after_ms} ms after healing, or after the last driver upgrade ended), e.g. {unsettled:?}; nodes {nodes:?}",
            jobs.iter()
                .filter(|job| !FINAL_STATES.contains(&job.state.as_str()))
                .count(),
            settle_within.as_secs()
        ));
    }
    check_acknowledged_submits(history, &jobs, report);
    Ok(())
}

fn check_acknowledged_submits(history: &History, jobs: &[pb::Job], report: &FinalReport) {
    let mut by_name: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for job in jobs {
        if let Some(spec) = &job.spec {
            by_name.entry(spec.name.as_str()).or_default().push(job.id);
        }
    }
    for record in history.records() {
        let crate::history::Call::Submit { name } = &record.call else {
            continue;
        };
        let ids = by_name.get(name.as_str()).cloned().unwrap_or_default();
        match &record.reply {
            Reply::Submitted { job } if !ids.contains(job) => report.problem(format!(
                "acknowledged submit of {name} as job {job} is lost (jobs named so: {ids:?})"
            )),
            Reply::Refused { code, .. } if !ids.is_empty() => report.problem(format!(
                "refused submit of {name} ({code}) exists anyway as {ids:?}"
            )),
            _ => {}
        }
        if ids.len() > 1 {
            report.problem(format!("job {name} exists {} times: {ids:?}", ids.len()));
        }
    }
}

//! The checks after every fault is healed, through the admin API like any client: the
//! long-running work (inference, notebooks) is terminated, and then every job must reach
//! a final state within the bound; every submit the clients saw acknowledged must exist,
//! exactly once, under the id they were given.

use crate::history::{now_ns, Call, History, Record, Reply};
use crate::options::RunPlan;
use crate::workload::admin_client;
use crate::workload::reply_of;
use corral_client::pb;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FINAL_STATES: [&str; 4] = ["Completed", "Failed", "Terminated", "Stopped"];
const POLL_PAUSE: Duration = Duration::from_millis(250);

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

pub async fn final_check(
    plan: RunPlan,
    history: History,
    report: FinalReport,
    settle_within: Duration,
) -> Result<(), String> {
    let admin = admin_client(&plan, 4)?;
    let deadline = tokio::time::Instant::now() + settle_within;
    let mut jobs = Vec::new();
    let mut settled = false;
    let mut terminated = Vec::new();
    while tokio::time::Instant::now() < deadline {
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
                && terminate(&admin, job, &history).await
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
            "{} jobs not final {}s after healing, e.g. {unsettled:?}; nodes {nodes:?}",
            jobs.iter()
                .filter(|job| !FINAL_STATES.contains(&job.state.as_str()))
                .count(),
            settle_within.as_secs()
        ));
    }
    check_acknowledged_submits(&history, &jobs, &report);
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

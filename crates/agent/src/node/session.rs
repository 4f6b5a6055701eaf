//! One node's session with the managers, for one registration: registering (retried
//! with backoff until it succeeds), heartbeats to the leader with the node's measured
//! use, and the `WatchAssignments` stream, whose messages — and the managers' "unknown
//! node" — go to the node's loop as [`FromManagers`].

use super::context::NodeContext;
use crate::config::DriverVersions;
use crate::credential::{self, NodeCredential};
use crate::isolation::cgroups::ReplicaCgroup;
use crate::managers::link::{self, Failure, ManagerLink, CALL_TIMEOUT};
use crate::reconcile::ReplicaKey;
use crate::replica::{RunningReplica, RunningView};
use crate::usage::{simulated_accelerator_utilization, Measured, UsageTracker};
use crate::wire::pb;
use crate::wire::REQUEST_ID_HEADER;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// What the session tells the node's loop.
#[derive(Debug)]
pub(super) enum FromManagers {
    /// The node's whole desired state.
    Assignments(pb::NodeAssignments),
    /// The managers do not know the node id (e.g. their state was wiped): register again.
    NodeUnknown,
}

/// The heartbeat and assignment-stream tasks of one registration.
pub(super) struct Session {
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Starts heartbeating as `node_id` and watching its assignments; what the managers
    /// say goes to `events`.
    pub(super) fn start<E: From<FromManagers> + Send + 'static>(
        link: &Arc<ManagerLink>,
        ctx: &NodeContext,
        node_id: u64,
        running: RunningView,
        events: &mpsc::Sender<E>,
    ) -> Session {
        Session {
            tasks: vec![
                tokio::spawn(heartbeat_loop(
                    link.clone(),
                    ctx.clone(),
                    node_id,
                    running,
                    events.clone(),
                )),
                tokio::spawn(watch_loop(link.clone(), node_id, events.clone())),
            ],
        }
    }

    /// Stops its tasks.
    pub(super) fn end(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Registers the node (retrying forever with backoff) and returns its id and its own
/// credential, which later calls carry; None on shutdown. A node with a saved credential
/// presents it; one without presents the configured bootstrap token and saves the
/// credential it receives. A saved credential the managers refuse (revoked, or another
/// cluster's) is forgotten, and the bootstrap token used, if one is configured.
pub(super) async fn register(
    link: &ManagerLink,
    ctx: &NodeContext,
    installed: &DriverVersions,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(u64, NodeCredential)> {
    let request = pb::RegisterAgentNodeRequest {
        name: ctx.name.clone(),
        flavor: ctx.config.flavor.clone(),
        zone: ctx.config.zone.clone(),
        labels: ctx.config.labels.clone().into_iter().collect(),
        gpu_driver_version: installed.gpu_driver_version.clone(),
        npu_driver_version: installed.npu_driver_version.clone(),
        agent_address: ctx.agent_address.clone(),
        isolation: ctx.environment.processes.isolation(),
    };
    let root = ctx.dirs.root();
    let mut saved = credential::load(root);
    let mut backoff = link.backoff(Duration::from_millis(200), Duration::from_secs(5));
    let mut warned = false;
    // Numbers the registration attempts that got a definite answer: a retry after an
    // unknown outcome keeps its request id (a lost reply is answered with the first
    // outcome, not a second use of the token), but after a refusal (e.g. the flavor is
    // not defined yet) the next attempt is a new request, or the refusal is repeated.
    let mut attempt_number: u64 = 0;
    loop {
        let presented = match (&saved, &ctx.bootstrap_token) {
            (Some(saved), _) => saved.secret.clone(),
            (None, Some(bootstrap)) => bootstrap.clone(),
            (None, None) => {
                error!(
                    "{}: no credential in {} and no bootstrap token configured: create one \
                     with `corral token create NAME --role node-bootstrap` and set \
                     bootstrap_token_file",
                    ctx.name,
                    credential::path(root).display()
                );
                let _ = shutdown.wait_for(|stop| *stop).await;
                return None;
            }
        };
        if let Err(status) = link.set_credential(&presented) {
            error!("{}: unusable credential: {status}", ctx.name);
            let _ = shutdown.wait_for(|stop| *stop).await;
            return None;
        }
        // The same id on every retry of one bootstrap, so a retried registration whose
        // reply was lost gets the first answer, not a second use of the token.
        let request_id = registration_request_id(&ctx.name, &presented, attempt_number);
        let attempt = link.call(|mut stub| {
            let mut call = tonic::Request::new(request.clone());
            if let Ok(value) = request_id.parse() {
                call.metadata_mut().insert(REQUEST_ID_HEADER, value);
            }
            async move { stub.register_agent_node(call).await }
        });
        tokio::select! {
            result = attempt => match result {
                Ok(response) if response.node != 0 => {
                    let credential = NodeCredential {
                        secret: if response.credential.is_empty() {
                            presented
                        } else {
                            response.credential
                        },
                        log_key: response.log_key,
                    };
                    if saved.as_ref() != Some(&credential) {
                        if let Err(error) = credential::save(root, &credential) {
                            // The node works until the agent restarts; then it needs a
                            // new bootstrap token.
                            error!("{}: cannot save its credential: {error}", ctx.name);
                        }
                    }
                    if let Err(status) = link.set_credential(&credential.secret) {
                        error!("{}: unusable credential: {status}", ctx.name);
                    }
                    return Some((response.node, credential));
                }
                Ok(_) => warn!("{}: registration answered node id 0; retrying", ctx.name),
                Err(status)
                    if status.code() == tonic::Code::Unauthenticated
                        && saved.is_some()
                        && ctx.bootstrap_token.is_some() =>
                {
                    warn!(
                        "{}: its saved credential was refused ({}); bootstrapping again",
                        ctx.name,
                        status.message()
                    );
                    credential::forget(root);
                    saved = None;
                    continue;
                }
                Err(status) => {
                    if link::classify(&status) == Failure::Refused {
                        attempt_number += 1;
                    }
                    if warned {
                        debug!("{}: registration failed: {status}", ctx.name);
                    } else {
                        warned = true;
                        warn!("{}: cannot register yet ({status}); retrying", ctx.name);
                    }
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
}

/// A request id (hex) naming this node's `attempt`-th registration with this token.
fn registration_request_id(name: &str, token: &str, attempt: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"corral agent registration v1\0");
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(token.as_bytes());
    hasher.update(attempt.to_le_bytes());
    hex::encode(&hasher.finalize()[..16])
}

async fn heartbeat_loop<E: From<FromManagers>>(
    link: Arc<ManagerLink>,
    ctx: NodeContext,
    node_id: u64,
    running: RunningView,
    events: mpsc::Sender<E>,
) {
    let tracker = UsageTracker::default();
    let mut interval_ms = ctx.config.heartbeat_interval_ms;
    // Spread the virtual nodes of one process over the interval.
    let phase_ms = interval_ms * ctx.index as u64 / ctx.node_count.max(1) as u64;
    tokio::time::sleep(Duration::from_millis(phase_ms)).await;
    let mut failing = false;
    loop {
        let started = tokio::time::Instant::now();
        let replicas: Vec<(ReplicaKey, RunningReplica)> = running
            .lock()
            .map(|running| {
                running
                    .iter()
                    .map(|(key, replica)| (*key, replica.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let snapshot = ctx.environment.usage.snapshot().await;
        let measured = measure_cgroups(&ctx, &replicas).await;
        let uses = tracker.measure(&snapshot, &measured);
        let busy: Vec<u32> = replicas
            .iter()
            .flat_map(|(_, replica)| replica.device_indices.iter().copied())
            .collect();
        let request = pb::HeartbeatRequest {
            node: node_id,
            agent_address: ctx.agent_address.clone(),
            cpu_used_millicores: uses.iter().map(|used| used.cpu_millicores).sum(),
            memory_used_mib: uses.iter().map(|used| used.memory_mib).sum(),
            accelerator_utilization_percent: if ctx.config.simulate_accelerators {
                simulated_accelerator_utilization(&busy, ctx.config.accelerators)
            } else {
                snapshot.accelerator_utilization_percent.unwrap_or(0)
            },
            accelerators_measured: ctx.config.simulate_accelerators
                || snapshot.accelerator_utilization_percent.is_some(),
            replicas: uses
                .iter()
                .map(|used| pb::ReplicaUsage {
                    job: used.key.job,
                    rank: used.key.rank,
                    generation: used.key.generation,
                    pid: used.pid,
                    cpu_millicores: used.cpu_millicores,
                    memory_mib: used.memory_mib,
                    memory_peak_mib: used.memory_peak_mib,
                    oom_kills: used.oom_kills,
                })
                .collect(),
        };
        let result = link
            .call(|mut stub| {
                let request = request.clone();
                async move { stub.heartbeat(request).await }
            })
            .await;
        match result {
            Ok(response) => {
                if failing {
                    info!("{}: heartbeats reach {} again", ctx.name, link.current());
                    failing = false;
                }
                if response.heartbeat_interval_ms > 0 {
                    interval_ms = response.heartbeat_interval_ms.clamp(50, 60_000);
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                warn!(
                    "{}: the managers do not know node {node_id}: {status}",
                    ctx.name
                );
                let _ = events.send(FromManagers::NodeUnknown.into()).await;
                return;
            }
            Err(status) => {
                if !failing {
                    warn!("{}: heartbeat failed: {status}", ctx.name);
                    failing = true;
                } else {
                    debug!("{}: heartbeat failed: {status}", ctx.name);
                }
            }
        }
        tokio::time::sleep_until(started + Duration::from_millis(interval_ms)).await;
    }
}

/// Keeps a `WatchAssignments` stream open to the node's current manager, reopening it
/// (with backoff) when it fails or ends, and at once when the current manager changes.
async fn watch_loop<E: From<FromManagers>>(
    link: Arc<ManagerLink>,
    node_id: u64,
    events: mpsc::Sender<E>,
) {
    let mut backoff = link.backoff(Duration::from_millis(100), Duration::from_secs(5));
    let mut current = link.subscribe();
    loop {
        let address = current.borrow_and_update().clone();
        let opened = match link.stub() {
            Ok(mut stub) => tokio::time::timeout(
                CALL_TIMEOUT,
                stub.watch_assignments(pb::WatchAssignmentsRequest { node: node_id }),
            )
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("opening the watch"))),
            Err(status) => Err(status),
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::NotFound {
                    let _ = events.send(FromManagers::NodeUnknown.into()).await;
                    return;
                }
                debug!("watching assignments at {address}: {status}");
                if let Failure::Redirect(_) = link.after_failure(&status) {
                    continue;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let switched = loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(assignments)) => {
                        backoff.reset();
                        if events.send(FromManagers::Assignments(assignments).into()).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        debug!("the assignments stream from {address} ended");
                        break false;
                    }
                    Err(status) => {
                        debug!("the assignments stream from {address} failed: {status}");
                        break matches!(link.after_failure(&status), Failure::Redirect(_));
                    }
                },
                changed = current.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *current.borrow() != address {
                        break true;
                    }
                }
            }
        };
        if !switched {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// What each running replica's cgroup measured (file reads, so off the async threads
/// through the environment's blocking work); replicas without a cgroup are measured
/// from the `/proc` snapshot instead.
async fn measure_cgroups(
    ctx: &NodeContext,
    replicas: &[(ReplicaKey, RunningReplica)],
) -> Vec<Measured> {
    let targets: Vec<(ReplicaKey, u32, Option<ReplicaCgroup>)> = replicas
        .iter()
        .map(|(key, replica)| {
            let cgroup = (!replica.cgroup.is_empty())
                .then(|| ReplicaCgroup::from_dirs(replica.cgroup.clone()));
            (*key, replica.pid, cgroup)
        })
        .collect();
    let sample = move || {
        targets
            .into_iter()
            .map(|(key, pid, cgroup)| Measured {
                key,
                pid,
                cgroup: cgroup.and_then(|cgroup| cgroup.sample()),
            })
            .collect::<Vec<Measured>>()
    };
    ctx.environment
        .blocking
        .run(sample)
        .await
        .unwrap_or_default()
}

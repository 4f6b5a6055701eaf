//! One node's session with the managers, for one registration: registering (retried
//! with backoff until it succeeds), heartbeats to the leader with the node's measured
//! use, and the `WatchAssignments` stream, whose messages — and the managers' "unknown
//! node" — go to the node's loop as [`FromManagers`].

use super::context::NodeContext;
use crate::config::DriverVersions;
use crate::managers::link::{Failure, ManagerLink, CALL_TIMEOUT};
use crate::reconcile::ReplicaKey;
use crate::replica::{RunningReplica, RunningView};
use crate::usage::{simulated_accelerator_utilization, UsageTracker};
use crate::wire::pb;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

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

/// Registers the node (retrying forever with backoff); None on shutdown.
pub(super) async fn register(
    link: &ManagerLink,
    ctx: &NodeContext,
    installed: &DriverVersions,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<u64> {
    let request = pb::RegisterAgentNodeRequest {
        name: ctx.name.clone(),
        flavor: ctx.config.flavor.clone(),
        zone: ctx.config.zone.clone(),
        labels: ctx.config.labels.clone().into_iter().collect(),
        gpu_driver_version: installed.gpu_driver_version.clone(),
        npu_driver_version: installed.npu_driver_version.clone(),
        agent_address: ctx.agent_address.clone(),
    };
    let mut backoff = link.backoff(Duration::from_millis(200), Duration::from_secs(5));
    let mut warned = false;
    loop {
        let attempt = link.call(|mut stub| {
            let request = request.clone();
            async move { stub.register_agent_node(request).await }
        });
        tokio::select! {
            result = attempt => match result {
                Ok(response) if response.node != 0 => return Some(response.node),
                Ok(_) => warn!("{}: registration answered node id 0; retrying", ctx.name),
                Err(status) if !warned => {
                    warned = true;
                    warn!("{}: cannot register yet ({status}); retrying", ctx.name);
                }
                Err(status) => debug!("{}: registration failed: {status}", ctx.name),
            },
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
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
        let pids: Vec<(ReplicaKey, u32)> = replicas
            .iter()
            .map(|(key, replica)| (*key, replica.pid))
            .collect();
        let uses = tracker.measure(&snapshot, &pids);
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
                0
            },
            replicas: uses
                .iter()
                .map(|used| pb::ReplicaUsage {
                    job: used.key.job,
                    rank: used.key.rank,
                    generation: used.key.generation,
                    pid: used.pid,
                    cpu_millicores: used.cpu_millicores,
                    memory_mib: used.memory_mib,
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

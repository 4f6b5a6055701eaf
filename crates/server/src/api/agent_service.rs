//! The AgentService gRPC service: node agents register their node, heartbeat to the
//! leader, follow their node's desired state, and report replica starts, exits and
//! driver versions. Reports become commands proposed as the agent principal, so the
//! state machine decides (and refuses stale reports) the same way on every replica.

use crate::api::auth::{hash_token, Authenticator};
use crate::api::convert;
use crate::api::request_ids::client_request_id;
use crate::leader::liveness::{Liveness, NodeUsage};
use crate::replication::proposer::{leader_only, Proposer};
use corral_model::command::NodeRegister;
use corral_model::limits::{
    MAX_DRIVER_VERSION_BYTES, MAX_NAME_BYTES, MAX_UPGRADE_OUTPUT_TAIL_BYTES,
};
use corral_model::{Caller, Command, NodeId, Principal, ReplicaIsolation};
use corral_state::Created;
use corral_store::{ApplyOutcome, StateMachineStore};
use corral_wire::headers::REQUEST_ID_HEADER;
use corral_wire::pb;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Assignment messages buffered per agent stream; a slow agent gets the latest state
/// when it catches up, older ones are dropped (each message is the whole state).
const ASSIGNMENT_BUFFER: usize = 4;
/// At most one assignments message per node per this interval: a busy node hosts
/// hundreds of replicas and every start or exit changes its view, so without a bound
/// each message would cost a pass over all of them, per applied batch. The first change
/// after a quiet spell is sent at once, so an idle cluster sees no delay.
const MIN_ASSIGNMENT_INTERVAL: Duration = Duration::from_millis(20);
/// Replica usage entries read from one heartbeat.
const MAX_REPLICAS_PER_HEARTBEAT: usize = 4096;

#[derive(Clone)]
pub(crate) struct AgentService {
    pub(crate) state_machine: StateMachineStore,
    pub(crate) proposer: Proposer,
    pub(crate) authenticator: Authenticator,
    pub(crate) liveness: Liveness,
    pub(crate) heartbeat_interval_ms: u64,
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::NodeAssignments, Status>> + Send>>;

/// The node a node credential speaks for, when it is `node`: a credential never
/// speaks for another node (Kubernetes' NodeRestriction), and nothing else calls here.
fn require_node(caller: &Caller, node: NodeId) -> Result<(), Status> {
    match caller.principal {
        Principal::Node(own) if own == node => Ok(()),
        Principal::Node(own) => Err(Status::permission_denied(format!(
            "{own}'s credential may act only for {own}, not {node}"
        ))),
        _ => Err(Status::permission_denied(
            "only a node's own credential may call this",
        )),
    }
}

fn node_id(value: u64) -> Result<NodeId, Status> {
    convert::required_id("node", value, NodeId)
}

fn ack(outcome: ApplyOutcome) -> pb::ReportAck {
    match outcome.result {
        Ok(_) => pb::ReportAck {
            applied: true,
            reason: String::new(),
        },
        Err(rejection) => pb::ReportAck {
            applied: false,
            reason: rejection.to_string(),
        },
    }
}

fn optional_version(field: &str, text: &str) -> Result<Option<String>, Status> {
    if text.len() > MAX_DRIVER_VERSION_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {MAX_DRIVER_VERSION_BYTES} bytes"
        )));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

impl AgentService {
    /// The caller, which must be the node `node` itself.
    async fn node<T>(&self, request: &Request<T>, node: u64) -> Result<(Caller, NodeId), Status> {
        let caller = self.authenticator.caller(request).await?;
        let node = node_id(node)?;
        require_node(&caller, node)?;
        Ok((caller, node))
    }

    /// The node named `name`: its id and what it registered (address, isolation).
    fn node_by_name(&self, name: &str) -> Option<(NodeId, Registered)> {
        self.state_machine.read(|state| {
            state.node_by_name(name).map(|node| {
                (
                    node.id,
                    Registered {
                        address: node.agent_address.clone(),
                        isolation: node.isolation,
                    },
                )
            })
        })
    }

    /// Find the node again by name (an agent restart), moving its address (and
    /// changing its isolation) if needed.
    async fn reattach(
        &self,
        caller: &Caller,
        node: NodeId,
        known: Registered,
        address: &str,
        isolation: Option<ReplicaIsolation>,
    ) -> Result<(), Status> {
        let same_isolation = isolation.is_none() || known.isolation == isolation;
        if address.is_empty() || (known.address.as_deref() == Some(address) && same_isolation) {
            return Ok(());
        }
        // A write of its own, not the registration the call's request id names (a
        // request id names one command).
        let outcome = self
            .proposer
            .propose(
                caller,
                Command::NodeSetAgentAddress {
                    node,
                    address: address.to_string(),
                    isolation,
                },
            )
            .await?;
        outcome
            .result
            .map(|_| ())
            .map_err(|rejection| Status::failed_precondition(rejection.to_string()))
    }
}

/// What a node registered about itself.
struct Registered {
    address: Option<String>,
    isolation: Option<ReplicaIsolation>,
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentService {
    /// Under a bootstrap token: register the node (or, for a node name that exists,
    /// rebind it to this machine) and hand out its own credential. Under a node's
    /// credential: find the node again (an agent restart) and move its address.
    async fn register_agent_node(
        &self,
        request: Request<pb::RegisterAgentNodeRequest>,
    ) -> Result<Response<pb::RegisterAgentNodeResponse>, Status> {
        let caller = self.authenticator.caller(&request).await?;
        if !matches!(caller.principal, Principal::Bootstrap | Principal::Node(_)) {
            return Err(Status::permission_denied(
                "register a node with a node-bootstrap token or the node's own credential",
            ));
        }
        let named_by_client = request.metadata().contains_key(REQUEST_ID_HEADER);
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let message = request.into_inner();
        let register = convert::node_register_from_proto(&pb::RegisterNodeRequest {
            name: message.name.clone(),
            flavor: message.flavor.clone(),
            zone: message.zone.clone(),
            labels: message.labels.clone(),
            taints: Vec::new(),
            gpu_driver_version: message.gpu_driver_version.clone(),
            npu_driver_version: message.npu_driver_version.clone(),
        })?;
        if message.agent_address.len() > MAX_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "agent_address: at most {MAX_NAME_BYTES} bytes"
            )));
        }
        let isolation = match message.isolation.as_str() {
            "" => None,
            text => Some(ReplicaIsolation::parse(text).ok_or_else(|| {
                Status::invalid_argument(
                    "isolation: \"none\", \"users+cgroup v1\" or \"users+cgroup v2\"",
                )
            })?),
        };
        if let Principal::Node(own) = caller.principal {
            // A linearizable look-up: a restarted agent must find the node it registered.
            self.proposer.read_barrier(false).await?;
            let Some((node, known)) = self.node_by_name(&message.name) else {
                return Err(Status::not_found(format!(
                    "node {} is not registered",
                    message.name
                )));
            };
            require_node(&caller, node)?;
            self.reattach(&caller, own, known, &message.agent_address, isolation)
                .await?;
            return Ok(Response::new(pb::RegisterAgentNodeResponse {
                node: node.0,
                credential: String::new(),
                log_key: self.authenticator.node_log_key(node),
            }));
        }
        // A retried call (same request id) derives the same secret, so it is the same
        // command and gets the first outcome (`token_secret`).
        let credential = if named_by_client {
            self.authenticator.derived_token_secret(
                request_id,
                None,
                &corral_state::node_token_name(&message.name),
            )
        } else {
            self.proposer.fresh_secret()
        };
        let command = Command::NodeRegister(NodeRegister {
            agent_address: (!message.agent_address.is_empty())
                .then(|| message.agent_address.clone()),
            credential_hash: Some(hash_token(&credential)),
            isolation,
            ..register
        });
        let outcome = self
            .proposer
            .propose_request(&caller, command, request_id)
            .await?;
        match outcome.result {
            Ok(summary) => match summary.created {
                Some(Created::Node(node)) => Ok(Response::new(pb::RegisterAgentNodeResponse {
                    node: node.0,
                    credential,
                    log_key: self.authenticator.node_log_key(node),
                })),
                _ => Err(Status::internal("registration created no node")),
            },
            Err(rejection) => Err(convert::rejection_to_status(&rejection)),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (_, node) = self.node(&request, request.get_ref().node).await?;
        leader_only(
            self.proposer.raft(),
            "heartbeats are kept by the leader; send them there",
        )?;
        let message = request.into_inner();
        if self.state_machine.read(|state| state.node(node).is_none()) {
            return Err(Status::not_found(format!("node {node} is not registered")));
        }
        if message.replicas.len() > MAX_REPLICAS_PER_HEARTBEAT {
            return Err(Status::invalid_argument(format!(
                "replicas: at most {MAX_REPLICAS_PER_HEARTBEAT}"
            )));
        }
        self.liveness.record_report(
            node,
            NodeUsage {
                cpu_used_millicores: message.cpu_used_millicores,
                memory_used_mib: message.memory_used_mib,
                accelerator_utilization_percent: message.accelerator_utilization_percent.min(100),
                accelerators_measured: message.accelerators_measured,
                running_processes: message.replicas.len() as u32,
            },
        );
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
        }))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        request: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let (_, node) = self.node(&request, request.get_ref().node).await?;
        let mut applied = self.state_machine.subscribe();
        let first = self
            .state_machine
            .read(|state| convert::node_assignments(state, node))
            .ok_or_else(|| Status::not_found(format!("node {node} is not registered")))?;
        let (sender, receiver) = mpsc::channel(ASSIGNMENT_BUFFER);
        let state_machine = self.state_machine.clone();
        tokio::spawn(async move {
            let mut last_sent = first.clone();
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            let mut last_sent_at = tokio::time::Instant::now();
            loop {
                // Wake on applied entries, and at least every few seconds so a quiet
                // cluster still answers a closed stream promptly.
                let woke = tokio::time::timeout(Duration::from_secs(5), applied.recv()).await;
                match woke {
                    Ok(Err(RecvError::Closed)) => return,
                    Ok(Ok(batch)) => {
                        let relevant = batch
                            .iter()
                            .any(|record| convert::may_change_assignments(&record.event, node));
                        if !relevant {
                            continue;
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) | Err(_) => {}
                }
                if sender.is_closed() {
                    return;
                }
                let since_last = last_sent_at.elapsed();
                if since_last < MIN_ASSIGNMENT_INTERVAL {
                    tokio::time::sleep(MIN_ASSIGNMENT_INTERVAL - since_last).await;
                    // What was applied meanwhile is in the view computed below.
                    while applied.try_recv().is_ok() {}
                }
                let Some(current) =
                    state_machine.read(|state| convert::node_assignments(state, node))
                else {
                    let _ = sender
                        .send(Err(Status::not_found(format!("node {node} was deleted"))))
                        .await;
                    return;
                };
                if same_desired_state(&current, &last_sent) {
                    continue;
                }
                last_sent = current.clone();
                if sender.send(Ok(current)).await.is_err() {
                    return;
                }
                last_sent_at = tokio::time::Instant::now();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn report_replica(
        &self,
        request: Request<pb::ReplicaReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let (caller, node) = self.node(&request, request.get_ref().node).await?;
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let message = request.into_inner();
        let job = convert::required_id("job", message.job, corral_model::JobId)?;
        let current_generation = self.state_machine.read(|state| {
            state
                .job(job)
                .and_then(|job| job.replicas.get(message.rank as usize))
                .map(|replica| replica.placed_at_index)
        });
        if current_generation.is_some_and(|generation| generation < message.generation) {
            // This replica has not applied the placement the report is about (it lags):
            // calling the report stale would drop it for good, as the agent does not
            // send an answered report again. The leader, or this replica later, judges.
            leader_only(
                self.proposer.raft(),
                "this replica has not applied that placement yet",
            )?;
            return Err(Status::unavailable(
                "this replica has not applied that placement yet",
            ));
        }
        if current_generation.is_some_and(|generation| generation > message.generation) {
            return Ok(Response::new(pb::ReportAck {
                applied: false,
                reason: format!(
                    "stale: {job} rank {} is at placement {}, not {}",
                    message.rank,
                    current_generation.unwrap_or(0),
                    message.generation
                ),
            }));
        }
        let command = match message.event {
            Some(pb::replica_report::Event::Started(started)) => Command::ReplicaStarted {
                job,
                rank: message.rank,
                node,
                master_port: match started.master_port {
                    0 => None,
                    port => Some(
                        u16::try_from(port)
                            .map_err(|_| Status::invalid_argument("master_port: at most 65535"))?,
                    ),
                },
            },
            // Gone with no recorded exit (the agent or its machine restarted under it):
            // infrastructure's doing, which spends none of the job's retries.
            Some(pb::replica_report::Event::Exited(exited)) if exited.reason == "lost" => {
                Command::ReplicaLost {
                    job,
                    rank: message.rank,
                    node,
                }
            }
            Some(pb::replica_report::Event::Exited(exited)) => Command::ReplicaExited {
                job,
                rank: message.rank,
                node,
                exit_code: exited.exit_code,
                oom_killed: exited.reason == "oom_killed",
            },
            None => {
                return Err(Status::invalid_argument(
                    "event: started or exited is required",
                ))
            }
        };
        let outcome = self
            .proposer
            .propose_request(&caller, command, request_id)
            .await?;
        Ok(Response::new(ack(outcome)))
    }

    async fn report_driver(
        &self,
        request: Request<pb::DriverReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let (caller, node) = self.node(&request, request.get_ref().node).await?;
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let message = request.into_inner();
        if message.failed_attempt > 0 {
            // Refused here before it costs a log entry; the state machine checks again.
            if message.output_tail.len() > MAX_UPGRADE_OUTPUT_TAIL_BYTES {
                return Err(Status::invalid_argument(format!(
                    "output_tail: at most {MAX_UPGRADE_OUTPUT_TAIL_BYTES} bytes"
                )));
            }
            let command = Command::NodeDriverUpgradeFailed {
                node,
                attempt: message.failed_attempt,
                final_attempt: message.final_attempt,
                output_tail: message.output_tail,
            };
            let outcome = self
                .proposer
                .propose_request(&caller, command, request_id)
                .await?;
            return Ok(Response::new(ack(outcome)));
        }
        let reported_gpu = optional_version("gpu_driver_version", &message.gpu_driver_version)?;
        let reported_npu = optional_version("npu_driver_version", &message.npu_driver_version)?;
        // A report naming one kind of driver keeps the node's version of the other.
        let (known_gpu, known_npu) = self
            .state_machine
            .read(|state| {
                state.node(node).map(|node| {
                    (
                        node.gpu_driver_version.clone(),
                        node.npu_driver_version.clone(),
                    )
                })
            })
            .ok_or_else(|| Status::not_found(format!("node {node} is not registered")))?;
        let command = Command::NodeDriverReport {
            node,
            gpu_driver_version: reported_gpu.or(known_gpu),
            npu_driver_version: reported_npu.or(known_npu),
        };
        let outcome = self
            .proposer
            .propose_request(&caller, command, request_id)
            .await?;
        Ok(Response::new(ack(outcome)))
    }
}

/// Equal apart from the index the view was taken at.
fn same_desired_state(left: &pb::NodeAssignments, right: &pb::NodeAssignments) -> bool {
    left.replicas == right.replicas && left.upgrade == right.upgrade && left.status == right.status
}

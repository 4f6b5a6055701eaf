//! What the leader knows about nodes beyond the log: usage from heartbeats (the
//! `NodeMetrics` answer) and a replica's output, proxied from its node's agent
//! (`JobLogs`).

use crate::leader::liveness::Liveness;
use corral_model::{JobId, NodeId, PoolId, Principal};
use corral_state::State;
use corral_wire::credentials::BearerInterceptor;
use corral_wire::pb;
use corral_wire::tls::Transport;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Nodes in one metrics answer.
const MAX_METRICS_NODES: usize = 10_000;
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<pb::JobLogsChunk, Status>> + Send>>;

/// Metrics of the nodes the principal may see, filtered by pool or node (0: all).
pub(crate) fn node_metrics(
    state: &State,
    liveness: &Liveness,
    principal: &Principal,
    pool: Option<PoolId>,
    node: Option<NodeId>,
) -> Result<pb::NodeMetricsResponse, Status> {
    let mut nodes = Vec::new();
    for candidate in state.nodes() {
        if pool.is_some_and(|pool| candidate.pool != Some(pool))
            || node.is_some_and(|node| candidate.id != node)
            || state.get_node(principal, candidate.id).is_err()
        {
            continue;
        }
        if nodes.len() == MAX_METRICS_NODES {
            break;
        }
        let report = liveness.report(candidate.id);
        let usage = report
            .clone()
            .map(|report| report.usage)
            .unwrap_or_default();
        nodes.push(pb::NodeMetrics {
            node: candidate.id.0,
            name: candidate.name.clone(),
            pool: candidate.pool.map_or(0, |pool| pool.0),
            status: crate::api::convert::node_status_name(candidate.status).to_string(),
            reporting: report.is_some(),
            heartbeat_age_ms: report.map_or(0, |report| report.heartbeat_age.as_millis() as u64),
            cpu_used_millicores: usage.cpu_used_millicores,
            memory_used_mib: usage.memory_used_mib,
            accelerator_utilization_percent: usage.accelerator_utilization_percent,
            accelerators_measured: usage.accelerators_measured,
            running_processes: usage.running_processes,
            capacity: Some(crate::api::convert::resources_to_proto(&candidate.capacity)),
            allocated: Some(crate::api::convert::resources_to_proto(
                &candidate.allocated,
            )),
        });
    }
    if let Some(node) = node {
        if nodes.is_empty() {
            return Err(Status::not_found(format!("node {node} not found")));
        }
    }
    Ok(pb::NodeMetricsResponse { nodes })
}

/// Where a replica runs (or last ran): its node and that node's agent address.
pub(crate) fn replica_location(
    state: &State,
    principal: &Principal,
    job: JobId,
    rank: u32,
) -> Result<(NodeId, String), Status> {
    state
        .get_job(principal, job)
        .map_err(|error| crate::api::convert::query_error_to_status(&error))?;
    let job_record = state
        .job(job)
        .ok_or_else(|| Status::not_found(format!("job {job} not found")))?;
    let replica = job_record
        .replicas
        .get(rank as usize)
        .ok_or_else(|| Status::invalid_argument(format!("job {job} has no rank {rank}")))?;
    let node = replica
        .node
        .or(replica.last_node)
        .ok_or_else(|| Status::failed_precondition(format!("{job} rank {rank} has not run yet")))?;
    let address = state
        .node(node)
        .and_then(|node| node.agent_address.clone())
        .ok_or_else(|| Status::unavailable(format!("node {node} has no agent address")))?;
    Ok((node, address))
}

/// Open the agent's log stream and pass its chunks through. With TLS the agent's
/// certificate is checked against the cluster CA and this replica presents its own (the
/// log server takes only callers the CA signed).
pub(crate) async fn proxy_logs(
    transport: &Transport,
    agent_address: &str,
    log_key: &str,
    request: pb::ReadLogsRequest,
) -> Result<LogStream, Status> {
    let endpoint = transport
        .endpoint(agent_address)
        .map_err(|error| Status::internal(format!("agent address {agent_address}: {error}")))?
        .connect_timeout(AGENT_CONNECT_TIMEOUT);
    let channel = corral_wire::network::channel(&endpoint)
        .await
        .map_err(|error| {
            Status::unavailable(format!(
                "cannot reach the agent at {agent_address}: {error}"
            ))
        })?;
    let interceptor = BearerInterceptor::new(Some(log_key))
        .map_err(|error| Status::internal(format!("log key: {error}")))?;
    let mut client = pb::agent_logs_client::AgentLogsClient::with_interceptor(channel, interceptor);
    let stream = client.read_logs(request).await?.into_inner();
    Ok(Box::pin(stream.map(|chunk| {
        chunk.map(|chunk| pb::JobLogsChunk { data: chunk.data })
    })))
}

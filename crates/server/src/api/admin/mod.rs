//! The Admin gRPC service: authenticate the caller, turn the request into a command
//! (writes) or a query (reads), and map the outcome back. Authorization of objects lives
//! in the state machine, so a follower, a forwarded write and a replayed entry all decide
//! the same way; this layer only authenticates and converts.
//!
//! The RPCs live with their resource (`tenants`, `networks`, `pools`, `nodes`, `jobs`,
//! `cluster`, `watch`, `audit`); the shape they share — authenticate, convert, propose under the
//! client's request id, answer — is written once here ([`AdminService::write`]).

mod audit;
mod cluster;
mod jobs;
mod networks;
mod nodes;
mod pools;
mod queues;
mod tenants;
mod watch;

use crate::api::auth::Authenticator;
use crate::api::convert;
use crate::api::request_ids::client_request_id;
use crate::api::stream_slots::StreamSlots;
use crate::api::submit_rate::SubmitRate;
use crate::leader::liveness::Liveness;
use crate::replication::proposer::Proposer;
use corral_model::{Caller, Command, Principal};
use corral_state::{Created, RequestId, State};
use corral_store::{AppliedSummary, Raft, StateMachineStore};
use corral_wire::pb;
use corral_wire::tls::Transport;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub(crate) struct AdminService {
    raft: Raft,
    state_machine: StateMachineStore,
    proposer: Proposer,
    authenticator: Authenticator,
    this_replica: u64,
    liveness: Liveness,
    /// How `JobLogs` dials an agent's log server (TLS with this replica's certificate).
    agent_transport: Transport,
    /// Open Watch and JobLogs streams per principal.
    watch_slots: StreamSlots,
    log_slots: StreamSlots,
    /// Each tenant's job submissions per second (the gate takes a call's first).
    submit_rate: SubmitRate,
}

/// A write as this replica applied it.
struct Written {
    /// Who asked for it.
    principal: Principal,
    summary: AppliedSummary,
    /// Its log index.
    index: u64,
}

fn id_or_invalid(field: &str, value: u64) -> Result<u64, Status> {
    if value == 0 {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

fn ack(index: u64) -> Response<pb::Ack> {
    Response::new(pb::Ack { index })
}

fn read_options(read: Option<&pb::ReadOptions>) -> bool {
    read.is_some_and(|options| options.stale)
}

fn page_limit(page: Option<&pb::Page>) -> usize {
    page.map_or(corral_model::limits::MAX_LIST_PAGE, |page| {
        page.limit as usize
    })
}

fn created_id(summary: &AppliedSummary) -> Result<Created, Status> {
    summary
        .created
        .ok_or_else(|| Status::internal("the command created nothing"))
}

/// Refused before proposing: the state machine would refuse it too, but nothing that
/// can be refused without the state enters the log.
fn refuse_read_only(principal: &Principal) -> Result<(), Status> {
    if principal.is_read_only() {
        Err(Status::permission_denied(format!(
            "{} is read-only",
            principal.describe()
        )))
    } else {
        Ok(())
    }
}

fn require_admin(principal: &Principal) -> Result<(), Status> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "only the platform admin may do this",
        ))
    }
}

impl AdminService {
    pub(crate) fn new(
        raft: Raft,
        state_machine: StateMachineStore,
        proposer: Proposer,
        authenticator: Authenticator,
        this_replica: u64,
        liveness: Liveness,
        submit_rate: SubmitRate,
    ) -> AdminService {
        AdminService {
            raft,
            state_machine,
            proposer,
            authenticator,
            this_replica,
            liveness,
            agent_transport: Transport::Plaintext,
            watch_slots: StreamSlots::default(),
            log_slots: StreamSlots::default(),
            submit_rate,
        }
    }

    /// Dial agents' log servers with `transport` (plaintext unless set).
    pub(crate) fn with_agent_transport(self, transport: Transport) -> AdminService {
        AdminService {
            agent_transport: transport,
            ..self
        }
    }

    /// Who is calling, with the token that says so. Only node agents call the
    /// AgentService and only people and tools the Admin service: a node's credential
    /// or a bootstrap token opens nothing here.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.authenticator.caller(request).await?;
        if matches!(caller.principal, Principal::Node(_) | Principal::Bootstrap) {
            return Err(Status::permission_denied(
                "node credentials and bootstrap tokens may call only the agent service",
            ));
        }
        Ok(caller)
    }

    /// The client's id for this write, the same on its retries (a fresh one when it sent
    /// none): a retried write whose first attempt was applied gets that attempt's
    /// outcome, not a refusal from the state the first attempt made (found by the
    /// simulation: a retried terminate answered "cannot terminate while Terminating").
    fn request_id<T>(&self, request: &Request<T>) -> Result<RequestId, Status> {
        client_request_id(request.metadata(), &self.proposer)
    }

    /// Propose a command under `request_id` and turn a rejection into a status. Returns
    /// once this replica has applied the entry too, so the caller can read what it wrote
    /// from here.
    async fn apply(
        &self,
        caller: &Caller,
        command: Command,
        request_id: RequestId,
    ) -> Result<(AppliedSummary, u64), Status> {
        refuse_read_only(&caller.principal)?;
        let mut applied = self.state_machine.applied_index();
        let outcome = self
            .proposer
            .propose_request(caller, command, request_id)
            .await?;
        self.proposer
            .wait_applied(&mut applied, outcome.index)
            .await?;
        match outcome.result {
            Ok(summary) => Ok((summary, outcome.index)),
            Err(rejection) => Err(convert::rejection_to_status(&rejection)),
        }
    }

    /// The shape of every write: authenticate the caller, convert the request to its
    /// command, propose it under the client's request id, wait until it is applied here.
    async fn write<T>(
        &self,
        request: Request<T>,
        to_command: impl FnOnce(&Principal, &T) -> Result<Command, Status>,
    ) -> Result<Written, Status> {
        let caller = self.caller(&request).await?;
        let command = to_command(&caller.principal, request.get_ref())?;
        let request_id = self.request_id(&request)?;
        let (summary, index) = self.apply(&caller, command, request_id).await?;
        Ok(Written {
            principal: caller.principal,
            summary,
            index,
        })
    }

    /// A write answered with an acknowledgement of its log index.
    async fn command_ack<T>(
        &self,
        request: Request<T>,
        to_command: fn(&T) -> Result<Command, Status>,
    ) -> Result<Response<pb::Ack>, Status> {
        let written = self
            .write(request, |_, message| to_command(message))
            .await?;
        Ok(ack(written.index))
    }

    /// What a write created, as this replica has it now (`vanished` names it when gone).
    fn read_back<R>(
        &self,
        found: impl FnOnce(&State) -> Option<R>,
        vanished: &str,
    ) -> Result<Response<R>, Status> {
        self.state_machine
            .read(found)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(vanished.to_string()))
    }

    /// A query, after the read barrier (skipped for a `stale` read). After the
    /// barrier this replica has what the leader had when the read began, so the
    /// caller's token is checked again: a token revoked at the leader reads nothing
    /// from a follower that had not heard of the revocation.
    async fn read<T>(
        &self,
        caller: &Caller,
        stale: bool,
        query: impl FnOnce(&State) -> T,
    ) -> Result<T, Status> {
        self.proposer.read_barrier(stale).await?;
        if !stale {
            self.authenticator.still_valid(caller)?;
        }
        Ok(self.state_machine.read(query))
    }
}

/// The Admin trait, each RPC answered by its resource's module (`module::rpc`).
macro_rules! admin_rpcs {
    ($($module:ident :: $rpc:ident ($request:ty) -> $response:ty;)*) => {
        #[tonic::async_trait]
        impl pb::admin_server::Admin for AdminService {
            type JobLogsStream = crate::api::node_runtime::LogStream;
            type WatchStream = watch::WatchStream;

            $(
                async fn $rpc(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    $module::$rpc(self, request).await
                }
            )*
        }
    };
}

admin_rpcs! {
    tenants::create_tenant(pb::CreateTenantRequest) -> pb::Tenant;
    tenants::set_tenant_quota(pb::SetTenantQuotaRequest) -> pb::Ack;
    tenants::delete_tenant(pb::DeleteTenantRequest) -> pb::Ack;
    tenants::list_tenants(pb::ListTenantsRequest) -> pb::ListTenantsResponse;
    tenants::create_token(pb::CreateTokenRequest) -> pb::CreateTokenResponse;
    tenants::revoke_token(pb::RevokeTokenRequest) -> pb::Ack;
    tenants::rotate_token(pb::RotateTokenRequest) -> pb::CreateTokenResponse;
    tenants::list_tokens(pb::ListTokensRequest) -> pb::ListTokensResponse;
    tenants::list_bills(pb::ListBillsRequest) -> pb::ListBillsResponse;
    pools::define_flavor(pb::Flavor) -> pb::Ack;
    pools::list_flavors(pb::ListTenantsRequest) -> pb::ListFlavorsResponse;
    networks::create_network(pb::CreateNetworkRequest) -> pb::Network;
    networks::delete_network(pb::DeleteNetworkRequest) -> pb::Ack;
    networks::set_network_storage(pb::SetNetworkStorageRequest) -> pb::Ack;
    networks::list_networks(pb::ListNetworksRequest) -> pb::ListNetworksResponse;
    pools::create_pool(pb::CreatePoolRequest) -> pb::Pool;
    pools::get_pool(pb::GetPoolRequest) -> pb::Pool;
    pools::list_pools(pb::ListPoolsRequest) -> pb::ListPoolsResponse;
    pools::scale_pool(pb::ScalePoolRequest) -> pb::Ack;
    pools::delete_pool(pb::DeletePoolRequest) -> pb::Ack;
    pools::set_pool_job_types(pb::SetPoolJobTypesRequest) -> pb::Ack;
    pools::request_driver_upgrade(pb::RequestDriverUpgradeRequest) -> pb::Ack;
    pools::cancel_driver_upgrade(pb::CancelDriverUpgradeRequest) -> pb::Ack;
    pools::renew_pool(pb::RenewPoolRequest) -> pb::Ack;
    nodes::register_node(pb::RegisterNodeRequest) -> pb::Node;
    nodes::get_node(pb::GetNodeRequest) -> pb::Node;
    nodes::list_nodes(pb::ListNodesRequest) -> pb::ListNodesResponse;
    nodes::drain_node(pb::DrainNodeRequest) -> pb::Ack;
    nodes::cordon_node(pb::NodeRef) -> pb::Ack;
    nodes::uncordon_node(pb::NodeRef) -> pb::Ack;
    nodes::lock_node(pb::NodeRef) -> pb::Ack;
    nodes::unlock_node(pb::NodeRef) -> pb::Ack;
    nodes::delete_node(pb::NodeRef) -> pb::Ack;
    nodes::set_node_taints(pb::SetNodeTaintsRequest) -> pb::Ack;
    nodes::set_node_labels(pb::SetNodeLabelsRequest) -> pb::Ack;
    nodes::set_node_standby(pb::SetNodeStandbyRequest) -> pb::Ack;
    nodes::node_metrics(pb::NodeMetricsRequest) -> pb::NodeMetricsResponse;
    jobs::job_logs(pb::JobLogsRequest) -> Self::JobLogsStream;
    jobs::submit_job(pb::SubmitJobRequest) -> pb::SubmitJobResponse;
    jobs::submit_jobs(pb::SubmitJobsRequest) -> pb::SubmitJobsResponse;
    jobs::get_job(pb::GetJobRequest) -> pb::Job;
    jobs::list_jobs(pb::ListJobsRequest) -> pb::ListJobsResponse;
    jobs::terminate_job(pb::JobRef) -> pb::Ack;
    jobs::stop_job(pb::JobRef) -> pb::Ack;
    jobs::start_job(pb::JobRef) -> pb::Ack;
    jobs::change_priority(pb::ChangePriorityRequest) -> pb::Ack;
    watch::watch(pb::WatchRequest) -> Self::WatchStream;
    audit::list_audit(pb::ListAuditRequest) -> pb::ListAuditResponse;
    cluster::cluster_status(pb::ClusterStatusRequest) -> pb::ClusterStatusResponse;
    cluster::add_replica(pb::AddReplicaRequest) -> pb::Ack;
    cluster::remove_replica(pb::RemoveReplicaRequest) -> pb::Ack;
    cluster::trigger_snapshot(pb::Empty) -> pb::Ack;
    cluster::disarm_alarm(pb::DisarmAlarmRequest) -> pb::Ack;
    queues::create_queue(pb::QueueSpec) -> pb::Ack;
    queues::update_queue(pb::QueueSpec) -> pb::Ack;
    queues::delete_queue(pb::DeleteQueueRequest) -> pb::Ack;
    queues::list_queues(pb::ListQueuesRequest) -> pb::ListQueuesResponse;
}

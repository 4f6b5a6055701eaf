//! The Admin gRPC service: authenticate the caller, turn the request into a command
//! (writes) or a query (reads), and map the outcome back. Authorization of objects lives
//! in the state machine, so a follower, a forwarded write and a replayed entry all decide
//! the same way; this layer only authenticates and converts.

use crate::auth::{hash_token, Authenticator};
use crate::convert;
use crate::liveness::Liveness;
use crate::node_runtime;
use crate::proposer::Proposer;
use crate::request_ids::{client_request_id, slot_request_ids};
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::{Command, Principal};
use corral_state::{BillQuery, Created, JobFilter, NodeFilter, PoolFilter, RequestId, State};
use corral_store::{AppliedSummary, Raft, StateMachineStore};
use corral_wire::headers::REQUEST_ID_HEADER;
use corral_wire::pb;
use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use std::collections::BTreeSet;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Events buffered per Watch stream before the sender waits for the client.
const WATCH_BUFFER: usize = 256;

#[derive(Clone)]
pub struct AdminService {
    raft: Raft,
    state_machine: StateMachineStore,
    proposer: Proposer,
    authenticator: Authenticator,
    this_replica: u64,
    liveness: Liveness,
    agent_token: Option<String>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

fn id_or_invalid(field: &str, value: u64) -> Result<u64, Status> {
    if value == 0 {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

fn ack(summary: &AppliedSummary, index: u64) -> Response<pb::Ack> {
    let _ = summary;
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

impl AdminService {
    pub fn new(
        raft: Raft,
        state_machine: StateMachineStore,
        proposer: Proposer,
        authenticator: Authenticator,
        this_replica: u64,
        liveness: Liveness,
        agent_token: Option<String>,
    ) -> AdminService {
        AdminService {
            raft,
            state_machine,
            proposer,
            authenticator,
            this_replica,
            liveness,
            agent_token,
        }
    }

    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        self.authenticator.principal(request.metadata()).await
    }

    /// Propose a command and turn a rejection into a status. Returns once this replica
    /// has applied the entry too, so the caller can read what it wrote from here.
    async fn write(
        &self,
        principal: Principal,
        command: Command,
    ) -> Result<(AppliedSummary, u64), Status> {
        self.write_request(principal, command, self.proposer.fresh_request_id())
            .await
    }

    async fn write_request(
        &self,
        principal: Principal,
        command: Command,
        request_id: RequestId,
    ) -> Result<(AppliedSummary, u64), Status> {
        let mut applied = self.state_machine.applied_index();
        let outcome = self
            .proposer
            .propose_request(principal, command, request_id)
            .await?;
        self.proposer
            .wait_applied(&mut applied, outcome.index)
            .await?;
        match outcome.result {
            Ok(summary) => Ok((summary, outcome.index)),
            Err(rejection) => Err(convert::rejection_to_status(&rejection)),
        }
    }

    /// Authenticate, convert the request to its command, propose it, acknowledge.
    async fn command_ack<T>(
        &self,
        request: Request<T>,
        to_command: fn(&T) -> Result<Command, Status>,
    ) -> Result<Response<pb::Ack>, Status> {
        let principal = self.principal(&request).await?;
        let command = to_command(request.get_ref())?;
        // The client's id, the same on its retries: a retried terminate (or stop, start,
        // drain, ...) whose first attempt was applied gets that attempt's outcome, not a
        // refusal from the state the first attempt made (found by the simulation: a
        // retried terminate answered "cannot terminate while Terminating").
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let (summary, index) = self.write_request(principal, command, request_id).await?;
        Ok(ack(&summary, index))
    }

    async fn read<T>(&self, stale: bool, query: impl FnOnce(&State) -> T) -> Result<T, Status> {
        self.proposer.read_barrier(stale).await?;
        Ok(self.state_machine.read(query))
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

    fn require_leader(&self) -> Result<(), Status> {
        crate::proposer::leader_only(&self.raft, "cluster changes are made on the leader")
    }
}

fn created_id(summary: &AppliedSummary) -> Result<Created, Status> {
    summary
        .created
        .ok_or_else(|| Status::internal("the command created nothing"))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let principal = self.principal(&request).await?;
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let message = request.into_inner();
        let command = Command::TenantCreate {
            name: message.name,
            quota: convert::resources_from_proto(message.quota.as_ref()),
            may_use_high_priority: message.may_use_high_priority,
        };
        let (summary, _) = self.write_request(principal, command, request_id).await?;
        let Created::Tenant(tenant) = created_id(&summary)? else {
            return Err(Status::internal("expected a tenant"));
        };
        let found = self
            .state_machine
            .read(|state| state.tenant(tenant).map(convert::tenant_to_proto));
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found("tenant vanished"))
    }

    async fn set_tenant_quota(
        &self,
        request: Request<pb::SetTenantQuotaRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_set_tenant_quota)
            .await
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_delete_tenant)
            .await
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let stale = read_options(request.get_ref().read.as_ref());
        let tenants = self
            .read(stale, |state| {
                state
                    .tenants()
                    .filter(|tenant| principal.tenant().is_none_or(|own| own == tenant.id))
                    .map(convert::tenant_to_proto)
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let principal = self.principal(&request).await?;
        Self::require_admin(&principal)?;
        let named_by_client = request.metadata().contains_key(REQUEST_ID_HEADER);
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let message = request.into_inner();
        let tenant = (message.tenant != 0).then_some(TenantId(message.tenant));
        // A call the client named can be retried: derive its secret so a retry is the
        // same command and gets the first outcome (`token_secret`).
        let secret = if named_by_client {
            self.authenticator
                .derived_token_secret(request_id, tenant, &message.name)
        } else {
            self.proposer.fresh_secret()
        };
        let command = Command::TokenCreate {
            name: message.name.clone(),
            hash: hash_token(&secret),
            tenant,
        };
        self.write_request(principal, command, request_id).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            name: message.name,
            secret,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_revoke_token)
            .await
    }

    async fn define_flavor(
        &self,
        request: Request<pb::Flavor>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_define_flavor)
            .await
    }

    async fn list_flavors(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListFlavorsResponse>, Status> {
        self.principal(&request).await?;
        let stale = read_options(request.get_ref().read.as_ref());
        let flavors = self
            .read(stale, |state| {
                state.flavors().map(convert::flavor_to_proto).collect()
            })
            .await?;
        Ok(Response::new(pb::ListFlavorsResponse { flavors }))
    }

    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let principal = self.principal(&request).await?;
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let message = request.into_inner();
        let tenant = match (message.tenant, principal.tenant()) {
            (0, Some(own)) => own,
            (0, None) => return Err(Status::invalid_argument("tenant is required")),
            (tenant, _) => TenantId(tenant),
        };
        let command = Command::NetworkCreate {
            tenant,
            name: message.name,
            cidr: message.cidr,
        };
        let (summary, _) = self.write_request(principal, command, request_id).await?;
        let Created::Network(network) = created_id(&summary)? else {
            return Err(Status::internal("expected a network"));
        };
        let found = self
            .state_machine
            .read(|state| state.network(network).map(convert::network_to_proto));
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found("network vanished"))
    }

    async fn delete_network(
        &self,
        request: Request<pb::DeleteNetworkRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_delete_network)
            .await
    }

    async fn set_network_storage(
        &self,
        request: Request<pb::SetNetworkStorageRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_set_network_storage)
            .await
    }

    async fn list_networks(
        &self,
        request: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let principal = self.principal(&request).await?;
        let stale = read_options(request.get_ref().read.as_ref());
        let networks = self
            .read(stale, |state| {
                state
                    .networks()
                    .filter(|network| principal.tenant().is_none_or(|own| own == network.tenant))
                    .map(convert::network_to_proto)
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let principal = self.principal(&request).await?;
        let create = convert::pool_create_from_proto(request.get_ref(), &principal)?;
        let (summary, _) = self
            .write(principal.clone(), Command::PoolCreate(create))
            .await?;
        let Created::Pool(pool) = created_id(&summary)? else {
            return Err(Status::internal("expected a pool"));
        };
        let found = self.state_machine.read(|state| {
            state
                .get_pool(&principal, pool)
                .ok()
                .map(|pool| convert::pool_to_proto(pool, state))
        });
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found("pool vanished"))
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let pool = PoolId(id_or_invalid("pool", message.pool)?);
        let found = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .get_pool(&principal, pool)
                    .map(|pool| convert::pool_to_proto(pool, state))
                    .map_err(|error| convert::query_error_to_status(&error))
            })
            .await??;
        Ok(Response::new(found))
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let filter = PoolFilter {
            owner: (message.owner != 0).then_some(TenantId(message.owner)),
            status: convert::optional_pool_status(&message.status)?,
        };
        let limit = page_limit(message.page.as_ref());
        let pools = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .list_pools(&principal, &filter, limit)
                    .into_iter()
                    .map(|pool| convert::pool_to_proto(pool, state))
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListPoolsResponse { pools }))
    }

    async fn scale_pool(
        &self,
        request: Request<pb::ScalePoolRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_scale_pool)
            .await
    }

    async fn delete_pool(
        &self,
        request: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_delete_pool)
            .await
    }

    async fn set_pool_job_types(
        &self,
        request: Request<pb::SetPoolJobTypesRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_set_pool_job_types)
            .await
    }

    async fn request_driver_upgrade(
        &self,
        request: Request<pb::RequestDriverUpgradeRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let principal = self.principal(&request).await?;
        let request_id = client_request_id(request.metadata(), &self.proposer)?;
        let mut message = request.into_inner();
        if message.batch_percent > 0 {
            if message.batch_size > 0 || message.batch_percent > 100 {
                return Err(Status::invalid_argument(
                    "give batch_size or batch_percent (1-100), not both",
                ));
            }
            let node_count = self
                .state_machine
                .read(|state| state.pool_nodes(PoolId(message.pool)).count() as u64);
            // Rounded up, so a small percentage of a small pool still upgrades a node.
            let batch = (node_count * u64::from(message.batch_percent)).div_ceil(100);
            message.batch_size = u32::try_from(batch.max(1)).unwrap_or(u32::MAX);
        }
        let command = convert::command_from_request_driver_upgrade(&message)?;
        let (summary, index) = self.write_request(principal, command, request_id).await?;
        Ok(ack(&summary, index))
    }

    async fn renew_pool(
        &self,
        request: Request<pb::RenewPoolRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_renew_pool)
            .await
    }

    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let principal = self.principal(&request).await?;
        let register = convert::node_register_from_proto(request.get_ref())?;
        let (summary, _) = self
            .write(principal, Command::NodeRegister(register))
            .await?;
        let Created::Node(node) = created_id(&summary)? else {
            return Err(Status::internal("expected a node"));
        };
        let found = self
            .state_machine
            .read(|state| state.node(node).map(convert::node_to_proto));
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found("node vanished"))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let node = NodeId(id_or_invalid("node", message.node)?);
        let found = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .get_node(&principal, node)
                    .map(convert::node_to_proto)
                    .map_err(|error| convert::query_error_to_status(&error))
            })
            .await??;
        Ok(Response::new(found))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let filter = NodeFilter {
            pool: (message.pool != 0).then_some(PoolId(message.pool)),
            status: convert::optional_node_status(&message.status)?,
            free_only: message.free_only,
        };
        let limit = page_limit(message.page.as_ref());
        let nodes = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .list_nodes(&principal, &filter, limit)
                    .into_iter()
                    .map(convert::node_to_proto)
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_drain_node)
            .await
    }

    async fn cordon_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_cordon_node)
            .await
    }

    async fn uncordon_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_uncordon_node)
            .await
    }

    async fn lock_node(&self, request: Request<pb::NodeRef>) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_lock_node)
            .await
    }

    async fn unlock_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_unlock_node)
            .await
    }

    async fn delete_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_delete_node)
            .await
    }

    async fn set_node_taints(
        &self,
        request: Request<pb::SetNodeTaintsRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_set_node_taints)
            .await
    }

    async fn set_node_labels(
        &self,
        request: Request<pb::SetNodeLabelsRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_set_node_labels)
            .await
    }

    async fn set_node_standby(
        &self,
        request: Request<pb::SetNodeStandbyRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_set_node_standby)
            .await
    }

    async fn node_metrics(
        &self,
        request: Request<pb::NodeMetricsRequest>,
    ) -> Result<Response<pb::NodeMetricsResponse>, Status> {
        let principal = self.principal(&request).await?;
        crate::proposer::leader_only(&self.raft, "node metrics are kept by the leader")?;
        let message = request.into_inner();
        let pool = convert::optional_id(message.pool, PoolId);
        let node = convert::optional_id(message.node, NodeId);
        let metrics = self.state_machine.read(|state| {
            node_runtime::node_metrics(state, &self.liveness, &principal, pool, node)
        })?;
        Ok(Response::new(metrics))
    }

    type JobLogsStream = node_runtime::LogStream;

    async fn job_logs(
        &self,
        request: Request<pb::JobLogsRequest>,
    ) -> Result<Response<Self::JobLogsStream>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let job = JobId(id_or_invalid("job", message.job)?);
        let (node, address) = self
            .read(true, |state| {
                node_runtime::replica_location(state, &principal, job, message.rank)
            })
            .await??;
        let stream = node_runtime::proxy_logs(
            &address,
            self.agent_token.as_deref(),
            pb::ReadLogsRequest {
                node: node.0,
                job: job.0,
                rank: message.rank,
                offset: 0,
                follow: message.follow,
                tail_bytes: message.tail_bytes,
            },
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let principal = self.principal(&request).await?;
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        let spec = message
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let spec = convert::job_spec_from_proto(spec)?;
        let request_id = client_request_id(&metadata, &self.proposer)?;
        let (summary, index) = self
            .write_request(principal, Command::JobSubmit(spec), request_id)
            .await?;
        let Created::Job(job) = created_id(&summary)? else {
            return Err(Status::internal("expected a job"));
        };
        Ok(Response::new(pb::SubmitJobResponse { job: job.0, index }))
    }

    async fn submit_jobs(
        &self,
        request: Request<pb::SubmitJobsRequest>,
    ) -> Result<Response<pb::SubmitJobsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let request_ids = slot_request_ids(
            request.metadata(),
            request.get_ref().specs.len(),
            &self.proposer,
        )?;
        let message = request.into_inner();
        // A malformed spec fails only its own slot; the rest are proposed together
        // (`Proposer::propose_requests`: one group, usually one log entry), each under
        // its slot's id, so a retried call is answered with the first outcomes.
        let commands = convert::submit_jobs_from_proto(&message)?;
        let well_formed: Vec<(Command, RequestId)> = commands
            .iter()
            .zip(request_ids)
            .filter_map(|(command, request_id)| Some((command.as_ref().ok()?.clone(), request_id)))
            .collect();
        let mut applied = self.state_machine.applied_index();
        // A write whose outcome is unknown fails the whole call rather than its slot: a
        // slot's error says the job does not exist, and the retry (same slot ids) is
        // answered with the first outcomes.
        let proposed = self
            .proposer
            .propose_requests(principal, well_formed)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Status>>()?;
        // Read-your-writes here, as for a single submit (a follower forwarded them).
        let last_index = proposed
            .iter()
            .map(|outcome| outcome.index)
            .max()
            .unwrap_or(0);
        // Should this replica be slow to apply, the call still answers: the writes are
        // committed, and an error would only invite a retry.
        let _ = self.proposer.wait_applied(&mut applied, last_index).await;
        let mut proposed = proposed.into_iter();
        let results = commands
            .into_iter()
            .map(|command| {
                let outcome = command.and_then(|_| {
                    let outcome = proposed
                        .next()
                        .ok_or_else(|| Status::internal("a proposed write has no outcome"))?;
                    outcome
                        .result
                        .map_err(|rejection| convert::rejection_to_status(&rejection))
                });
                match outcome {
                    Ok(AppliedSummary {
                        created: Some(Created::Job(job)),
                        ..
                    }) => pb::SubmitResult {
                        job: job.0,
                        error: String::new(),
                    },
                    Ok(_) => pb::SubmitResult {
                        job: 0,
                        error: "the command created no job".to_string(),
                    },
                    Err(status) => pb::SubmitResult {
                        job: 0,
                        error: status.message().to_string(),
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::SubmitJobsResponse { results }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let job = JobId(id_or_invalid("job", message.job)?);
        let found = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .get_job(&principal, job)
                    .map(|view| convert::job_view_to_proto(&view))
                    .map_err(|error| convert::query_error_to_status(&error))
            })
            .await??;
        Ok(Response::new(found))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let filter = JobFilter {
            tenant: (message.tenant != 0).then_some(TenantId(message.tenant)),
            pool: (message.pool != 0).then_some(PoolId(message.pool)),
            state: convert::optional_job_state(&message.state)?,
            kind: convert::optional_job_kind_label(&message.kind)?,
        };
        let limit = page_limit(message.page.as_ref());
        let jobs = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .list_jobs(&principal, &filter, limit)
                    .iter()
                    .map(convert::job_view_to_proto)
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn terminate_job(
        &self,
        request: Request<pb::JobRef>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_terminate_job)
            .await
    }

    async fn stop_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_stop_job)
            .await
    }

    async fn start_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_start_job)
            .await
    }

    async fn change_priority(
        &self,
        request: Request<pb::ChangePriorityRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.command_ack(request, convert::command_from_change_priority)
            .await
    }

    async fn list_bills(
        &self,
        request: Request<pb::ListBillsRequest>,
    ) -> Result<Response<pb::ListBillsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let message = request.into_inner();
        let query = BillQuery {
            tenant: (message.tenant != 0).then_some(TenantId(message.tenant)),
            from_ms: message.from_ms,
            to_ms: (message.to_ms != 0).then_some(message.to_ms),
        };
        let summary = self
            .read(read_options(message.read.as_ref()), |state| {
                state
                    .bills(&principal, &query)
                    .map(|summary| convert::bill_summary_to_proto(&summary))
                    .map_err(|error| convert::query_error_to_status(&error))
            })
            .await??;
        Ok(Response::new(summary))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let principal = self.principal(&request).await?;
        let from_index = request.get_ref().from_index;
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let state_machine = self.state_machine.clone();
        tokio::spawn(crate::watch::stream_events(
            state_machine,
            principal,
            from_index,
            sender,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.principal(&request).await?;
        let with_digest = request.get_ref().with_digest;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let leader_address = metrics
            .current_leader
            .and_then(|leader| membership.get_node(&leader).map(|node| node.addr.clone()))
            .unwrap_or_default();
        // Only on request: it encodes the whole state, and applies wait meanwhile.
        let digest = if with_digest {
            self.state_machine.digest_hex().await
        } else {
            String::new()
        };
        Ok(Response::new(pb::ClusterStatus {
            leader: metrics.current_leader.unwrap_or(0),
            leader_address,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map_or(0, |log_id| log_id.index),
            committed: metrics.cluster_committed.map_or(0, |log_id| log_id.index),
            members,
            this_replica: self.this_replica,
            digest,
            snapshot_index: metrics.snapshot.map_or(0, |log_id| log_id.index),
        }))
    }

    async fn add_replica(
        &self,
        request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let principal = self.principal(&request).await?;
        Self::require_admin(&principal)?;
        self.require_leader()?;
        let message = request.into_inner();
        let id = id_or_invalid("id", message.id)?;
        if message.address.is_empty() || message.address.len() > 256 {
            return Err(Status::invalid_argument("address must be host:port"));
        }
        // A learner first, so it catches up (by snapshot if needed) before it votes.
        self.raft
            .add_learner(
                id,
                BasicNode {
                    addr: message.address,
                },
                true,
            )
            .await
            .map_err(|error| {
                Status::failed_precondition(format!("adding learner {id}: {error}"))
            })?;
        let response = self
            .raft
            .change_membership(
                openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                false,
            )
            .await
            .map_err(|error| {
                Status::failed_precondition(format!("promoting {id} to voter: {error}"))
            })?;
        Ok(Response::new(pb::Ack {
            index: response.log_id.index,
        }))
    }

    async fn remove_replica(
        &self,
        request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let principal = self.principal(&request).await?;
        Self::require_admin(&principal)?;
        self.require_leader()?;
        let id = id_or_invalid("id", request.get_ref().id)?;
        let response = self
            .raft
            .change_membership(
                openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                false,
            )
            .await
            .map_err(|error| Status::failed_precondition(format!("removing {id}: {error}")))?;
        Ok(Response::new(pb::Ack {
            index: response.log_id.index,
        }))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::Ack>, Status> {
        let principal = self.principal(&request).await?;
        Self::require_admin(&principal)?;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|error| Status::internal(error.to_string()))?;
        let applied = self
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |log_id| log_id.index);
        Ok(Response::new(pb::Ack { index: applied }))
    }
}

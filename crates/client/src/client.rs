//! [`CorralClient`]: connections to the manager replicas, authentication, deadlines,
//! and retrying a call on another replica or on the leader.

use crate::error::{is_connection_failure, leader_of, ClientError};
use crate::pb;
use crate::pb::admin_client::AdminClient;
use corral_wire::credentials::BearerInterceptor;
use corral_wire::tls::Transport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// The generated admin client over one replica's channel, with the bearer token added.
pub type AdminStub = AdminClient<InterceptedService<Channel, AuthInterceptor>>;

/// At most this many addresses are remembered (configured plus learned leaders).
const MAX_ADDRESSES: usize = 32;

/// How calls behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Deadline of one call, retries included (sent to the server as `grpc-timeout`).
    /// Default 10 s. A watch stream has no deadline; this bounds only its opening.
    pub timeout: Duration,
    /// Bound on establishing a connection to one replica. Default 3 s.
    pub connect_timeout: Duration,
    /// Bound on one attempt at one replica, within `timeout`: a replica that takes
    /// longer (it stopped receiving, or hangs) is left for the next one, with time to
    /// spare. Writes are safe to try again elsewhere (same request id). Default 4 s.
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included (at least 1). Default 5.
    pub max_attempts: u32,
    /// Pause before retrying a replica already tried in this call; doubles on each
    /// such retry, up to 1 s. Default 100 ms.
    pub backoff: Duration,
    /// Seed for the ids that make a call's retries one write (`x-corral-request-id`);
    /// None draws them from the operating system. A simulation sets it to replay.
    pub request_id_seed: Option<u64>,
    /// How addresses are dialled: with TLS (`host:port` means `https://`; the CA and
    /// perhaps a client certificate), or plaintext (`host:port` means `http://`). An
    /// `https://` address is never dialled in plaintext. Default: plaintext.
    pub transport: Transport,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(4),
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            request_id_seed: None,
            transport: Transport::Plaintext,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every request when a token is set
/// (`corral_wire`'s interceptor, with the client's error type).
#[derive(Clone, Debug, Default)]
pub struct AuthInterceptor(BearerInterceptor);

impl AuthInterceptor {
    /// An interceptor sending this token (none or empty: no `authorization` metadata).
    pub fn new(token: Option<&str>) -> Result<AuthInterceptor, ClientError> {
        BearerInterceptor::new(token)
            .map(AuthInterceptor)
            .map_err(ClientError::invalid_argument)
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.call(request)
    }
}

/// A client of a corral cluster. Cheap to clone (clones share connections and the
/// knowledge of which replica answered last).
///
/// Channels are lazy: nothing connects until the first call, so `connect` never blocks
/// and succeeds while replicas are down. Calls must run inside a Tokio runtime.
#[derive(Clone)]
pub struct CorralClient {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    interceptor: AuthInterceptor,
    replicas: Mutex<Replicas>,
    /// None: ids from the operating system's randomness.
    request_ids: Mutex<Option<StdRng>>,
}

struct Replicas {
    /// Normalised addresses, configured ones first, then leaders learned from redirects.
    addresses: Vec<String>,
    endpoints: Vec<Endpoint>,
    channels: Vec<Option<Channel>>,
    configured: usize,
    /// The replica that answered last; calls start there.
    preferred: usize,
}

impl std::fmt::Debug for CorralClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CorralClient")
            .field("addresses", &self.addresses())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl CorralClient {
    /// A client of the replicas at `addresses` (`host:port`, `https://host:port` or
    /// `http://host:port`; empty entries are ignored), sending `token` as a bearer token,
    /// dialling as `options.transport` says.
    ///
    /// Fails only on bad input: no address, an unparsable address, an `https://` address
    /// without TLS in `options.transport`, a non-ASCII token.
    pub fn connect(
        addresses: Vec<String>,
        token: Option<String>,
        options: ClientOptions,
    ) -> Result<CorralClient, ClientError> {
        let interceptor = AuthInterceptor::new(token.as_deref())?;
        let mut replicas = Replicas {
            addresses: Vec::new(),
            endpoints: Vec::new(),
            channels: Vec::new(),
            configured: 0,
            preferred: 0,
        };
        for address in addresses
            .iter()
            .filter(|address| !address.trim().is_empty())
        {
            let address = options.transport.uri(address);
            if replicas.addresses.contains(&address) {
                continue;
            }
            if replicas.addresses.len() == MAX_ADDRESSES {
                return Err(ClientError::invalid_argument(format!(
                    "at most {MAX_ADDRESSES} manager addresses may be given"
                )));
            }
            let endpoint = endpoint(&address, &options)?;
            replicas.addresses.push(address);
            replicas.endpoints.push(endpoint);
            replicas.channels.push(None);
        }
        if replicas.addresses.is_empty() {
            return Err(ClientError::invalid_argument("no manager address given"));
        }
        replicas.configured = replicas.addresses.len();
        Ok(CorralClient {
            inner: Arc::new(Inner {
                options: ClientOptions {
                    max_attempts: options.max_attempts.max(1),
                    ..options
                },
                interceptor,
                replicas: Mutex::new(replicas),
                request_ids: Mutex::new(options.request_id_seed.map(StdRng::seed_from_u64)),
            }),
        })
    }

    /// A fresh id for one logical call (32 hex digits); every retry of the call sends
    /// the same one, so a write the server applied before its answer was lost is not
    /// applied again.
    fn fresh_request_id(&self) -> MetadataValue<Ascii> {
        let id: u128 = match &mut *self
            .inner
            .request_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            Some(seeded) => seeded.random(),
            None => rand::random(),
        };
        MetadataValue::try_from(format!("{id:032x}")).expect("hex digits are valid metadata")
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The known replica addresses (normalised), configured ones first.
    pub fn addresses(&self) -> Vec<String> {
        self.replicas().addresses.clone()
    }

    /// The generated client for the replica that answered last (the first address
    /// before any call), for calls this type does not wrap. No retries, no deadline.
    pub fn admin(&self) -> AdminStub {
        let preferred = self.replicas().preferred;
        self.stub(preferred).1
    }

    /// Runs one Admin RPC with the bearer token, the deadline and retries:
    ///
    /// - `Unavailable` with `x-corral-leader` metadata: retried on that leader;
    /// - any other `Unavailable`, or failing to reach the replica: retried on the next
    ///   address (pausing with backoff once every address has been tried);
    /// - anything else, and running out of attempts or time: returned as the error.
    ///
    /// A call whose deadline passes is not retried (a write may have been applied).
    /// `rpc` makes the call on the stub it is given:
    ///
    /// ```no_run
    /// # async fn example(client: corral_client::CorralClient) -> Result<(), corral_client::ClientError> {
    /// use corral_client::pb;
    /// let job: pb::Job = client
    ///     .call(pb::GetJobRequest { job: 42, ..Default::default() }, |mut admin, request| async move {
    ///         admin.get_job(request).await
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<Req, Resp, F, Fut>(&self, request: Req, rpc: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(AdminStub, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.call_with(request, true, rpc)
            .await
            .map(Response::into_inner)
    }

    /// As `call`; `send_deadline` false leaves `grpc-timeout` off the request (for
    /// streams, whose opening alone is bounded by the timeout), and the response keeps
    /// its metadata.
    pub(crate) async fn call_with<Req, Resp, F, Fut>(
        &self,
        request: Req,
        send_deadline: bool,
        mut rpc: F,
    ) -> Result<Response<Resp>, ClientError>
    where
        Req: Clone,
        F: FnMut(AdminStub, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let options = &self.inner.options;
        let deadline = Instant::now() + options.timeout;
        let mut target = self.replicas().preferred;
        let mut tried: Vec<usize> = Vec::new();
        // Replicas that could not be reached in this call: a leader named by another
        // replica is skipped when it is one of them (a dead leader stays named until a
        // new one is elected).
        let mut unreachable: Vec<usize> = Vec::new();
        let mut pauses = 0u32;
        let mut last_error: Option<ClientError> = None;
        let request_id = self.fresh_request_id();
        for _attempt in 0..options.max_attempts {
            if tried.contains(&target) {
                let pause = options
                    .backoff
                    .saturating_mul(1 << pauses.min(10))
                    .min(Duration::from_secs(1));
                pauses += 1;
                if Instant::now() + pause >= deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            tried.push(target);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let (address, stub) = self.stub(target);
            let mut call_request = Request::new(request.clone());
            if send_deadline {
                call_request.set_timeout(remaining);
            }
            call_request
                .metadata_mut()
                .insert(corral_wire::headers::REQUEST_ID_HEADER, request_id.clone());
            let deadline_exceeded = || {
                ClientError::new(
                    Code::DeadlineExceeded,
                    format!(
                        "{address} did not answer within {} ms",
                        options.timeout.as_millis()
                    ),
                )
            };
            // A stream's opening, like a unary call, waits at most one attempt's time
            // at one replica while the call's deadline leaves room for another.
            let attempt = remaining.min(options.attempt_timeout);
            let status = match tokio::time::timeout(attempt, rpc(stub, call_request)).await {
                Ok(Ok(response)) => {
                    self.replicas().preferred = target;
                    return Ok(response);
                }
                // tonic enforces `grpc-timeout` itself and reports it as Cancelled.
                Ok(Err(status)) if is_timeout(&status) => return Err(deadline_exceeded()),
                Ok(Err(status)) => status,
                Err(_) if attempt < remaining => {
                    tracing::debug!(%address, "no answer within the attempt timeout; trying the next replica");
                    last_error = Some(deadline_exceeded());
                    unreachable.push(target);
                    target = self.next_to_try(target, &tried, &unreachable);
                    continue;
                }
                Err(_) => return Err(deadline_exceeded()),
            };
            tracing::debug!(%address, code = ?status.code(), message = status.message(), "call failed");
            if status.code() == Code::Unavailable {
                if let Some(leader) = leader_of(&status) {
                    match self.index_of(&leader) {
                        Some(leader_index) if !unreachable.contains(&leader_index) => {
                            last_error = Some(ClientError::from(&status));
                            target = leader_index;
                            continue;
                        }
                        Some(_) => {
                            tracing::debug!(%leader, "the named leader was unreachable in this call; trying the next replica");
                            last_error = Some(ClientError::from(&status));
                            target = self.next_to_try(target, &tried, &unreachable);
                            continue;
                        }
                        None => tracing::debug!(%leader, "ignoring an unusable leader address"),
                    }
                }
            }
            if is_connection_failure(&status) {
                last_error = Some(ClientError::from_status_at(&status, &address));
                unreachable.push(target);
                // The next replica at once: only a replica already tried waits.
                target = self.next_to_try(target, &tried, &unreachable);
                continue;
            }
            return Err(ClientError::from(&status));
        }
        Err(last_error.unwrap_or_else(|| {
            ClientError::new(
                Code::DeadlineExceeded,
                format!(
                    "no replica answered within {} ms",
                    options.timeout.as_millis()
                ),
            )
        }))
    }

    fn replicas(&self) -> std::sync::MutexGuard<'_, Replicas> {
        // A panic while holding the lock cannot leave `Replicas` inconsistent.
        self.inner
            .replicas
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The address at `index` and a stub for it (creating its channel on first use).
    fn stub(&self, index: usize) -> (String, AdminStub) {
        let mut replicas = self.replicas();
        let index = index.min(replicas.addresses.len() - 1);
        let channel = match &replicas.channels[index] {
            Some(channel) => channel.clone(),
            None => {
                let channel = corral_wire::network::lazy_channel(&replicas.endpoints[index]);
                replicas.channels[index] = Some(channel.clone());
                channel
            }
        };
        let stub = AdminClient::with_interceptor(channel, self.inner.interceptor.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        (replicas.addresses[index].clone(), stub)
    }

    /// The index of `address`, remembering it if new (None if it does not parse).
    fn index_of(&self, address: &str) -> Option<usize> {
        let address = self.inner.options.transport.uri(address);
        let mut replicas = self.replicas();
        if let Some(index) = replicas
            .addresses
            .iter()
            .position(|known| *known == address)
        {
            return Some(index);
        }
        let endpoint = endpoint(&address, &self.inner.options).ok()?;
        if replicas.addresses.len() == MAX_ADDRESSES {
            // Forget the oldest learned address (never a configured one).
            let configured = replicas.configured;
            if configured == MAX_ADDRESSES {
                return None;
            }
            replicas.addresses.remove(configured);
            replicas.endpoints.remove(configured);
            replicas.channels.remove(configured);
            replicas.preferred = 0;
        }
        replicas.addresses.push(address);
        replicas.endpoints.push(endpoint);
        replicas.channels.push(None);
        Some(replicas.addresses.len() - 1)
    }

    fn next_after(&self, index: usize) -> usize {
        (index + 1) % self.replicas().addresses.len()
    }

    /// The replica after `index` to try next: the first not tried yet in this call, else
    /// the first that was reachable, else simply the next one (both wait the backoff).
    fn next_to_try(&self, index: usize, tried: &[usize], unreachable: &[usize]) -> usize {
        let count = self.replicas().addresses.len();
        let after = |skip: &dyn Fn(usize) -> bool| {
            (1..=count)
                .map(|step| (index + step) % count)
                .find(|candidate| !skip(*candidate))
        };
        after(&|candidate| tried.contains(&candidate))
            .or_else(|| after(&|candidate| unreachable.contains(&candidate)))
            .unwrap_or_else(|| self.next_after(index))
    }
}

/// Whether tonic gave up on the call because its `grpc-timeout` passed.
fn is_timeout(status: &Status) -> bool {
    status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message().contains("Timeout expired"))
}

fn endpoint(address: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    options
        .transport
        .endpoint(address)
        .map(|endpoint| {
            endpoint
                .connect_timeout(options.connect_timeout)
                .tcp_nodelay(true)
                // A replica that vanished without closing the connection is noticed
                // within 10 s, not when the operating system gives up on it.
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        })
        .map_err(ClientError::invalid_argument)
}

/// One typed method per Admin RPC, each a `call` of the generated method.
macro_rules! admin_rpcs {
    ($( $(#[$doc:meta])* fn $method:ident($request:ty) -> $response:ty; )*) => {
        impl CorralClient {
            $(
                $(#[$doc])*
                pub async fn $method(&self, request: impl Into<$request>) -> Result<$response, ClientError> {
                    self.call(request.into(), |mut admin, request| async move { admin.$method(request).await })
                        .await
                }
            )*
        }
    };
}

admin_rpcs! {
    /// Creates a tenant (platform admin).
    fn create_tenant(pb::CreateTenantRequest) -> pb::Tenant;
    /// Replaces a tenant's quota (platform admin).
    fn set_tenant_quota(pb::SetTenantQuotaRequest) -> pb::Ack;
    /// Deletes a tenant (platform admin); accepts a tenant id.
    fn delete_tenant(pb::DeleteTenantRequest) -> pb::Ack;
    /// Lists tenants.
    fn list_tenants(pb::ListTenantsRequest) -> pb::ListTenantsResponse;
    /// Creates an API token; the secret is in the answer only.
    fn create_token(pb::CreateTokenRequest) -> pb::CreateTokenResponse;
    /// Revokes a token by name.
    fn revoke_token(pb::RevokeTokenRequest) -> pb::Ack;
    /// Gives a token a new secret (in the answer only); the old one works for the grace.
    fn rotate_token(pb::RotateTokenRequest) -> pb::CreateTokenResponse;
    /// Lists tokens the caller may manage or audit (never their secrets).
    fn list_tokens(pb::ListTokensRequest) -> pb::ListTokensResponse;
    /// Defines (or redefines) a node flavor (platform admin).
    fn define_flavor(pb::Flavor) -> pb::Ack;
    /// Lists flavors (the request only carries read options).
    fn list_flavors(pb::ListTenantsRequest) -> pb::ListFlavorsResponse;
    /// Creates a network.
    fn create_network(pb::CreateNetworkRequest) -> pb::Network;
    /// Deletes a network; accepts a network id.
    fn delete_network(pb::DeleteNetworkRequest) -> pb::Ack;
    /// Lists networks.
    fn list_networks(pb::ListNetworksRequest) -> pb::ListNetworksResponse;
    /// Replaces the storage endpoints attached to a network.
    fn set_network_storage(pb::SetNetworkStorageRequest) -> pb::Ack;
    /// Creates a pool.
    fn create_pool(pb::CreatePoolRequest) -> pb::Pool;
    /// Reads one pool; accepts a pool id.
    fn get_pool(pb::GetPoolRequest) -> pb::Pool;
    /// Lists pools.
    fn list_pools(pb::ListPoolsRequest) -> pb::ListPoolsResponse;
    /// Sets the node count of one flavor and zone of a pool.
    fn scale_pool(pb::ScalePoolRequest) -> pb::Ack;
    /// Deletes a pool.
    fn delete_pool(pb::DeletePoolRequest) -> pb::Ack;
    /// Sets the job types a pool takes.
    fn set_pool_job_types(pb::SetPoolJobTypesRequest) -> pb::Ack;
    /// Starts a driver upgrade of a pool's nodes.
    fn request_driver_upgrade(pb::RequestDriverUpgradeRequest) -> pb::Ack;
    /// Ends a pool's driver upgrade where it stands.
    fn cancel_driver_upgrade(pb::CancelDriverUpgradeRequest) -> pb::Ack;
    /// Renews a prepaid pool.
    fn renew_pool(pb::RenewPoolRequest) -> pb::Ack;
    /// Registers a node into the platform inventory.
    fn register_node(pb::RegisterNodeRequest) -> pb::Node;
    /// Reads one node; accepts a node id.
    fn get_node(pb::GetNodeRequest) -> pb::Node;
    /// Lists nodes.
    fn list_nodes(pb::ListNodesRequest) -> pb::ListNodesResponse;
    /// Drains a node.
    fn drain_node(pb::DrainNodeRequest) -> pb::Ack;
    /// Marks a node unschedulable; accepts a node id.
    fn cordon_node(pb::NodeRef) -> pb::Ack;
    /// Marks a node schedulable again; accepts a node id.
    fn uncordon_node(pb::NodeRef) -> pb::Ack;
    /// Protects a node from deletion; accepts a node id.
    fn lock_node(pb::NodeRef) -> pb::Ack;
    /// Removes a node's deletion lock; accepts a node id.
    fn unlock_node(pb::NodeRef) -> pb::Ack;
    /// Deletes a node; accepts a node id.
    fn delete_node(pb::NodeRef) -> pb::Ack;
    /// Replaces a node's taints.
    fn set_node_taints(pb::SetNodeTaintsRequest) -> pb::Ack;
    /// Replaces a node's labels.
    fn set_node_labels(pb::SetNodeLabelsRequest) -> pb::Ack;
    /// Makes a node of a dedicated pool a hot standby, or a regular node again.
    fn set_node_standby(pb::SetNodeStandbyRequest) -> pb::Ack;
    /// Usage reported by the agents, per node (answered by the leader).
    fn node_metrics(pb::NodeMetricsRequest) -> pb::NodeMetricsResponse;
    /// Submits a job; accepts a `pb::JobSpec`.
    fn submit_job(pb::SubmitJobRequest) -> pb::SubmitJobResponse;
    /// Submits several jobs at once; accepts a `Vec<pb::JobSpec>`.
    fn submit_jobs(pb::SubmitJobsRequest) -> pb::SubmitJobsResponse;
    /// Reads one job; accepts a job id.
    fn get_job(pb::GetJobRequest) -> pb::Job;
    /// Lists jobs.
    fn list_jobs(pb::ListJobsRequest) -> pb::ListJobsResponse;
    /// Terminates a job; accepts a job id.
    fn terminate_job(pb::JobRef) -> pb::Ack;
    /// Stops an inference service or notebook; accepts a job id.
    fn stop_job(pb::JobRef) -> pb::Ack;
    /// Starts a stopped inference service or notebook; accepts a job id.
    fn start_job(pb::JobRef) -> pb::Ack;
    /// Changes a pending job's priority.
    fn change_priority(pb::ChangePriorityRequest) -> pb::Ack;
    /// Lists bill lines and totals.
    fn list_bills(pb::ListBillsRequest) -> pb::ListBillsResponse;
    /// Lists audit records the caller may see, oldest first.
    fn list_audit(pb::ListAuditRequest) -> pb::ListAuditResponse;
    /// Adds a replica to the cluster (platform admin).
    fn add_replica(pb::AddReplicaRequest) -> pb::Ack;
    /// Removes a replica from the cluster (platform admin); accepts a replica id.
    fn remove_replica(pb::RemoveReplicaRequest) -> pb::Ack;
    /// Clears cluster alarms (platform admin): one replica's, or all with replica 0.
    fn disarm_alarm(pb::DisarmAlarmRequest) -> pb::Ack;
    /// Creates a queue in a pool (platform admin for the public pool, the owner for a
    /// dedicated one).
    fn create_queue(pb::QueueSpec) -> pb::Ack;
    /// Replaces a queue's guarantee, limit, weight, members and default mark.
    fn update_queue(pb::QueueSpec) -> pb::Ack;
    /// Deletes a queue with no active jobs.
    fn delete_queue(pb::DeleteQueueRequest) -> pb::Ack;
    /// Lists a pool's queues with their use, borrowing and pending jobs.
    fn list_queues(pb::ListQueuesRequest) -> pb::ListQueuesResponse;
}

impl CorralClient {
    /// The cluster's Raft status as seen by the replica answering, with its state
    /// digest when `with_digest` (costly on a large state: see `ClusterStatusRequest`).
    pub async fn cluster_status(
        &self,
        with_digest: bool,
    ) -> Result<pb::ClusterStatusResponse, ClientError> {
        let request = pb::ClusterStatusRequest { with_digest };
        self.call(request, |mut admin, request| async move {
            admin.cluster_status(request).await
        })
        .await
    }

    /// Asks the answering replica to take a snapshot now.
    pub async fn trigger_snapshot(&self) -> Result<pb::Ack, ClientError> {
        self.call(pb::Empty {}, |mut admin, request| async move {
            admin.trigger_snapshot(request).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_address_without_a_ca_is_refused_not_downgraded() {
        let error = CorralClient::connect(
            vec!["https://127.0.0.1:1".into()],
            None,
            ClientOptions::default(),
        )
        .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().contains("no CA is configured"), "{error}");
        let tls = ClientOptions {
            transport: Transport::Tls(corral_wire::tls::ClientTls::new(Vec::new(), None)),
            ..ClientOptions::default()
        };
        let client = CorralClient::connect(
            vec!["127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            None,
            tls,
        )
        .unwrap();
        assert_eq!(
            client.addresses(),
            vec!["https://127.0.0.1:1", "http://127.0.0.1:2"],
            "host:port means TLS; plaintext only where asked for"
        );
    }

    #[test]
    fn connect_validates_its_input_without_connecting() {
        let client = CorralClient::connect(
            vec![
                "127.0.0.1:1".into(),
                "http://127.0.0.1:1".into(),
                " ".into(),
                "localhost:2".into(),
            ],
            Some("abc".into()),
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(
            client.addresses(),
            vec!["http://127.0.0.1:1", "http://localhost:2"]
        );
        let error = CorralClient::connect(vec![], None, ClientOptions::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid argument: no manager address given"
        );
        let error = CorralClient::connect(
            vec!["a:1".into()],
            Some("tök".into()),
            ClientOptions::default(),
        )
        .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(
            CorralClient::connect(vec!["not a uri:x".into()], None, ClientOptions::default())
                .is_err()
        );
    }

    #[test]
    fn the_interceptor_adds_the_bearer_token() {
        let mut interceptor = AuthInterceptor::new(Some("s3cret")).unwrap();
        let request = interceptor.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        let mut anonymous = AuthInterceptor::new(None).unwrap();
        assert!(anonymous
            .call(Request::new(()))
            .unwrap()
            .metadata()
            .get("authorization")
            .is_none());
    }

    #[test]
    fn learned_leaders_are_remembered_once() {
        let client =
            CorralClient::connect(vec!["a:1".into()], None, ClientOptions::default()).unwrap();
        assert_eq!(client.index_of("b:2"), Some(1));
        assert_eq!(client.index_of("http://b:2"), Some(1));
        assert_eq!(client.index_of("a:1"), Some(0));
        assert_eq!(client.next_after(1), 0);
    }

    #[test]
    fn the_next_replica_is_one_not_tried_then_one_that_answered() {
        let client = CorralClient::connect(
            vec!["a:1".into(), "b:2".into(), "c:3".into(), "d:4".into()],
            None,
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(client.next_to_try(0, &[0], &[0]), 1);
        assert_eq!(client.next_to_try(1, &[0, 1], &[0]), 2);
        assert_eq!(client.next_to_try(3, &[3, 0], &[]), 1);
        assert_eq!(client.next_to_try(3, &[0, 1, 2, 3], &[0, 1]), 2);
        assert_eq!(client.next_to_try(1, &[0, 1, 2, 3], &[0, 1, 2, 3]), 2);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_gives_an_unavailable_error_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let options = ClientOptions {
            max_attempts: 2,
            backoff: Duration::from_millis(1),
            ..ClientOptions::default()
        };
        let client = CorralClient::connect(vec![address.clone()], None, options).unwrap();
        let error = client.get_job(7).await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error}");
        assert!(error.message().contains(&address), "{error}");
    }
}

//! The authorization matrix: every RPC of admin.proto, agent.proto and raft.proto,
//! called by every kind of caller that must be refused, against real `corral server`
//! processes. Each cell is the documented code; the state digest is the same after
//! every refused call as before. The rows are data: an RPC added to a proto fails
//! `every_rpc_of_the_protos_has_a_row` until it gets one.
//!
//! What each class of RPC allows (SECURITY.md says the same in prose):
//! - a plaintext client, or one that trusts another CA: refused in the handshake;
//! - a machine's call (AgentService, Raft) without a client certificate of the
//!   cluster CA: Unauthenticated, whatever its token;
//! - no, malformed, unknown, expired or revoked credentials: Unauthenticated, everywhere;
//! - a node's credential or a bootstrap token on the Admin service: PermissionDenied;
//! - anyone but a node on the AgentService: PermissionDenied, and a node only for itself;
//! - the raft service: the cluster secret only (Unauthenticated otherwise);
//! - read-only roles (tenant viewer, platform auditor) on any write: PermissionDenied;
//! - another tenant's objects: NotFound (their existence does not leak);
//! - platform operations and token management to tenant operators: PermissionDenied.

use crate::cluster::{define_world, training_spec, GPU_FLAVOR};
use crate::common;
use common::{resources, Admin, Cluster, ADMIN_TOKEN, AGENT_TOKEN};
use corral_client::pb;
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    NoCredential,
    /// An `authorization` header that is not a bearer token.
    Malformed,
    Unknown,
    Expired,
    Revoked,
    /// Tenant beta's operator, on tenant alpha's objects.
    OtherTenant,
    /// Alpha's viewer.
    Viewer,
    /// Alpha's operator (not its admin).
    Operator,
    Auditor,
    /// Node B's credential, on node A's agent calls (and on the Admin service).
    OtherNode,
    /// A node-bootstrap token.
    Bootstrap,
    /// The platform admin's token over plaintext: the TLS port does not speak it.
    Plaintext,
    /// The platform admin's token, from a client that trusts another CA.
    OtherCa,
    /// A machine's own secret (node A's credential, or the cluster secret on the peer
    /// service) over TLS but without a client certificate: an outsider.
    NoClientCertificate,
}

const CALLERS: [Caller; 14] = [
    Caller::NoCredential,
    Caller::Malformed,
    Caller::Unknown,
    Caller::Expired,
    Caller::Revoked,
    Caller::OtherTenant,
    Caller::Viewer,
    Caller::Operator,
    Caller::Auditor,
    Caller::OtherNode,
    Caller::Bootstrap,
    Caller::Plaintext,
    Caller::OtherCa,
    Caller::NoClientCertificate,
];

/// What an RPC does, which decides who may call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A write only the platform admin may make.
    PlatformWrite,
    /// A read only the platform admin and auditor may make.
    PlatformRead,
    /// A write on one of tenant alpha's objects.
    TenantWrite,
    /// A read of one of tenant alpha's objects.
    TenantGet,
    /// A listing, filtered to what the caller may see.
    TenantList,
    /// Creating, rotating or revoking tokens.
    TokenWrite,
    /// Listing tokens (platform admin, auditor, a tenant's admin).
    TokenList,
    /// An AgentService call about node A.
    Agent,
    /// A peer call between replicas.
    Peer,
}

/// The code `caller` must get from an RPC of `class`; `None` where the call would be
/// allowed and would change the state (not made: the digest must stay put).
fn expected(class: Class, caller: Caller) -> Option<Code> {
    use Caller::*;
    use Class::*;
    match (class, caller) {
        // Refused in the handshake; `TRANSPORT_REFUSED` stands for whatever code the
        // client library gives a failed connection.
        (_, Plaintext | OtherCa) => Some(TRANSPORT_REFUSED),
        (Agent | Peer, NoClientCertificate) => Some(Code::Unauthenticated),
        // People's clients have no certificate: the token decides (the other columns).
        (_, NoClientCertificate) => None,
        (_, NoCredential | Malformed | Unknown | Expired | Revoked) => Some(Code::Unauthenticated),
        (Peer, _) => Some(Code::Unauthenticated),
        (Agent, OtherNode) => Some(Code::PermissionDenied),
        (Agent, _) => Some(Code::PermissionDenied),
        (_, OtherNode | Bootstrap) => Some(Code::PermissionDenied),
        (TenantGet | TenantList, Viewer | Operator | Auditor) => Some(Code::Ok),
        (TenantGet, OtherTenant) => Some(Code::NotFound),
        (TenantList, OtherTenant) => Some(Code::Ok),
        (PlatformRead, Auditor) => Some(Code::Ok),
        (TokenList, Auditor) => Some(Code::Ok),
        (TenantWrite, OtherTenant) => Some(Code::NotFound),
        (TenantWrite, Operator) => None,
        (PlatformWrite | PlatformRead | TenantWrite | TokenWrite | TokenList, _) => {
            Some(Code::PermissionDenied)
        }
    }
}

/// Any failed call: a connection the handshake refused ends in a transport error whose
/// code depends on where it failed (Unavailable, Unknown, Internal), never Ok.
const TRANSPORT_REFUSED: Code = Code::DataLoss;

fn matches(want: Code, got: Code) -> bool {
    if want == TRANSPORT_REFUSED {
        got != Code::Ok
    } else {
        got == want
    }
}

/// Cells whose code differs from their class's rule, each with why.
const EXCEPTIONS: [(&str, Caller, Code); 6] = [
    // Another tenant's token is not found (its existence does not leak).
    ("RevokeToken", Caller::OtherTenant, Code::NotFound),
    ("RotateToken", Caller::OtherTenant, Code::NotFound),
    // Allowed readers get through authorization; the job has no running replica whose
    // output could be read.
    ("JobLogs", Caller::Viewer, Code::Unavailable),
    ("JobLogs", Caller::Operator, Code::Unavailable),
    ("JobLogs", Caller::Auditor, Code::Unavailable),
    // A bootstrap token may register nodes, but never take over a live node that
    // holds its own credential.
    (
        "RegisterAgentNode",
        Caller::Bootstrap,
        Code::FailedPrecondition,
    ),
];

fn expected_for(rpc: &str, class: Class, caller: Caller) -> Option<Code> {
    EXCEPTIONS
        .iter()
        .find(|(name, who, _)| *name == rpc && *who == caller)
        .map(|(_, _, code)| *code)
        .or_else(|| expected(class, caller))
}

/// The objects the calls name, and the credentials of each caller.
struct Fixture {
    address: String,
    alpha: u64,
    beta: u64,
    network: u64,
    dedicated_pool: u64,
    /// A node in alpha's dedicated pool.
    alpha_node: u64,
    /// A free node of the inventory.
    free_node: u64,
    job: u64,
    node_a: u64,
    node_a_credential: String,
    node_b_credential: String,
    /// A CA the cluster does not trust.
    other_ca: std::path::PathBuf,
    _other_ca_dir: tempfile::TempDir,
    tokens: std::collections::BTreeMap<Caller, String>,
}

impl Fixture {
    /// Over TLS with a client certificate of the cluster CA, as a machine would call,
    /// except for the transport columns.
    fn channel(&self, caller: Caller) -> Channel {
        match caller {
            Caller::Plaintext => {
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(5))
                    .connect_lazy()
            }
            Caller::OtherCa => common::tls::endpoint(
                &self.address,
                tonic::transport::ClientTlsConfig::new().ca_certificate(
                    tonic::transport::Certificate::from_pem(
                        std::fs::read(&self.other_ca).expect("other CA"),
                    ),
                ),
            )
            .connect_lazy(),
            Caller::NoClientCertificate => common::tls::channel(&self.address),
            _ => common::tls::peer_channel(&self.address),
        }
    }

    fn admin(&self, caller: Caller) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::new(self.channel(caller))
    }

    fn agents(&self, caller: Caller) -> pb::agent_service_client::AgentServiceClient<Channel> {
        pb::agent_service_client::AgentServiceClient::new(self.channel(caller))
    }

    fn raft(&self, caller: Caller) -> pb::raft_client::RaftClient<Channel> {
        pb::raft_client::RaftClient::new(self.channel(caller))
    }

    /// `message` as `caller` sends it.
    fn request<T>(&self, caller: Caller, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let header = match caller {
            Caller::NoCredential => return request,
            Caller::Malformed => "Basic YWRtaW46YWRtaW4=".to_string(),
            Caller::OtherNode => format!("Bearer {}", self.node_b_credential),
            Caller::Plaintext | Caller::OtherCa => format!("Bearer {ADMIN_TOKEN}"),
            // Node A's own credential: right for its agent calls, and the peer service
            // refuses it as it refuses everything but the cluster secret.
            Caller::NoClientCertificate => format!("Bearer {}", self.node_a_credential),
            other => format!("Bearer {}", self.tokens[&other]),
        };
        let value: MetadataValue<_> = header.parse().expect("header");
        request.metadata_mut().insert("authorization", value);
        request
    }

    /// A job for alpha's dedicated pool (the public pool takes anyone's jobs).
    fn spec(&self) -> pb::JobSpec {
        training_spec("matrix".into(), self.dedicated_pool, 0)
    }
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

type Call = for<'a> fn(&'a Fixture, Caller) -> BoxFuture<'a, Code>;

/// One row: an RPC, its class, and how to call it.
struct Row {
    rpc: &'static str,
    class: Class,
    call: Call,
}

/// `row!(Class, service, method, |fixture| message)`.
macro_rules! row {
    ($rpc:literal, $class:ident, $client:ident, $method:ident, |$f:ident| $message:expr) => {
        Row {
            rpc: $rpc,
            class: Class::$class,
            call: |$f: &Fixture, caller: Caller| {
                Box::pin(async move {
                    let message = $message;
                    code(
                        $f.$client(caller)
                            .$method($f.request(caller, message))
                            .await,
                    )
                })
            },
        }
    };
}

fn rows() -> Vec<Row> {
    vec![
        row!("CreateTenant", PlatformWrite, admin, create_tenant, |f| {
            pb::CreateTenantRequest {
                name: "intruder".into(),
                ..Default::default()
            }
        }),
        row!(
            "SetTenantQuota",
            PlatformWrite,
            admin,
            set_tenant_quota,
            |f| {
                pb::SetTenantQuotaRequest {
                    tenant: f.alpha,
                    quota: Some(resources(1, 1, 0)),
                }
            }
        ),
        row!("DeleteTenant", PlatformWrite, admin, delete_tenant, |f| {
            pb::DeleteTenantRequest { tenant: f.beta }
        }),
        row!("ListTenants", TenantList, admin, list_tenants, |f| {
            pb::ListTenantsRequest::default()
        }),
        row!("CreateToken", TokenWrite, admin, create_token, |f| {
            pb::CreateTokenRequest {
                name: "minted".into(),
                tenant: f.alpha,
                role: pb::TokenRole::Admin as i32,
                ..Default::default()
            }
        }),
        row!("RevokeToken", TokenWrite, admin, revoke_token, |f| {
            pb::RevokeTokenRequest {
                name: "alpha-viewer".into(),
            }
        }),
        row!("RotateToken", TokenWrite, admin, rotate_token, |f| {
            pb::RotateTokenRequest {
                name: "alpha-viewer".into(),
                grace_seconds: 0,
            }
        }),
        row!("ListTokens", TokenList, admin, list_tokens, |f| {
            pb::ListTokensRequest::default()
        }),
        row!("ListBills", TenantList, admin, list_bills, |f| {
            pb::ListBillsRequest::default()
        }),
        row!("ListAudit", TenantList, admin, list_audit, |f| {
            pb::ListAuditRequest::default()
        }),
        row!("DefineFlavor", PlatformWrite, admin, define_flavor, |f| {
            pb::Flavor {
                name: "forged".into(),
                capacity: Some(resources(1_000, 1_024, 0)),
                cpu_architecture: "x86_64".into(),
                ..Default::default()
            }
        }),
        row!("ListFlavors", TenantList, admin, list_flavors, |f| {
            pb::ListTenantsRequest::default()
        }),
        row!("CreateNetwork", TenantWrite, admin, create_network, |f| {
            pb::CreateNetworkRequest {
                tenant: f.alpha,
                name: "matrix-net".into(),
                cidr: "192.168.99.0/24".into(),
            }
        }),
        row!("DeleteNetwork", TenantWrite, admin, delete_network, |f| {
            pb::DeleteNetworkRequest { network: f.network }
        }),
        row!(
            "SetNetworkStorage",
            TenantWrite,
            admin,
            set_network_storage,
            |f| {
                pb::SetNetworkStorageRequest {
                    network: f.network,
                    endpoints: vec!["nfs://10.0.0.1/x".into()],
                }
            }
        ),
        row!("ListNetworks", TenantList, admin, list_networks, |f| {
            pb::ListNetworksRequest::default()
        }),
        row!("CreatePool", TenantWrite, admin, create_pool, |f| {
            pb::CreatePoolRequest {
                name: "matrix-pool".into(),
                kind: "dedicated".into(),
                owner: f.alpha,
                network: f.network,
                flavors: vec![pb::PoolFlavor {
                    flavor: GPU_FLAVOR.into(),
                    zone: "zone-a".into(),
                    node_count: 1,
                }],
                job_types: vec!["training".into()],
                billing: Some(pb::Billing {
                    mode: "pay-per-use".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }),
        row!("GetPool", TenantGet, admin, get_pool, |f| {
            pb::GetPoolRequest {
                pool: f.dedicated_pool,
                ..Default::default()
            }
        }),
        row!("ListPools", TenantList, admin, list_pools, |f| {
            pb::ListPoolsRequest::default()
        }),
        row!("ScalePool", TenantWrite, admin, scale_pool, |f| {
            pb::ScalePoolRequest {
                pool: f.dedicated_pool,
                flavor: GPU_FLAVOR.into(),
                zone: "zone-a".into(),
                node_count: 3,
            }
        }),
        row!("DeletePool", TenantWrite, admin, delete_pool, |f| {
            pb::DeletePoolRequest {
                pool: f.dedicated_pool,
                force: true,
            }
        }),
        row!(
            "SetPoolJobTypes",
            TenantWrite,
            admin,
            set_pool_job_types,
            |f| {
                pb::SetPoolJobTypesRequest {
                    pool: f.dedicated_pool,
                    job_types: vec!["inference".into()],
                }
            }
        ),
        row!(
            "CancelDriverUpgrade",
            TenantWrite,
            admin,
            cancel_driver_upgrade,
            |f| pb::CancelDriverUpgradeRequest {
                pool: f.dedicated_pool
            }
        ),
        row!(
            "RequestDriverUpgrade",
            TenantWrite,
            admin,
            request_driver_upgrade,
            |f| {
                pb::RequestDriverUpgradeRequest {
                    pool: f.dedicated_pool,
                    target: Some(pb::DriverSpec {
                        gpu_driver_version: "999.1".into(),
                        ..Default::default()
                    }),
                    mode: "secure".into(),
                    batch_size: 1,
                    ..Default::default()
                }
            }
        ),
        row!("RenewPool", TenantWrite, admin, renew_pool, |f| {
            pb::RenewPoolRequest {
                pool: f.dedicated_pool,
                periods: 1,
            }
        }),
        row!("RegisterNode", PlatformWrite, admin, register_node, |f| {
            pb::RegisterNodeRequest {
                name: "rogue".into(),
                flavor: GPU_FLAVOR.into(),
                zone: "zone-a".into(),
                ..Default::default()
            }
        }),
        row!("GetNode", TenantGet, admin, get_node, |f| {
            pb::GetNodeRequest {
                node: f.alpha_node,
                ..Default::default()
            }
        }),
        row!("ListNodes", TenantList, admin, list_nodes, |f| {
            pb::ListNodesRequest::default()
        }),
        row!("DrainNode", TenantWrite, admin, drain_node, |f| {
            pb::DrainNodeRequest {
                node: f.alpha_node,
                deadline_ms: 0,
            }
        }),
        row!("CordonNode", TenantWrite, admin, cordon_node, |f| {
            pb::NodeRef { node: f.alpha_node }
        }),
        row!("UncordonNode", TenantWrite, admin, uncordon_node, |f| {
            pb::NodeRef { node: f.alpha_node }
        }),
        row!("LockNode", TenantWrite, admin, lock_node, |f| pb::NodeRef {
            node: f.alpha_node
        }),
        row!("UnlockNode", TenantWrite, admin, unlock_node, |f| {
            pb::NodeRef { node: f.alpha_node }
        }),
        row!("DeleteNode", PlatformWrite, admin, delete_node, |f| {
            pb::NodeRef { node: f.free_node }
        }),
        row!("SetNodeTaints", TenantWrite, admin, set_node_taints, |f| {
            pb::SetNodeTaintsRequest {
                node: f.alpha_node,
                taints: vec![pb::Taint {
                    key: "matrix".into(),
                    value: "x".into(),
                    effect: "NoSchedule".into(),
                }],
            }
        }),
        row!("SetNodeLabels", TenantWrite, admin, set_node_labels, |f| {
            pb::SetNodeLabelsRequest {
                node: f.alpha_node,
                labels: [("rack".to_string(), "r9".to_string())].into(),
            }
        }),
        row!(
            "SetNodeStandby",
            TenantWrite,
            admin,
            set_node_standby,
            |f| {
                pb::SetNodeStandbyRequest {
                    node: f.alpha_node,
                    standby: true,
                }
            }
        ),
        row!("NodeMetrics", TenantList, admin, node_metrics, |f| {
            pb::NodeMetricsRequest::default()
        }),
        row!("JobLogs", TenantGet, admin, job_logs, |f| {
            pb::JobLogsRequest {
                job: f.job,
                ..Default::default()
            }
        }),
        row!("SubmitJob", TenantWrite, admin, submit_job, |f| {
            pb::SubmitJobRequest {
                spec: Some(f.spec()),
            }
        }),
        // A refused spec fails its own slot, not the call: the slot's error is the cell.
        Row {
            rpc: "SubmitJobs",
            class: Class::TenantWrite,
            call: |f: &Fixture, caller: Caller| {
                Box::pin(async move {
                    let message = pb::SubmitJobsRequest {
                        specs: vec![f.spec()],
                    };
                    match f
                        .admin(caller)
                        .submit_jobs(f.request(caller, message))
                        .await
                    {
                        Err(status) => status.code(),
                        Ok(response) => match response.into_inner().results.first() {
                            Some(slot) if slot.error.contains("not found") => Code::NotFound,
                            Some(slot) if slot.error.is_empty() && slot.job != 0 => Code::Ok,
                            _ => Code::Unknown,
                        },
                    }
                })
            },
        },
        row!("GetJob", TenantGet, admin, get_job, |f| pb::GetJobRequest {
            job: f.job,
            ..Default::default()
        }),
        row!("ListJobs", TenantList, admin, list_jobs, |f| {
            pb::ListJobsRequest::default()
        }),
        row!("TerminateJob", TenantWrite, admin, terminate_job, |f| {
            pb::JobRef { job: f.job }
        }),
        row!("StopJob", TenantWrite, admin, stop_job, |f| pb::JobRef {
            job: f.job
        }),
        row!("StartJob", TenantWrite, admin, start_job, |f| pb::JobRef {
            job: f.job
        }),
        row!("ChangePriority", TenantWrite, admin, change_priority, |f| {
            pb::ChangePriorityRequest {
                job: f.job,
                priority: 2,
            }
        }),
        row!("Watch", TenantList, admin, watch, |f| pb::WatchRequest {
            from_index: 1
        }),
        row!("ClusterStatus", PlatformRead, admin, cluster_status, |f| {
            pb::ClusterStatusRequest { with_digest: true }
        }),
        row!("AddReplica", PlatformWrite, admin, add_replica, |f| {
            pb::AddReplicaRequest {
                id: 9,
                address: "127.0.0.1:1".into(),
            }
        }),
        row!("RemoveReplica", PlatformWrite, admin, remove_replica, |f| {
            pb::RemoveReplicaRequest { id: 1 }
        }),
        row!(
            "TriggerSnapshot",
            PlatformWrite,
            admin,
            trigger_snapshot,
            |f| pb::Empty {}
        ),
        row!("DisarmAlarm", PlatformWrite, admin, disarm_alarm, |f| {
            pb::DisarmAlarmRequest { replica: 9 }
        }),
        // Queues of alpha's dedicated pool: its owner manages them.
        row!("CreateQueue", TenantWrite, admin, create_queue, |f| {
            pb::QueueSpec {
                pool: f.dedicated_pool,
                name: "matrix-queue".into(),
                weight: 1,
                ..Default::default()
            }
        }),
        row!("UpdateQueue", TenantWrite, admin, update_queue, |f| {
            pb::QueueSpec {
                pool: f.dedicated_pool,
                name: "matrix-queue".into(),
                weight: 2,
                ..Default::default()
            }
        }),
        row!("DeleteQueue", TenantWrite, admin, delete_queue, |f| {
            pb::DeleteQueueRequest {
                pool: f.dedicated_pool,
                name: "matrix-queue".into(),
            }
        }),
        row!("ListQueues", TenantGet, admin, list_queues, |f| {
            pb::ListQueuesRequest {
                pool: f.dedicated_pool,
                ..Default::default()
            }
        }),
        row!(
            "RegisterAgentNode",
            Agent,
            agents,
            register_agent_node,
            |f| {
                pb::RegisterAgentNodeRequest {
                    name: "node-a".into(),
                    flavor: GPU_FLAVOR.into(),
                    zone: "zone-a".into(),
                    agent_address: "10.9.9.9:1".into(),
                    ..Default::default()
                }
            }
        ),
        row!("Heartbeat", Agent, agents, heartbeat, |f| {
            pb::HeartbeatRequest {
                node: f.node_a,
                ..Default::default()
            }
        }),
        row!("WatchAssignments", Agent, agents, watch_assignments, |f| {
            pb::WatchAssignmentsRequest { node: f.node_a }
        }),
        row!("ReportReplica", Agent, agents, report_replica, |f| {
            pb::ReplicaReport {
                node: f.node_a,
                job: f.job,
                rank: 0,
                generation: 1,
                event: Some(pb::replica_report::Event::Exited(pb::ReplicaExitedReport {
                    exit_code: 1,
                    ..Default::default()
                })),
            }
        }),
        row!("ReportDriver", Agent, agents, report_driver, |f| {
            pb::DriverReport {
                node: f.node_a,
                gpu_driver_version: "1.0".into(),
                ..Default::default()
            }
        }),
        row!("AppendEntries", Peer, raft, append_entries, |f| {
            pb::RaftRequest {
                data: vec![1, 2, 3],
                ..Default::default()
            }
        }),
        row!("Vote", Peer, raft, vote, |f| pb::RaftRequest {
            data: vec![1],
            ..Default::default()
        }),
        row!("PreVote", Peer, raft, pre_vote, |f| pb::RaftRequest {
            data: vec![1],
            ..Default::default()
        }),
        row!("TransferLeader", Peer, raft, transfer_leader, |f| {
            pb::RaftRequest {
                data: vec![1],
                ..Default::default()
            }
        }),
        row!("Forward", Peer, raft, forward, |f| pb::RaftRequest {
            data: vec![1],
            ..Default::default()
        }),
        Row {
            rpc: "InstallSnapshot",
            class: Class::Peer,
            call: |f: &Fixture, caller: Caller| {
                Box::pin(async move {
                    let chunks = futures::stream::iter(vec![pb::SnapshotChunk {
                        payload: Some(pb::snapshot_chunk::Payload::Meta(vec![1])),
                    }]);
                    code(
                        f.raft(caller)
                            .install_snapshot(f.request(caller, chunks))
                            .await,
                    )
                })
            },
        },
    ]
}

/// RPCs served by agents, not managers: `AgentLogs.ReadLogs` takes a node's log key,
/// tested with a real agent in `crates/agent/tests/agent.rs`
/// (`logs_are_served_with_the_token_and_followed_until_the_process_ends`).
const SERVED_BY_AGENTS: [&str; 1] = ["ReadLogs"];

/// `rpc Name(` of every service in the protos.
fn rpcs_of_the_protos() -> BTreeSet<String> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut names = BTreeSet::new();
    for file in ["admin.proto", "agent.proto", "raft.proto"] {
        let text = std::fs::read_to_string(proto_dir.join(file)).expect("proto");
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("rpc ") {
                let name = rest.split('(').next().unwrap_or("").trim();
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn every_rpc_of_the_protos_has_a_row() {
    let mut covered: BTreeSet<String> = rows().iter().map(|row| row.rpc.to_string()).collect();
    covered.extend(SERVED_BY_AGENTS.iter().map(|rpc| rpc.to_string()));
    assert_eq!(rpcs_of_the_protos(), covered);
}

async fn token(admin: &Admin, name: &str, tenant: u64, role: pb::TokenRole, ttl: u64) -> String {
    admin
        .raw()
        .create_token(admin.request(pb::CreateTokenRequest {
            name: name.into(),
            tenant,
            role: role as i32,
            ttl_seconds: ttl,
            ..Default::default()
        }))
        .await
        .expect("create token")
        .into_inner()
        .secret
}

/// Register `name` through the AgentService with the configured bootstrap token.
async fn bootstrap_node(fixture_address: &str, name: &str) -> pb::RegisterAgentNodeResponse {
    let channel = common::tls::peer_channel(fixture_address);
    let mut request = Request::new(pb::RegisterAgentNodeRequest {
        name: name.into(),
        flavor: GPU_FLAVOR.into(),
        zone: "zone-a".into(),
        agent_address: format!("{name}.invalid:1"),
        ..Default::default()
    });
    let value: MetadataValue<_> = format!("Bearer {AGENT_TOKEN}").parse().expect("header");
    request.metadata_mut().insert("authorization", value);
    pb::agent_service_client::AgentServiceClient::new(channel)
        .register_agent_node(request)
        .await
        .expect("bootstrap a node")
        .into_inner()
}

async fn fixture(cluster: &Cluster) -> Fixture {
    let address = cluster.replicas[0].address.clone();
    let admin = Admin::connect(&address, ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    let (alpha, beta) = (world.tenant_ids[0], world.tenant_ids[1]);
    let mut client = admin.raw();
    let network = client
        .list_networks(admin.request(pb::ListNetworksRequest::default()))
        .await
        .expect("networks")
        .into_inner()
        .networks[0]
        .id;
    let nodes = client
        .list_nodes(admin.request(pb::ListNodesRequest::default()))
        .await
        .expect("nodes")
        .into_inner()
        .nodes;
    let alpha_node = nodes
        .iter()
        .find(|node| node.pool == world.dedicated_pool)
        .expect("a node of alpha's pool")
        .id;
    let free_node = nodes
        .iter()
        .find(|node| node.pool == 0)
        .expect("a free node")
        .id;
    let alpha_operator = world.tenant_tokens[0].clone();
    let job = client
        .submit_job(Request::from_parts(
            {
                let mut metadata = tonic::metadata::MetadataMap::new();
                let value: MetadataValue<_> =
                    format!("Bearer {alpha_operator}").parse().expect("header");
                metadata.insert("authorization", value);
                metadata
            },
            Default::default(),
            pb::SubmitJobRequest {
                spec: Some(training_spec("alpha-job".into(), world.public_pool, 0)),
            },
        ))
        .await
        .expect("alpha submits a job")
        .into_inner()
        .job;
    let node_a = bootstrap_node(&address, "node-a").await;
    let node_b = bootstrap_node(&address, "node-b").await;
    let mut tokens = std::collections::BTreeMap::new();
    tokens.insert(
        Caller::Unknown,
        "no-such-token-0123456789abcdef".to_string(),
    );
    tokens.insert(Caller::OtherTenant, world.tenant_tokens[1].clone());
    tokens.insert(Caller::Operator, alpha_operator);
    let viewer = token(&admin, "alpha-viewer", alpha, pb::TokenRole::Viewer, 0).await;
    tokens.insert(Caller::Viewer, viewer);
    let auditor = token(&admin, "auditor", 0, pb::TokenRole::PlatformAuditor, 0).await;
    tokens.insert(Caller::Auditor, auditor);
    let revoked = token(&admin, "revoked", alpha, pb::TokenRole::Admin, 0).await;
    client
        .revoke_token(admin.request(pb::RevokeTokenRequest {
            name: "revoked".into(),
        }))
        .await
        .expect("revoke");
    tokens.insert(Caller::Revoked, revoked);
    let expired = token(&admin, "expired", alpha, pb::TokenRole::Admin, 1).await;
    tokens.insert(Caller::Expired, expired);
    tokens.insert(Caller::Bootstrap, AGENT_TOKEN.to_string());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let other_ca_dir = tempfile::tempdir().expect("other CA directory");
    Fixture {
        address,
        alpha,
        beta,
        network,
        dedicated_pool: world.dedicated_pool,
        alpha_node,
        free_node,
        job,
        node_a: node_a.node,
        node_a_credential: node_a.credential,
        node_b_credential: node_b.credential,
        other_ca: common::tls::new_ca(other_ca_dir.path()),
        _other_ca_dir: other_ca_dir,
        tokens,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_call_gets_its_code_and_changes_nothing() {
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(1, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let fixture = fixture(&cluster).await;
    let admin = Admin::connect(&fixture.address, ADMIN_TOKEN).await;
    let before = admin.status().await.expect("status").objects_digest;

    let mut wrong = Vec::new();
    let mut cells = 0;
    for row in rows() {
        for caller in CALLERS {
            let Some(want) = expected_for(row.rpc, row.class, caller) else {
                continue;
            };
            let got = (row.call)(&fixture, caller).await;
            cells += 1;
            if !matches(want, got) {
                wrong.push(format!("{} as {caller:?}: {got:?}, want {want:?}", row.rpc));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Node A's own credential does work for node A: the refusals above are not
    // a credential that works for nobody.
    let mut heartbeat = Request::new(pb::HeartbeatRequest {
        node: fixture.node_a,
        ..Default::default()
    });
    let value: MetadataValue<_> = format!("Bearer {}", fixture.node_a_credential)
        .parse()
        .expect("header");
    heartbeat.metadata_mut().insert("authorization", value);
    fixture
        .agents(Caller::OtherNode)
        .heartbeat(heartbeat)
        .await
        .expect("node A heartbeats as itself");

    let after = admin.status().await.expect("status").objects_digest;
    assert!(!before.is_empty());
    assert_eq!(before, after, "a refused call changed the state");
}

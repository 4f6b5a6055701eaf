//! The dev cluster's replicas and demo world: manager replicas on loopback, a flavor
//! catalogue, a demo tenant with a token and a network, and, once the node agents
//! (`super`) have registered the dev nodes (`DEV_NODE_GROUPS`), the public pool over
//! them. Real raft, real gRPC, real disk; the fixtures are the CLI's, not the replica's.

use corral_model::command::{PoolCreate, PoolKindRequest};
use corral_model::{BillingMode, Command, DriverSpec, Flavor, JobType, PoolFlavor, Resources};
use corral_server::{
    AuthConfig, ClusterConfig, ConfigError, LoopConfig, Manager, MemberConfig, RaftConfig,
    ServerConfig, ServerError, StorageConfig, TlsConfig,
};
use corral_store::Engine;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const DEV_ADMIN_TOKEN: &str = "corral-dev-admin-token";
pub const DEV_TENANT_TOKEN: &str = "corral-dev-demo-token";
/// The dev agents' node-bootstrap token: each dev node registers with it once and
/// then uses the credential it received (kept under the data directory).
pub const DEV_BOOTSTRAP_TOKEN: &str = "corral-dev-node-bootstrap-token";
const DEV_CLUSTER_SECRET: &str = "corral-dev-cluster-secret";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Replica 1 listens here; replica i on `port + i - 1`.
    pub port: u16,
    /// Where replicas keep their data; a fresh temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// 1 or 3 replicas.
    pub replicas: u8,
    pub engine: Engine,
}

/// The dev nodes, registered by in-process agents: (agent name, flavor, zone, nodes).
/// An agent simulating N nodes names them `<name>-1..N`.
pub const DEV_NODE_GROUPS: [(&str, &str, &str, u32); 3] = [
    ("dev-gpu", "gpu-8x-a100", "zone-a", 4),
    ("dev-cpu", "cpu-32", "zone-a", 2),
    ("dev-npu", "npu-8x-910b", "zone-b", 2),
];

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            port: 7070,
            data_dir: None,
            replicas: 3,
            engine: Engine::Sled,
        }
    }
}

pub struct DevCluster {
    pub managers: Vec<Manager>,
    pub data_dir: PathBuf,
    /// The dev CA and the one loopback certificate managers and agents share.
    pub tls: TlsConfig,
}

impl DevCluster {
    pub fn address(&self) -> String {
        self.managers[0].address.to_string()
    }

    pub async fn shutdown(self) {
        for manager in self.managers {
            manager.shutdown().await;
        }
    }
}

/// The name of the certificate every dev manager and agent presents.
const DEV_CERTIFICATE: &str = "dev";

/// A development CA in `<data_dir>/tls` (kept across restarts on the same directory, so
/// the path the user was told stays good) and a loopback certificate it signs.
fn dev_tls(data_dir: &std::path::Path) -> Result<TlsConfig, ServerError> {
    let directory = data_dir.join("tls");
    let failed = |reason: String| {
        ServerError::Config(ConfigError {
            field: "tls".into(),
            reason,
        })
    };
    if !crate::cert::ca_exists(&directory) {
        crate::cert::init(&directory).map_err(failed)?;
    }
    let issued =
        crate::cert::issue(&directory, DEV_CERTIFICATE, &[], &directory).map_err(failed)?;
    Ok(TlsConfig::files(
        crate::cert::ca_file(&directory),
        issued.certificate,
        issued.key,
    ))
}

fn replica_config(
    options: &DevOptions,
    data_dir: &std::path::Path,
    id: u64,
    tls: &TlsConfig,
) -> ServerConfig {
    let members = (1..=u64::from(options.replicas))
        .map(|member| MemberConfig {
            id: member,
            address: format!("127.0.0.1:{}", u64::from(options.port) + member - 1),
        })
        .collect();
    ServerConfig {
        id,
        listen: format!("127.0.0.1:{}", u64::from(options.port) + id - 1),
        advertise: None,
        data_dir: data_dir.join(format!("manager-{id}")),
        cluster: ClusterConfig {
            members,
            secret: DEV_CLUSTER_SECRET.to_string(),
        },
        storage: StorageConfig {
            engine: options.engine,
            ..StorageConfig::default()
        },
        auth: AuthConfig {
            admin_token: Some(DEV_ADMIN_TOKEN.to_string()),
            bootstrap_token: None,
            agent_token: None,
        },
        // All replicas, the agents and their processes share one process here, so a burst
        // of work can delay a heartbeat past the cluster default's short election
        // timeout; dev mode does not need fast failover, so it elects more patiently.
        raft: RaftConfig {
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            ..RaftConfig::default()
        },
        loops: LoopConfig {
            metering_interval_ms: 5_000,
            ..LoopConfig::default()
        },
        limits: corral_server::LimitsConfig::default(),
        tls: tls.clone(),
    }
}

pub async fn start_dev_cluster(options: &DevOptions) -> Result<DevCluster, ServerError> {
    if !matches!(options.replicas, 1 | 3) {
        return Err(ServerError::Config(ConfigError {
            field: "replicas".into(),
            reason: "must be 1 or 3".into(),
        }));
    }
    let data_dir = match &options.data_dir {
        Some(directory) => directory.clone(),
        None => std::env::temp_dir().join(format!("corral-dev-{}", std::process::id())),
    };
    let tls = dev_tls(&data_dir)?;
    // Start the initializing replica (id 1) last, so its peers already listen when it
    // asks for votes.
    let mut managers = Vec::new();
    for id in (1..=u64::from(options.replicas)).rev() {
        managers.push(Manager::start(replica_config(options, &data_dir, id, &tls)).await?);
    }
    managers.reverse();
    let cluster = DevCluster {
        managers,
        data_dir,
        tls,
    };
    wait_for_admin_token(&cluster).await?;
    seed(&cluster).await?;
    Ok(cluster)
}

async fn wait_for_admin_token(cluster: &DevCluster) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let ready = cluster.managers[0].state_machine.read(|state| {
            state
                .tokens()
                .any(|token| token.scope == corral_model::TokenScope::PlatformAdmin)
        });
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ServerError::Raft(
                "the dev cluster elected no leader within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn flavor(
    name: &str,
    cpu_millicores: u64,
    memory_mib: u64,
    accelerators: u32,
    accelerator_type: Option<&str>,
    architecture: &str,
    price: u64,
) -> Flavor {
    Flavor {
        name: name.to_string(),
        capacity: Resources {
            cpu_millicores,
            memory_mib,
            accelerators,
            disk_gib: 3_500,
            bandwidth_mbps: 100_000,
        },
        accelerator_type: accelerator_type.map(str::to_string),
        cpu_architecture: architecture.to_string(),
        price_micros_per_hour: price,
    }
}

/// The demo world; skipped when the data directory already holds one.
async fn seed(cluster: &DevCluster) -> Result<(), ServerError> {
    let manager = &cluster.managers[0];
    if manager
        .state_machine
        .read(|state| state.flavors().next().is_some())
    {
        return Ok(());
    }
    let mut commands = vec![
        Command::FlavorDefine(flavor(
            "gpu-8x-a100",
            96_000,
            1_048_576,
            8,
            Some("nvidia-a100"),
            "x86_64",
            32_000_000,
        )),
        Command::FlavorDefine(flavor(
            "npu-8x-910b",
            192_000,
            1_572_864,
            8,
            Some("ascend-910b"),
            "aarch64",
            28_000_000,
        )),
        Command::FlavorDefine(flavor(
            "cpu-32", 32_000, 131_072, 0, None, "x86_64", 1_200_000,
        )),
    ];
    let quota = Resources {
        cpu_millicores: 400_000,
        memory_mib: 4_194_304,
        accelerators: 24,
        disk_gib: 20_000,
        bandwidth_mbps: 1_000_000,
    };
    commands.push(Command::TenantCreate {
        name: "demo".into(),
        quota,
        may_use_high_priority: true,
        max_active_jobs: None,
    });
    for command in commands {
        propose_admin(manager, command).await?;
    }
    let demo = manager
        .state_machine
        .read(|state| state.tenant_by_name("demo").map(|tenant| tenant.id));
    let demo = demo.ok_or_else(|| ServerError::Raft("the demo tenant was not created".into()))?;
    propose_admin(
        manager,
        Command::TokenCreate {
            name: "demo".into(),
            hash: corral_server::hash_token(DEV_TENANT_TOKEN),
            scope: corral_model::TokenScope::Tenant {
                tenant: demo,
                role: corral_model::TenantRole::Admin,
            },
            ttl_ms: Some(corral_model::limits::MAX_TOKEN_TTL_MS),
        },
    )
    .await?;
    let dev_nodes: u32 = DEV_NODE_GROUPS.iter().map(|(_, _, _, count)| count).sum();
    propose_admin(
        manager,
        Command::TokenCreate {
            name: "dev-nodes".into(),
            hash: corral_server::hash_token(DEV_BOOTSTRAP_TOKEN),
            scope: corral_model::TokenScope::Bootstrap {
                uses_left: dev_nodes,
            },
            ttl_ms: Some(corral_model::limits::MAX_TOKEN_TTL_MS),
        },
    )
    .await?;
    propose_admin(
        manager,
        Command::NetworkCreate {
            tenant: demo,
            name: "demo-net".into(),
            cidr: "192.168.0.0/24".into(),
        },
    )
    .await?;
    Ok(())
}

/// Once the agents registered the dev nodes: the public pool over 3 GPU and 2 CPU nodes
/// (skipped when it exists, as after a restart on the same data directory).
pub async fn create_public_pool(cluster: &DevCluster) -> Result<(), ServerError> {
    let manager = &cluster.managers[0];
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let expected: usize = DEV_NODE_GROUPS
        .iter()
        .map(|(_, _, _, count)| *count as usize)
        .sum();
    loop {
        let (registered, has_pool) = manager
            .state_machine
            .read(|state| (state.nodes().count(), state.public_pool().is_some()));
        if has_pool {
            return Ok(());
        }
        if registered >= expected {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ServerError::Raft(format!(
                "only {registered} of {expected} dev nodes registered within 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = Command::PoolCreate(PoolCreate {
        name: "public".to_string(),
        description: "the shared public pool".to_string(),
        kind: PoolKindRequest::Public,
        flavors: vec![
            PoolFlavor {
                flavor: "gpu-8x-a100".into(),
                zone: "zone-a".into(),
                node_count: 3,
            },
            PoolFlavor {
                flavor: "cpu-32".into(),
                zone: "zone-a".into(),
                node_count: 2,
            },
        ],
        job_types: [JobType::Training, JobType::Inference, JobType::Notebook]
            .into_iter()
            .collect(),
        network: None,
        driver: DriverSpec::default(),
        billing: BillingMode::PayPerUse,
        tags: BTreeMap::new(),
    });
    propose_admin(manager, pool).await
}

async fn propose_admin(manager: &Manager, command: Command) -> Result<(), ServerError> {
    let name = command.name();
    manager
        .propose_as_admin(command)
        .await?
        .map_err(|rejection| ServerError::Raft(format!("seeding {name}: {rejection}")))
}

/// What to tell the user once the dev cluster is ready.
pub fn ready_message(options: &DevOptions, cluster: &DevCluster) -> String {
    let address = cluster.address();
    let ca_file = cluster
        .tls
        .ca_file
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    format!(
        "corral dev is ready: {} replica(s), data in {}, TLS on (a development CA)

  export CORRAL_ADDR={address}
  export CORRAL_CA_FILE={ca_file}     # the CA the managers' certificates are checked against
  export CORRAL_TOKEN={DEV_TENANT_TOKEN}     # tenant 'demo'
  # platform admin: CORRAL_TOKEN={DEV_ADMIN_TOKEN}

  corral pool list
  corral job submit --name hello --pool 1 --kind training --replicas 2 -- sh -c 'echo rank $CORRAL_RANK of $CORRAL_WORLD_SIZE'
  corral job list
  corral job logs 1 --replica 1

Press Ctrl-C to stop.",
        options.replicas,
        cluster.data_dir.display()
    )
}

//! `corral dev`: a whole corral in one process for a first run — manager replicas on
//! loopback, a flavor catalogue, simulated nodes, the public pool, a demo tenant with a
//! token and a network, and a simulated agent that starts placed replicas and finishes
//! training replicas after a while. Real raft, real gRPC, real disk; only the nodes are
//! simulated (node agents are a separate process, `corral agent`).

use crate::config::{
    AuthConfig, ClusterConfig, LoopConfig, MemberConfig, RaftConfig, ServerConfig, StorageConfig,
};
use crate::dev_agent::run_simulated_agent;
use crate::error::ServerError;
use crate::manager::{wait_for_termination, Manager};
use corral_model::command::{NodeRegister, PoolCreate, PoolKindRequest};
use corral_model::{
    BillingMode, Command, DriverSpec, Flavor, JobType, PoolFlavor, Principal, Resources,
};
use corral_store::Engine;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tracing::info;

pub const DEV_ADMIN_TOKEN: &str = "corral-dev-admin-token";
pub const DEV_TENANT_TOKEN: &str = "corral-dev-demo-token";
pub const DEV_AGENT_TOKEN: &str = "corral-dev-agent-token";
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
    /// How long the simulated agent lets a training replica run before it exits 0.
    pub training_run_ms: u64,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            port: 7070,
            data_dir: None,
            replicas: 3,
            engine: Engine::Sled,
            training_run_ms: 5_000,
        }
    }
}

pub struct DevCluster {
    pub managers: Vec<Manager>,
    pub data_dir: PathBuf,
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

fn replica_config(options: &DevOptions, data_dir: &std::path::Path, id: u64) -> ServerConfig {
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
            agent_token: Some(DEV_AGENT_TOKEN.to_string()),
        },
        raft: RaftConfig::default(),
        loops: LoopConfig {
            metering_interval_ms: 5_000,
            ..LoopConfig::default()
        },
    }
}

pub async fn start_dev_cluster(options: &DevOptions) -> Result<DevCluster, ServerError> {
    if !matches!(options.replicas, 1 | 3) {
        return Err(ServerError::Config(crate::config::ConfigError {
            field: "replicas".into(),
            reason: "must be 1 or 3".into(),
        }));
    }
    let data_dir = match &options.data_dir {
        Some(directory) => directory.clone(),
        None => std::env::temp_dir().join(format!("corral-dev-{}", std::process::id())),
    };
    // Start the initializing replica (id 1) last, so its peers already listen when it
    // asks for votes.
    let mut managers = Vec::new();
    for id in (1..=u64::from(options.replicas)).rev() {
        managers.push(Manager::start(replica_config(options, &data_dir, id)).await?);
    }
    managers.reverse();
    let cluster = DevCluster { managers, data_dir };
    wait_for_admin_token(&cluster).await?;
    seed(&cluster).await?;
    Ok(cluster)
}

async fn wait_for_admin_token(cluster: &DevCluster) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let ready = cluster.managers[0]
            .state_machine
            .read(|state| state.tokens().any(|token| token.tenant.is_none()));
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

fn node(name: &str, flavor: &str, zone: &str) -> Command {
    Command::NodeRegister(NodeRegister {
        name: name.to_string(),
        flavor: flavor.to_string(),
        zone: zone.to_string(),
        labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
        taints: Vec::new(),
        gpu_driver_version: flavor.starts_with("gpu").then(|| "535.104".to_string()),
        npu_driver_version: flavor.starts_with("npu").then(|| "23.0.3".to_string()),
        agent_address: None,
    })
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
    for index in 1..=4 {
        commands.push(node(&format!("dev-gpu-{index}"), "gpu-8x-a100", "zone-a"));
    }
    for index in 1..=2 {
        commands.push(node(&format!("dev-cpu-{index}"), "cpu-32", "zone-a"));
        commands.push(node(&format!("dev-npu-{index}"), "npu-8x-910b", "zone-b"));
    }
    commands.push(Command::PoolCreate(PoolCreate {
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
    }));
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
            hash: crate::auth::hash_token(DEV_TENANT_TOKEN),
            tenant: Some(demo),
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

async fn propose_admin(manager: &Manager, command: Command) -> Result<(), ServerError> {
    let name = command.name();
    let outcome = manager
        .proposer
        .propose(Principal::PlatformAdmin, command)
        .await
        .map_err(|status| ServerError::Raft(status.message().to_string()))?;
    outcome
        .result
        .map(|_| ())
        .map_err(|rejection| ServerError::Raft(format!("seeding {name}: {rejection}")))
}

/// Run the dev cluster until SIGINT or SIGTERM.
pub async fn run_dev(options: DevOptions) -> Result<(), ServerError> {
    let cluster = start_dev_cluster(&options).await?;
    let agent = tokio::spawn(run_simulated_agent(
        cluster.managers[0].state_machine.clone(),
        cluster.managers[0].proposer.clone(),
        options.training_run_ms,
    ));
    let address = cluster.address();
    println!(
        "corral dev is ready: {} replica(s), data in {}",
        options.replicas,
        cluster.data_dir.display()
    );
    println!();
    println!("  export CORRAL_ADDR={address}");
    println!("  export CORRAL_TOKEN={DEV_TENANT_TOKEN}     # tenant 'demo'");
    println!("  # platform admin: CORRAL_TOKEN={DEV_ADMIN_TOKEN}");
    println!();
    println!("  corral pool list");
    println!("  corral job submit --name hello --pool 1 --kind training --replicas 2 --accelerators 4 --accelerator-type nvidia-a100 -- python train.py");
    println!("  corral job list");
    println!();
    println!("Press Ctrl-C to stop.");
    info!("dev cluster ready at {address}");
    wait_for_termination().await;
    agent.abort();
    cluster.shutdown().await;
    Ok(())
}

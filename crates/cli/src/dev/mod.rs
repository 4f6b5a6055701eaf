//! `corral dev`: a whole corral in one process for a first run — the dev cluster's
//! replicas and demo world (`cluster`) plus its node agents, run in this process by
//! `corral_agent` (one agent per node group, simulating that group's nodes). Real raft,
//! real gRPC, real disk, real agents running replicas as child processes under
//! `corral agent-shim`; only the accelerators are simulated.

mod cluster;

use crate::exit::CliError;
use cluster::{
    create_public_pool, ready_message, start_dev_cluster, DevCluster, DEV_BOOTSTRAP_TOKEN,
    DEV_NODE_GROUPS,
};
use corral_agent::DriverVersions;
use corral_agent::{AgentConfig, IsolationMode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cluster::DevOptions;

/// The agent configuration of one dev node group.
fn agent_config(
    cluster: &DevCluster,
    name: &str,
    flavor: &str,
    zone: &str,
    isolation: IsolationMode,
) -> Result<AgentConfig, CliError> {
    let managers = cluster
        .managers
        .iter()
        .map(|manager| manager.address.to_string())
        .collect();
    let work_dir = cluster.data_dir.join("agents").join(name);
    let mut config = AgentConfig::new(
        managers,
        Some(DEV_BOOTSTRAP_TOKEN.to_string()),
        name.to_string(),
        flavor.to_string(),
        work_dir,
    );
    config.zone = zone.to_string();
    config.isolation = isolation;
    // The dev certificate: the agent's client certificate towards the managers and its
    // log server's.
    config.tls = cluster.tls.clone();
    config.listen_address = "127.0.0.1:0".to_string();
    config.simulate_accelerators = true;
    config.termination_grace_ms = 3_000;
    config.labels.insert("zone".to_string(), zone.to_string());
    (config.accelerators, config.drivers) = match flavor {
        flavor if flavor.starts_with("gpu") => (
            8,
            DriverVersions {
                gpu_driver_version: "535.104".to_string(),
                ..DriverVersions::default()
            },
        ),
        flavor if flavor.starts_with("npu") => (
            8,
            DriverVersions {
                npu_driver_version: "23.0.3".to_string(),
                ..DriverVersions::default()
            },
        ),
        _ => (0, DriverVersions::default()),
    };
    config
        .validate()
        .map_err(|error| CliError::failed(format!("dev agent {name}: {error}")))?;
    Ok(config)
}

fn start_agents(
    cluster: &DevCluster,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, CliError> {
    // Isolated where the machine allows it (root, cgroups); otherwise, on a laptop,
    // without, and said so.
    let isolation = match corral_agent::isolation_unavailable() {
        None => {
            println!("replica isolation: on (a user per tenant, a cgroup per replica)");
            IsolationMode::Full
        }
        Some(reason) => {
            println!("replica isolation: OFF ({reason}); replicas run as you, without limits");
            IsolationMode::None
        }
    };
    let mut agents = Vec::new();
    for (name, flavor, zone, nodes) in DEV_NODE_GROUPS {
        let config = agent_config(cluster, name, flavor, zone, isolation)?;
        let mut stop = stop.clone();
        agents.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = corral_agent::run(config, Some(nodes), stopped).await {
                tracing::error!("dev agent {name} stopped: {error}");
            }
        }));
    }
    Ok(agents)
}

/// Runs the whole system in one process until SIGINT/SIGTERM.
pub async fn run_dev(options: DevOptions) -> Result<(), CliError> {
    let cluster = start_dev_cluster(&options)
        .await
        .map_err(|error| CliError::failed(error.to_string()))?;
    let (stop_agents, stop) = watch::channel(false);
    let agents = start_agents(&cluster, &stop)?;
    create_public_pool(&cluster)
        .await
        .map_err(|error| CliError::failed(error.to_string()))?;
    println!("{}", ready_message(&options, &cluster));
    corral_server::wait_for_termination().await;
    let _ = stop_agents.send(true);
    for agent in agents {
        let _ = agent.await;
    }
    cluster.shutdown().await;
    Ok(())
}

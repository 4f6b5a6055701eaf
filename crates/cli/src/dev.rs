//! `corral dev`: the dev cluster of `corral_server::dev` plus its node agents, run in
//! this process by `corral_agent` (one agent per node group, simulating that group's
//! nodes). Replicas run as real child processes under `corral agent-shim`.

use crate::exit::CliError;
use corral_agent::AgentConfig;
use corral_server::dev::{
    create_public_pool, ready_message, start_dev_cluster, DevCluster, DevOptions, DEV_AGENT_TOKEN,
    DEV_NODE_GROUPS,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The agent configuration of one dev node group.
fn agent_config(
    cluster: &DevCluster,
    name: &str,
    flavor: &str,
    zone: &str,
) -> Result<AgentConfig, CliError> {
    let managers: Vec<String> = cluster
        .managers
        .iter()
        .map(|manager| format!("\"{}\"", manager.address))
        .collect();
    let work_dir = cluster.data_dir.join("agents").join(name);
    let (accelerators, drivers) = match flavor {
        flavor if flavor.starts_with("gpu") => (8, "gpu_driver_version = \"535.104\""),
        flavor if flavor.starts_with("npu") => (8, "npu_driver_version = \"23.0.3\""),
        _ => (0, ""),
    };
    let text = format!(
        "managers = [{}]\ntoken = \"{DEV_AGENT_TOKEN}\"\nname = \"{name}\"\nflavor = \"{flavor}\"\nzone = \"{zone}\"\nwork_dir = \"{}\"\nlisten_address = \"127.0.0.1:0\"\nsimulate_accelerators = true\naccelerators = {accelerators}\ntermination_grace_ms = 3000\n\n[labels]\nzone = \"{zone}\"\n\n[drivers]\n{drivers}\n",
        managers.join(", "),
        work_dir.display()
    );
    AgentConfig::parse(&text)
        .map_err(|error| CliError::failed(format!("dev agent {name}: {error}")))
}

fn start_agents(
    cluster: &DevCluster,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, CliError> {
    let mut agents = Vec::new();
    for (name, flavor, zone, nodes) in DEV_NODE_GROUPS {
        let config = agent_config(cluster, name, flavor, zone)?;
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
    corral_server::manager::wait_for_termination().await;
    let _ = stop_agents.send(true);
    for agent in agents {
        let _ = agent.await;
    }
    cluster.shutdown().await;
    Ok(())
}

//! The corral node agent (`corral agent --config FILE [--simulate N]`).
//!
//! One agent process runs one node — or, with `--simulate N`, N virtual nodes named
//! `<name>-1..N`, each with its own subdirectory of the work directory. Per node it
//! registers with the managers, heartbeats the leader with the node's measured use,
//! watches the node's assignments and makes its replica processes match them, reports
//! every start and exit, runs driver upgrades, and serves the replicas' output over
//! `AgentLogs` (one server per process). Replicas run under a shim in their own session,
//! so they outlive the agent; a restarted agent adopts them from their records.
//!
//! Modules, from pure logic to IO:
//! - `config`: the TOML configuration and its validation;
//! - `reconcile`: desired assignments + local replicas → actions (pure);
//! - `replica`: a replica process's record, launch spec, handle and supervision
//!   (the data of the processes seam);
//! - `environment`: the seams to the machine (processes, clock, measured use, upgrade
//!   hook, blocking work, jitter), depending on none of their implementations;
//! - `dirs`: a node's work directory (records, exit files, replica directories,
//!   trash);
//! - `files`: atomic replacement and bounded reads of the agent's small files;
//! - `process`: `/proc/<pid>/stat`, liveness against pid reuse, signals;
//! - `shim`: the supervisor process between the agent and a workload;
//! - `isolation`: a user per tenant and a cgroup per replica (or none, for
//!   development), and what the machine offers for them;
//! - `supervisor`: the shipped processes: spawning under the shim, adopting,
//!   watching and ending replicas;
//! - `usage`: `/proc` sampling of the replicas' CPU and memory;
//! - `upgrade`: what a driver target asks for (pure), the hook, installed versions;
//! - `machine`: the real machine's environment, assembled;
//! - `janitor`: removing forgotten replicas' files off a node's loop;
//! - `logs`: log rotation and the `AgentLogs` service;
//! - `wire`: the protocol, network seam and headers the agent takes from the wire;
//! - `managers`: the link to the managers and the report queue;
//! - `node`: one node: its session with the managers, its event loop, its replicas,
//!   spawns and driver upgrades.
//!
//! The public surface is what the CLI (`corral agent`, `corral agent-shim`, `corral
//! dev`) and the simulation (which runs the real agent on simulated machines) need:
//! [`Agent`], [`run`], the configuration, the [`shim`] entry point, and the seams of
//! [`AgentEnvironment`] with their data types.

mod config;
mod credential;
mod dirs;
mod environment;
mod files;
mod isolation;
mod janitor;
mod logs;
mod machine;
mod managers;
mod node;
mod process;
mod reconcile;
mod replica;
pub mod shim;
mod supervisor;
mod upgrade;
mod usage;
mod wire;

pub use config::{AgentConfig, ConfigError, DriverVersions, IsolationMode};
pub use dirs::NodeDirs;
pub use environment::{
    AgentEnvironment, BlockingWork, Clock, HookRun, Jitter, ProcSnapshot, Processes, SessionUse,
    UpgradeHook, UsageSource,
};
pub use reconcile::ReplicaKey;
pub use replica::{
    Adoption, Control, LaunchSpec, ProcessExit, ReplicaProcess, ReplicaRecord, Supervision,
};
pub use supervisor::ShimProgram;

use logs::{LogService, NodeRegistry};
use managers::link::ManagerPool;
use node::context::NodeContext;
use node::run_node;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wire::pb::agent_logs_server::AgentLogsServer;

/// How long stopping waits for the nodes' loops to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent could not start or stopped with an error.
#[derive(Debug)]
pub enum AgentError {
    /// A bad configuration (or `--simulate` value).
    Config(ConfigError),
    /// An operating-system error, with what the agent was doing.
    Io(String, std::io::Error),
    /// The `AgentLogs` server failed.
    Server(String),
}

impl fmt::Display for AgentError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Config(error) => write!(formatter, "{error}"),
            AgentError::Io(context, error) => write!(formatter, "{context}: {error}"),
            AgentError::Server(message) => write!(formatter, "the logs server failed: {message}"),
        }
    }
}

impl std::error::Error for AgentError {}

impl From<ConfigError> for AgentError {
    fn from(error: ConfigError) -> Self {
        AgentError::Config(error)
    }
}

/// How to run an agent beyond its configuration.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Run this many virtual nodes (`<name>-1..N`) instead of one.
    pub simulate: Option<u32>,
    /// How replicas' shims are started.
    pub shim: ShimProgram,
}

/// A running agent (all its nodes and its `AgentLogs` server).
#[derive(Debug)]
pub struct Agent {
    advertised_address: String,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    nodes: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Validates the configuration, creates the nodes' work directories, binds the
    /// `AgentLogs` listener and starts every node, on the machine's processes, clock
    /// and `/proc`. Must run inside a Tokio runtime.
    pub async fn start(config: AgentConfig, options: AgentOptions) -> Result<Agent, AgentError> {
        let usage_max_age =
            Duration::from_millis((config.heartbeat_interval_ms / 2).clamp(10, 1_000));
        config.validate()?;
        // Everything the agent creates (records, exit files, rotated logs, the users
        // table) is its own alone unless it says otherwise.
        // SAFETY: umask has no preconditions.
        unsafe { libc::umask(0o077) };
        std::fs::create_dir_all(&config.work_dir).map_err(|error| {
            AgentError::Io(format!("creating {}", config.work_dir.display()), error)
        })?;
        let sandbox = isolation::Sandbox::prepare(&config).map_err(|reason| {
            AgentError::Config(ConfigError {
                field: "isolation".into(),
                reason,
            })
        })?;
        let environment = AgentEnvironment::real(options.shim, sandbox, usage_max_age);
        Agent::start_in(config, options.simulate, environment).await
    }

    /// As [`Agent::start`], in `environment` (the simulation passes simulated
    /// processes, time and use). The listener is bound on the wire's network seam, so
    /// a simulated network carries it too.
    pub async fn start_in(
        config: AgentConfig,
        simulate: Option<u32>,
        environment: AgentEnvironment,
    ) -> Result<Agent, AgentError> {
        config.validate()?;
        let names = config.node_names(simulate)?;
        let tls = config.tls.load().map_err(|error| {
            AgentError::Config(ConfigError {
                field: error.field,
                reason: error.reason,
            })
        })?;
        if tls.is_none() {
            tracing::warn!(
                "TLS IS OFF (tls.insecure = true): the agent token and replica output travel \
                 in plaintext and the managers are not authenticated; never run a real node \
                 like this"
            );
        }
        let listener = wire::network::listen(&config.listen_address)
            .await
            .map_err(|error| AgentError::Io(format!("binding {}", config.listen_address), error))?;
        let bound = listener.local_address;
        let advertised_address = config
            .advertise_address
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let bootstrap_token = config.bootstrap_secret()?;
        let transport = wire::Transport::from_node(tls.as_ref());
        let pool = Arc::new(
            ManagerPool::new(&config.managers, transport).map_err(|status| {
                AgentError::Config(ConfigError {
                    field: "managers".into(),
                    reason: status.message().to_string(),
                })
            })?,
        );
        let mut node_dirs = Vec::with_capacity(names.len());
        for name in &names {
            let root = if simulate.is_some() {
                config.work_dir.join(name)
            } else {
                config.work_dir.clone()
            };
            let dirs = NodeDirs::new(root);
            dirs.create().map_err(|error| {
                AgentError::Io(format!("creating {}", dirs.root().display()), error)
            })?;
            node_dirs.push(dirs);
        }

        let registry = NodeRegistry::default();
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let service = LogService::new(registry.clone());
        let mut server_shutdown = shutdown_receiver.clone();
        // Only managers read logs: with TLS the handshake demands a client certificate
        // the cluster CA signed.
        let mut builder = match &tls {
            None => tonic::transport::Server::builder(),
            Some(tls) => tonic::transport::Server::builder()
                .tls_config(tls.server_config(wire::ClientCertificates::Required))
                .map_err(|error| {
                    AgentError::Config(ConfigError {
                        field: "tls".into(),
                        reason: format!(
                            "cert_file and key_file are not a usable identity (does the key \
                             belong to the certificate?): {}",
                            wire::error_chain(&error)
                        ),
                    })
                })?,
        };
        let server = tokio::spawn(
            builder
                .add_service(AgentLogsServer::new(service))
                .serve_with_incoming_shutdown(listener.incoming, async move {
                    let _ = server_shutdown.wait_for(|stop| *stop).await;
                }),
        );
        tracing::info!(
            "agent serving logs on {bound} (advertised as {advertised_address}) for {} node(s)",
            names.len()
        );

        let config = Arc::new(config);
        let node_count = names.len();
        let nodes = names
            .into_iter()
            .zip(node_dirs)
            .enumerate()
            .map(|(index, (name, dirs))| {
                let context = NodeContext {
                    name,
                    dirs,
                    config: config.clone(),
                    environment: environment.clone(),
                    pool: pool.clone(),
                    index,
                    node_count,
                    agent_address: advertised_address.clone(),
                    registry: registry.clone(),
                    bootstrap_token: bootstrap_token.clone(),
                };
                tokio::spawn(run_node(context, shutdown_receiver.clone()))
            })
            .collect();
        Ok(Agent {
            advertised_address,
            shutdown,
            server,
            nodes,
        })
    }

    /// The `host:port` managers are told to reach `AgentLogs` at.
    pub fn advertised_address(&self) -> &str {
        &self.advertised_address
    }

    /// Runs until `shutdown` resolves (or the logs server fails), then stops.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let failed = tokio::select! {
            _ = shutdown => None,
            result = &mut self.server => Some(match result {
                Ok(Ok(())) => "stopped".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(error) => error.to_string(),
            }),
        };
        let stopped = self.stop().await;
        match failed {
            Some(message) => Err(AgentError::Server(message)),
            None => stopped,
        }
    }

    /// Stops every node and the logs server. Replicas are NOT stopped: they keep running
    /// and the next agent on the same work directory adopts them.
    pub async fn stop(self) -> Result<(), AgentError> {
        let _ = self.shutdown.send(true);
        for node in self.nodes {
            let _ = tokio::time::timeout(STOP_TIMEOUT, node).await;
        }
        if !self.server.is_finished() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, self.server).await;
        }
        Ok(())
    }
}

/// Why this machine cannot isolate replicas (not root, no usable cgroup hierarchy), or
/// None when it can: `corral dev` chooses its agents' isolation with it.
pub fn isolation_unavailable() -> Option<String> {
    isolation::unavailable()
}

/// Runs an agent from `config` until `shutdown` resolves (the CLI passes SIGINT/SIGTERM).
/// Replicas are spawned through this executable's `agent-shim` subcommand and keep
/// running after the agent exits.
pub async fn run(
    config: AgentConfig,
    simulate: Option<u32>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let shim = ShimProgram::current_exe()
        .map_err(|error| AgentError::Io("locating the corral executable".into(), error))?;
    let agent = Agent::start(config, AgentOptions { simulate, shim }).await?;
    agent.run_until(shutdown).await
}

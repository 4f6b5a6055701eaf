//! Assembling one manager replica: storage, raft, the gRPC server (admin and raft
//! services on one address), cluster initialization, the platform admin token, and the
//! leader-loop supervisor, and the guard (`replication::guard`). `run` serves until
//! SIGINT or SIGTERM, or until the replica's storage fails under it.

use crate::api::admin::AdminService;
use crate::api::agent_service::AgentService;
use crate::api::auth::{hash_token, Authenticator};
use crate::config::ServerConfig;
use crate::environment::Environment;
use crate::error::ServerError;
use crate::leader::liveness::Liveness;
use crate::leader::loops::LeaderLoops;
use crate::replication::cluster_clock::ClusterClock;
use crate::replication::health::Health;
use crate::replication::peer_network::PeerChannels;
use crate::replication::proposer::Proposer;
use crate::replication::raft_service::RaftService;
use corral_model::{Caller, Command, Principal, Rejection, TokenScope};
use corral_store::{open_memory_storage, open_storage, Raft, StateMachineStore, StorageOptions};
use corral_wire::pb;
use corral_wire::tls::{ClientCertificates, NodeTls, RequireClientCertificate, Transport};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tracing::{error, info, warn};

/// Largest admin request accepted (a batch submit of many job specs).
/// The decoder's bound; each RPC's own (smaller) bound is the gate's.
const MAX_ADMIN_MESSAGE_BYTES: usize = crate::api::gate::MAX_BATCH_MESSAGE_BYTES;
const ADMIN_TOKEN_NAME: &str = "admin";
/// The name `auth.bootstrap_token` is installed under.
const CONFIGURED_BOOTSTRAP_NAME: &str = "configured-bootstrap";
const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const SERVER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A started replica. Dropping it does not stop it; call `shutdown`.
pub struct Manager {
    pub config: ServerConfig,
    pub raft: Raft,
    pub state_machine: StateMachineStore,
    pub(crate) proposer: Proposer,
    pub address: SocketAddr,
    stop_server: watch::Sender<bool>,
    /// Set, with the reason, once raft's core has died (a storage fault).
    stopped: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
}

fn raft_config(config: &ServerConfig) -> Result<openraft::Config, ServerError> {
    let raft = openraft::Config {
        cluster_name: "corral".to_string(),
        heartbeat_interval: config.raft.heartbeat_interval_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        install_snapshot_timeout: 120_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.storage.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.storage.logs_kept_after_snapshot,
        purge_batch_size: 256,
        // A replica whose data directory was wiped comes back with an empty log; the
        // leader must accept that its log went backwards and resend (by snapshot).
        allow_log_reversion: Some(true),
        // A replica that was cut off asks before it campaigns, so it neither inflates
        // terms nor unseats a healthy leader when it returns.
        enable_pre_vote: Some(true),
        // CheckQuorum's other half: a leader that hears from no quorum within its lease
        // (it can send but not receive) goes quiet for a while, so its followers stop
        // hearing heartbeats and elect a leader the quorum can reach (the guard holds
        // back its log entries meanwhile: `AppendHold`). openraft asks for at least
        // lease + election_timeout_max (the lease is election_timeout_max). Twice that:
        // the followers last hear from it up to a guard interval after its lease ends,
        // then wait out their own lease and election timeout, up to 2 x max in all; a
        // probe sent before they campaign renews their leases and costs a whole
        // further cycle (found by the simulation: failovers of 2-3 s with 2 x max).
        quorum_loss_probe_interval: Some(quorum_loss_probe_interval_ms(&config.raft)),
        ..Default::default()
    };
    raft.validate()
        .map_err(|error| ServerError::Raft(error.to_string()))
}

/// The length of each quiet and each sending phase of a leader without a quorum.
fn quorum_loss_probe_interval_ms(raft: &crate::config::RaftConfig) -> u64 {
    4 * raft.election_timeout_max_ms
}

impl Manager {
    pub async fn start(config: ServerConfig) -> Result<Manager, ServerError> {
        Manager::start_in(config, Environment::real()).await
    }

    /// Start in given surroundings (the simulation's clock, ids and memory disk).
    pub async fn start_in(
        config: ServerConfig,
        environment: Environment,
    ) -> Result<Manager, ServerError> {
        config.validate()?;
        let tls = load_tls(&config)?;
        let transport = Transport::from_node(tls.as_ref());
        // Before anything starts: a certificate and key that do not match stop the
        // replica here.
        let builder = server_builder(tls.as_ref())?;
        let storage = match &environment.memory_disk {
            Some(disk) => open_memory_storage(disk)?,
            None => {
                std::fs::create_dir_all(&config.data_dir)?;
                open_storage(&StorageOptions {
                    engine: config.storage.engine,
                    data_dir: config.data_dir.clone(),
                })?
            }
        };
        let state_machine = storage.state_machine.clone();
        if let Some(observer) = environment.entry_observer.clone() {
            state_machine.observe_entries(observer);
        }
        let cluster_clock =
            ClusterClock::new(environment.clock.clone(), config.raft.max_clock_offset_ms);
        // Token expiry and submission rates read the cluster's time too, so a stepped
        // wall clock neither expires tokens early nor refills buckets by an hour.
        let read_clock = {
            let cluster_clock = cluster_clock.clone();
            crate::environment::Clock::from_fn(move || cluster_clock.now_ms())
        };
        let peers = PeerChannels::new(
            config.id,
            &config.cluster.secret,
            transport.clone(),
            cluster_clock.clone(),
        );
        let append_hold = peers.append_hold();
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config(&config)?),
            peers.clone(),
            storage.log,
            storage.state_machine,
        )
        .await
        .map_err(|error| ServerError::Raft(error.to_string()))?;
        let health = Health::new(
            raft.clone(),
            cluster_clock.clone(),
            config.raft.election_timeout_max_ms,
            state_machine.clone(),
        );
        let (proposer, group_commit) = Proposer::new(
            raft.clone(),
            peers,
            cluster_clock.clone(),
            health.clone(),
            environment.randomness.clone(),
        );
        let authenticator = Authenticator::new(
            state_machine.clone(),
            raft.clone(),
            read_clock.clone(),
            config.cluster.secret.clone(),
        );
        let liveness = Liveness::default();

        let listener = corral_wire::network::listen(&config.listen).await?;
        let address = listener.local_address;
        let (stop_server, stop_signal) = watch::channel(false);
        let submit_rate = crate::api::submit_rate::SubmitRate::new(
            config.limits.submit_jobs_per_second,
            config.limits.submit_jobs_burst,
            read_clock,
        );
        let admin = AdminService::new(
            raft.clone(),
            state_machine.clone(),
            proposer.clone(),
            authenticator.clone(),
            config.id,
            liveness.clone(),
            submit_rate.clone(),
        )
        .with_agent_transport(transport);
        let agents = AgentService {
            state_machine: state_machine.clone(),
            proposer: proposer.clone(),
            authenticator: authenticator.clone(),
            liveness: liveness.clone(),
            heartbeat_interval_ms: config.loops.agent_heartbeat_interval_ms,
        };
        let gate =
            crate::api::gate::GateLayer::new(authenticator.clone(), submit_rate, health.clone());
        let raft_service = RaftService::new(
            raft.clone(),
            authenticator,
            proposer.clone(),
            environment.blocking_work,
            cluster_clock,
        );
        // Machines only: a caller of these services must have shown a client certificate
        // the CA signed (checked before the message is decoded). Tenants' CLIs reach the
        // Admin service on the same port without one.
        let machines_only = RequireClientCertificate {
            required: tls.is_some(),
        };
        let server = builder
            // Authenticate and bound each call before its message is read.
            .layer(gate)
            .tcp_nodelay(true)
            // Streams to a client or agent that vanished silently are closed.
            .http2_keepalive_interval(Some(SERVER_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(SERVER_KEEPALIVE_TIMEOUT))
            .add_service(
                pb::admin_server::AdminServer::new(admin)
                    .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_ADMIN_MESSAGE_BYTES),
            )
            .add_service(InterceptedService::new(
                pb::agent_service_server::AgentServiceServer::new(agents)
                    .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_ADMIN_MESSAGE_BYTES),
                machines_only,
            ))
            .add_service(InterceptedService::new(
                pb::raft_server::RaftServer::new(raft_service)
                    .max_decoding_message_size(crate::replication::encoding::MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(
                        crate::replication::encoding::MAX_PEER_MESSAGE_BYTES,
                    ),
                machines_only,
            ))
            .serve_with_incoming_shutdown(listener.incoming, wait_for_stop(stop_signal));
        let (stopped_sender, stopped) = watch::channel(None);
        let mut tasks = vec![
            group_commit,
            tokio::spawn(health.clone().follow_alarms()),
            tokio::spawn(crate::replication::guard::guard(
                raft.clone(),
                health,
                Duration::from_millis(config.raft.heartbeat_interval_ms),
                quorum_loss_probe_interval_ms(&config.raft),
                append_hold,
                stopped_sender,
            )),
            tokio::spawn(async move {
                if let Err(error) = server.await {
                    warn!("gRPC server ended: {error}");
                }
            }),
        ];
        info!("replica {} serving on {address}", config.id);

        initialize_if_first(&raft, &config).await?;
        let loops = LeaderLoops {
            raft: raft.clone(),
            state_machine: state_machine.clone(),
            proposer: proposer.clone(),
            liveness,
            loops: config.loops.clone(),
            lease: Duration::from_millis(config.raft.election_timeout_max_ms),
        };
        tasks.push(tokio::spawn(loops.supervise()));
        let on_disk = environment.memory_disk.is_none()
            && config.storage.engine != corral_store::Engine::Memory;
        if on_disk && config.storage.min_free_disk_mib > 0 {
            tasks.push(tokio::spawn(crate::replication::disk_floor::watch(
                config.id,
                config.data_dir.clone(),
                config.storage.min_free_disk_mib,
                state_machine.clone(),
                proposer.clone(),
                environment.blocking_work,
            )));
        }
        tasks.push(tokio::spawn({
            let (raft, state_machine, proposer, config) = (
                raft.clone(),
                state_machine.clone(),
                proposer.clone(),
                config.clone(),
            );
            async move {
                install_admin_token(&raft, &state_machine, &proposer, &config).await;
                if let Some(secret) = &config.auth.bootstrap_token {
                    install_bootstrap_token(&raft, &state_machine, &proposer, secret).await;
                }
            }
        }));
        Ok(Manager {
            config,
            raft,
            state_machine,
            proposer,
            address,
            stop_server,
            stopped,
            tasks,
        })
    }

    /// Propose `command` as the platform admin from this replica (forwarded to the
    /// leader when it is not): the state machine's answer, or why it was not proposed.
    /// For a program that seeds the cluster it runs (`corral dev`).
    pub async fn propose_as_admin(
        &self,
        command: Command,
    ) -> Result<Result<(), Rejection>, ServerError> {
        let outcome = self
            .proposer
            .propose(&Caller::trusted(Principal::PlatformAdmin), command)
            .await
            .map_err(|status| ServerError::Raft(status.message().to_string()))?;
        Ok(outcome.result.map(drop))
    }

    /// Resolves with the reason once this replica's raft core has died of a storage
    /// fault; pending forever otherwise. Its supervisor (`run`, the simulation) then
    /// ends it and may start it again from its disk.
    pub async fn stopped(&self) -> String {
        let mut stopped = self.stopped.clone();
        loop {
            if let Some(reason) = stopped.borrow_and_update().clone() {
                return reason;
            }
            if stopped.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub async fn shutdown(self) {
        let _ = self.stop_server.send(true);
        for task in &self.tasks {
            task.abort();
        }
        if let Err(error) = self.raft.shutdown().await {
            warn!("raft shutdown: {error}");
        }
    }
}

/// The replica's TLS material, or None (with a loud warning) when plaintext was asked
/// for.
fn load_tls(config: &ServerConfig) -> Result<Option<NodeTls>, ServerError> {
    let tls = config.tls.load().map_err(|error| {
        ServerError::Config(crate::config::ConfigError {
            field: error.field,
            reason: error.reason,
        })
    })?;
    if tls.is_none() {
        warn!(
            "TLS IS OFF (tls.insecure = true): tokens, job environments and the cluster \
             secret travel in plaintext, and any caller can pose as a peer or an agent \
             that knows the secret; never run a real cluster like this"
        );
    }
    Ok(tls)
}

/// A server builder serving TLS when the replica has its material: client certificates
/// optional on the shared port, checked against the CA when presented.
fn server_builder(tls: Option<&NodeTls>) -> Result<tonic::transport::Server, ServerError> {
    let builder = tonic::transport::Server::builder();
    match tls {
        None => Ok(builder),
        Some(tls) => builder
            .tls_config(tls.server_config(ClientCertificates::Optional))
            .map_err(|error| {
                ServerError::Config(crate::config::ConfigError {
                    field: "tls".into(),
                    reason: format!(
                        "cert_file and key_file are not a usable identity (does the key \
                         belong to the certificate?): {}",
                        corral_wire::tls::error_chain(&error)
                    ),
                })
            }),
    }
}

async fn wait_for_stop(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The member with the lowest id initializes a brand-new cluster with every listed
/// member as a voter. A cluster that exists already is left alone — including when this
/// replica's data directory was wiped: before initializing it listens for a while, and
/// an existing leader (which keeps replicating to every member) makes itself heard.
async fn initialize_if_first(raft: &Raft, config: &ServerConfig) -> Result<(), ServerError> {
    let lowest = config.cluster.members.iter().map(|member| member.id).min();
    if lowest != Some(config.id) {
        return Ok(());
    }
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|error| ServerError::Raft(error.to_string()))?;
    if initialized {
        return Ok(());
    }
    let listen_for = Duration::from_millis(2 * config.raft.election_timeout_max_ms);
    let deadline = tokio::time::Instant::now() + listen_for;
    let mut metrics = raft.metrics();
    while tokio::time::Instant::now() < deadline {
        let heard_of_a_cluster = {
            let current = metrics.borrow_watched();
            current.current_leader.is_some() || current.current_term > 0
        };
        if heard_of_a_cluster {
            info!("an existing cluster reached this replica; not initializing");
            return Ok(());
        }
        let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
    }
    let members: BTreeMap<u64, BasicNode> = config
        .cluster
        .members
        .iter()
        .map(|member| {
            (
                member.id,
                BasicNode {
                    addr: member.address.clone(),
                },
            )
        })
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            info!(
                "initialized a new cluster of {} members",
                config.cluster.members.len()
            );
            Ok(())
        }
        Err(error) => {
            // NotAllowed means another start already initialized it; that is fine.
            warn!("initialize: {error}");
            Ok(())
        }
    }
}

fn is_platform_admin_token(token: &corral_model::Token) -> bool {
    token.scope == TokenScope::PlatformAdmin
}

/// Until the platform has an admin token, the leader installs one: the configured
/// secret, or a generated one that is written to `<data_dir>/admin-token` (mode 0600).
async fn install_admin_token(
    raft: &Raft,
    state_machine: &StateMachineStore,
    proposer: &Proposer,
    config: &ServerConfig,
) {
    loop {
        let has_admin = state_machine.read(|state| state.tokens().any(is_platform_admin_token));
        if has_admin {
            return;
        }
        if raft.is_leader()
            && raft
                .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
                .await
                .is_ok()
        {
            let still_missing =
                state_machine.read(|state| !state.tokens().any(is_platform_admin_token));
            if !still_missing {
                return;
            }
            let (secret, generated) = match &config.auth.admin_token {
                Some(secret) => (secret.clone(), false),
                None => (proposer.fresh_secret(), true),
            };
            let command = Command::TokenCreate {
                name: ADMIN_TOKEN_NAME.to_string(),
                hash: hash_token(&secret),
                scope: TokenScope::PlatformAdmin,
                // The break-glass credential: rotated, never expired.
                ttl_ms: None,
            };
            match proposer
                .propose_here(Principal::PlatformAdmin, command)
                .await
            {
                Ok(outcome) if outcome.result.is_ok() => {
                    if generated {
                        // Never printed: stdout and logs end up in scrollback, journals
                        // and log shippers. The file is the one place it is written.
                        write_secret_file(&config.data_dir.join("admin-token"), &secret);
                    }
                    return;
                }
                Ok(outcome) => warn!(
                    "installing the admin token was refused: {:?}",
                    outcome.result
                ),
                Err(status) => warn!("installing the admin token failed: {}", status.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The configured node-bootstrap token (`auth.bootstrap_token`), installed once with
/// the longest life a token may have: for bringing up a cluster's first nodes without
/// an admin round trip. It registers nodes only, and cannot take over a live node.
async fn install_bootstrap_token(
    raft: &Raft,
    state_machine: &StateMachineStore,
    proposer: &Proposer,
    secret: &str,
) {
    loop {
        if state_machine.read(|state| state.token(CONFIGURED_BOOTSTRAP_NAME).is_some()) {
            return;
        }
        if raft.is_leader()
            && raft
                .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
                .await
                .is_ok()
        {
            let command = Command::TokenCreate {
                name: CONFIGURED_BOOTSTRAP_NAME.to_string(),
                hash: hash_token(secret),
                scope: TokenScope::Bootstrap {
                    uses_left: corral_model::limits::MAX_BOOTSTRAP_USES,
                },
                ttl_ms: Some(corral_model::limits::MAX_TOKEN_TTL_MS),
            };
            match proposer
                .propose_here(Principal::PlatformAdmin, command)
                .await
            {
                // Installed, or refused for good (e.g. its hash is another token's):
                // either way trying again changes nothing.
                Ok(outcome) => {
                    if let Err(rejection) = outcome.result {
                        warn!("the configured bootstrap token was refused: {rejection}");
                    }
                    return;
                }
                Err(status) => warn!(
                    "installing the configured bootstrap token failed: {}",
                    status.message()
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_secret_file(path: &std::path::Path, secret: &str) {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path).and_then(|mut file| {
        file.write_all(secret.as_bytes())
            .and_then(|()| file.sync_all())
    }) {
        Ok(()) => info!(
            "generated a platform admin token; it is in {} (mode 0600)",
            path.display()
        ),
        Err(error) => error!(
            "could not write the generated platform admin token to {}: {error}; \
             set auth.admin_token in the configuration to choose one",
            path.display()
        ),
    }
}

/// Start a replica and serve until SIGINT or SIGTERM; a storage fault ends it with
/// `ServerError::Storage` (a non-zero exit, for its supervisor to restart it).
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    let manager = Manager::start(config).await?;
    let fault = tokio::select! {
        () = wait_for_termination() => None,
        reason = manager.stopped() => Some(reason),
    };
    info!("shutting down");
    manager.shutdown().await;
    match fault {
        None => Ok(()),
        Some(reason) => Err(ServerError::Storage(reason)),
    }
}

pub async fn wait_for_termination() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

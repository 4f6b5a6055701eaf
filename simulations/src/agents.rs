//! Simulated nodes: one turmoil host per node, speaking the real agent protocol
//! (`AgentService`: register, heartbeat, watch assignments, report replicas) to the real
//! managers. Replicas are not processes here: a replica whose command is
//! `sim-run <ms> <exit code>` "runs" for that long and exits with that code; any other
//! command runs until it is stopped. A restarted agent has forgotten its replicas, so it
//! reports every replica the managers think is started as lost, as the real agent does
//! for children it cannot find again.

use crate::managers::{manager_addresses, AGENT_TOKEN};
use crate::recorder::Recorder;
use corral_client::pb;
use corral_client::pb::agent_service_client::AgentServiceClient;
use corral_client::AuthInterceptor;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

type Stub = AgentServiceClient<InterceptedService<Channel, AuthInterceptor>>;

pub const NODE_FLAVOR: &str = "sim-gpu-4";
pub const NODE_ZONE: &str = "zone-a";
pub const DRIVER_VERSION: &str = "535.0";
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_millis(50);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A report is given up after this many attempts (`converge` makes it again later).
const MAX_REPORT_ATTEMPTS: u32 = 3;
/// A report the managers have not taken in is made again after this long.
const REPORT_AGAIN_AFTER: Duration = Duration::from_secs(1);

pub fn node_host(index: u64) -> String {
    format!("node-{index}")
}

/// The managers, tried in turn: whichever answers is used until it fails.
struct Managers {
    stubs: Vec<Stub>,
    current: usize,
}

impl Managers {
    fn new(replicas: u64) -> Result<Managers, String> {
        let interceptor =
            AuthInterceptor::new(Some(AGENT_TOKEN)).map_err(|error| error.to_string())?;
        let mut stubs = Vec::new();
        for address in manager_addresses(replicas) {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|error| error.to_string())?
                .connect_timeout(Duration::from_millis(500))
                // As the real agent: a dead connection is noticed and redialled.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(1))
                .keep_alive_while_idle(true)
                .timeout(CALL_TIMEOUT);
            let channel = corral_client::network::lazy_channel(&endpoint);
            stubs.push(AgentServiceClient::with_interceptor(
                channel,
                interceptor.clone(),
            ));
        }
        Ok(Managers { stubs, current: 0 })
    }

    fn stub(&self) -> Stub {
        self.stubs[self.current].clone()
    }

    fn next(&mut self) {
        self.current = (self.current + 1) % self.stubs.len();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReplicaKey {
    job: u64,
    rank: u32,
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Exits at that time with that code; never when None.
    Running {
        exits_at: Option<(Instant, i32)>,
    },
    Exited {
        exit_code: i32,
    },
}

struct ReplicaRecord {
    phase: Phase,
    last_report_at: Instant,
}

struct SimulatedNode {
    name: String,
    node: u64,
    managers: Managers,
    replicas: BTreeMap<ReplicaKey, ReplicaRecord>,
    /// The newest assignments view: the agent converges on it again on every tick, so a
    /// report lost in a fault is made again (level-triggered, as the real agent).
    view: Option<pb::NodeAssignments>,
    recorder: Recorder,
}

pub fn add_node(sim: &mut turmoil::Sim<'_>, index: u64, replicas: u64, recorder: &Recorder) {
    let recorder = recorder.clone();
    sim.host(node_host(index), move || {
        let recorder = recorder.clone();
        async move {
            let managers = Managers::new(replicas)?;
            let mut node = SimulatedNode::register(node_host(index), managers, recorder).await;
            node.run().await;
            Ok(())
        }
    });
}

impl SimulatedNode {
    async fn register(name: String, mut managers: Managers, recorder: Recorder) -> SimulatedNode {
        let request = pb::RegisterAgentNodeRequest {
            name: name.clone(),
            flavor: NODE_FLAVOR.into(),
            zone: NODE_ZONE.into(),
            gpu_driver_version: DRIVER_VERSION.into(),
            agent_address: format!("{name}:7100"),
            ..Default::default()
        };
        loop {
            match managers.stub().register_agent_node(request.clone()).await {
                Ok(response) => {
                    let node = response.into_inner().node;
                    recorder.trace(format!("{name} registered as node {node}"));
                    return SimulatedNode {
                        name,
                        node,
                        managers,
                        replicas: BTreeMap::new(),
                        view: None,
                        recorder,
                    };
                }
                Err(_) => {
                    managers.next();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Watch assignments (re-watching after any failure), heartbeat, and let replicas
    /// finish, forever (until the simulation crashes this host).
    async fn run(&mut self) {
        let mut next_heartbeat = Instant::now();
        loop {
            let stream = self
                .managers
                .stub()
                .watch_assignments(pb::WatchAssignmentsRequest { node: self.node })
                .await;
            let mut views = match stream {
                Ok(response) => response.into_inner(),
                Err(_) => {
                    self.managers.next();
                    self.heartbeat_if_due(&mut next_heartbeat).await;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    view = views.next() => match view {
                        Some(Ok(view)) => self.reconcile(view).await,
                        _ => break,
                    },
                    _ = tokio::time::sleep(TICK) => {}
                }
                self.finish_due_replicas().await;
                self.converge().await;
                self.heartbeat_if_due(&mut next_heartbeat).await;
            }
            self.managers.next();
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn heartbeat_if_due(&mut self, next_heartbeat: &mut Instant) {
        if Instant::now() < *next_heartbeat {
            return;
        }
        *next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
        let request = pb::HeartbeatRequest {
            node: self.node,
            agent_address: format!("{}:7100", self.name),
            ..Default::default()
        };
        if self.managers.stub().heartbeat(request).await.is_err() {
            self.managers.next();
        }
    }

    async fn reconcile(&mut self, view: pb::NodeAssignments) {
        if let Some(target) = &view.upgrade {
            self.upgrade_driver(target).await;
        }
        self.view = Some(view);
        self.converge().await;
    }

    /// Bring the replicas in line with the newest view, and say again what the managers
    /// have not taken in yet (at most once per `REPORT_AGAIN_AFTER`).
    async fn converge(&mut self) {
        let Some(view) = &self.view else {
            return;
        };
        // Every replica the managers list, stopped ones too: a stop is done only when
        // the managers took in the exit.
        let mut listed = BTreeMap::new();
        for assignment in &view.replicas {
            let key = ReplicaKey {
                job: assignment.job,
                rank: assignment.rank,
                generation: assignment.generation,
            };
            listed.insert(
                key,
                (
                    assignment.started,
                    assignment.stop,
                    assignment.command.clone(),
                ),
            );
        }
        let forgotten: Vec<ReplicaKey> = self
            .replicas
            .keys()
            .filter(|key| !listed.contains_key(key))
            .copied()
            .collect();
        for key in forgotten {
            if let Some(record) = self.replicas.remove(&key) {
                if matches!(record.phase, Phase::Running { .. }) {
                    self.report_exit(key, 143, "stopped").await;
                }
            }
        }
        let now = Instant::now();
        for (key, (started, stop, command)) in listed {
            let due = |record: &ReplicaRecord| now >= record.last_report_at + REPORT_AGAIN_AFTER;
            match self
                .replicas
                .get(&key)
                .map(|record| (record.phase, due(record)))
            {
                None if stop && !started => {}
                None if stop => self.exited(key, 143, "stopped").await,
                None if started => {
                    // Started before this agent (re)started: gone with the old agent.
                    self.exited(key, -1, "lost when the agent restarted").await;
                }
                None => self.start(key, &command).await,
                Some((Phase::Running { .. }, _)) if stop => {
                    self.exited(key, 143, "stopped").await;
                }
                Some((Phase::Running { .. }, true)) if !started => {
                    self.touch(key);
                    let event =
                        pb::replica_report::Event::Started(pb::ReplicaStartedReport { pid: 4242 });
                    self.report(key, event).await;
                }
                Some((Phase::Exited { exit_code }, true)) => {
                    self.touch(key);
                    self.report_exit(key, exit_code, "exited").await;
                }
                Some(_) => {}
            }
        }
    }

    fn touch(&mut self, key: ReplicaKey) {
        if let Some(record) = self.replicas.get_mut(&key) {
            record.last_report_at = Instant::now();
        }
    }

    async fn exited(&mut self, key: ReplicaKey, exit_code: i32, reason: &str) {
        self.replicas.insert(
            key,
            ReplicaRecord {
                phase: Phase::Exited { exit_code },
                last_report_at: Instant::now(),
            },
        );
        self.report_exit(key, exit_code, reason).await;
    }

    /// The dev upgrade hook: record the target version and report it.
    async fn upgrade_driver(&mut self, target: &pb::DriverTarget) {
        if target.gpu_driver_version.is_empty() && target.npu_driver_version.is_empty() {
            return;
        }
        let report = pb::DriverReport {
            node: self.node,
            gpu_driver_version: target.gpu_driver_version.clone(),
            npu_driver_version: target.npu_driver_version.clone(),
        };
        for _ in 0..MAX_REPORT_ATTEMPTS {
            match self.managers.stub().report_driver(report.clone()).await {
                Ok(_) => return,
                Err(_) => {
                    self.managers.next();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn start(&mut self, key: ReplicaKey, command: &[String]) {
        let exits_at = match command {
            [program, run_ms, exit_code] if program == "sim-run" => {
                let run_ms: u64 = run_ms.parse().unwrap_or(1_000);
                let exit_code: i32 = exit_code.parse().unwrap_or(0);
                Some((Instant::now() + Duration::from_millis(run_ms), exit_code))
            }
            _ => None,
        };
        self.replicas.insert(
            key,
            ReplicaRecord {
                phase: Phase::Running { exits_at },
                last_report_at: Instant::now(),
            },
        );
        let event = pb::replica_report::Event::Started(pb::ReplicaStartedReport { pid: 4242 });
        self.report(key, event).await;
    }

    async fn finish_due_replicas(&mut self) {
        let now = Instant::now();
        let due: Vec<(ReplicaKey, i32)> = self
            .replicas
            .iter()
            .filter_map(|(key, record)| match record.phase {
                Phase::Running {
                    exits_at: Some((at, code)),
                } if at <= now => Some((*key, code)),
                _ => None,
            })
            .collect();
        for (key, code) in due {
            self.exited(key, code, "exited").await;
        }
    }

    async fn report_exit(&mut self, key: ReplicaKey, exit_code: i32, reason: &str) {
        let event = pb::replica_report::Event::Exited(pb::ReplicaExitedReport {
            exit_code,
            reason: reason.into(),
        });
        self.report(key, event).await;
    }

    async fn report(&mut self, key: ReplicaKey, event: pb::replica_report::Event) {
        let request = pb::ReplicaReport {
            node: self.node,
            job: key.job,
            rank: key.rank,
            generation: key.generation,
            event: Some(event),
        };
        let what = match &request.event {
            Some(pb::replica_report::Event::Started(_)) => "started".to_string(),
            Some(pb::replica_report::Event::Exited(exited)) => {
                format!("exited {}", exited.exit_code)
            }
            None => "nothing".to_string(),
        };
        for _ in 0..MAX_REPORT_ATTEMPTS {
            match self.managers.stub().report_replica(request.clone()).await {
                Ok(ack) => {
                    let ack = ack.into_inner();
                    self.recorder.trace(format!(
                        "{} reported {key:?} {what}: applied {} {}",
                        self.name, ack.applied, ack.reason
                    ));
                    return;
                }
                Err(_) => {
                    self.managers.next();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        self.recorder
            .trace(format!("{} gave up reporting {key:?}", self.name));
    }
}

//! The whole agent in-process against fake managers (real gRPC on loopback, real replica
//! processes through the `corral-agent-shim` binary): registration through a follower
//! and a dead address, heartbeats to the leader, reconciliation of assignments (start,
//! stop, stale, newer generation, max runtime, Abnormal), reports in order, adoption
//! after an agent restart, logs, driver upgrades and simulated nodes; and, in
//! `isolation`, replicas confined for real (tenant users, cgroups, devices).
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

use corral_agent::{Agent, AgentConfig, AgentOptions, ShimProgram};
use corral_client::AuthInterceptor;
use corral_wire::headers::LEADER_HEADER;
use corral_wire::pb;
use corral_wire::pb::agent_service_server::{AgentService, AgentServiceServer};
use corral_wire::pb::replica_report::Event as ReportEvent;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

const TOKEN: &str = "agent-token-for-tests-0123";

#[derive(Default)]
struct Recorded {
    registrations: Vec<pb::RegisterAgentNodeRequest>,
    heartbeats: Vec<pb::HeartbeatRequest>,
    reports: Vec<pb::ReplicaReport>,
    drivers: Vec<pb::DriverReport>,
    redirects: usize,
    /// The bearer token of every call, with the call's name.
    credentials: Vec<(&'static str, String)>,
}

/// A fake manager: records every call; as a follower it answers `Unavailable` naming
/// the leader.
#[derive(Clone, Default)]
struct FakeManager {
    recorded: Arc<Mutex<Recorded>>,
    leader: Arc<Mutex<Option<String>>>,
    ids: Arc<Mutex<BTreeMap<String, u64>>>,
    assignments: Arc<Mutex<BTreeMap<u64, watch::Sender<Option<pb::NodeAssignments>>>>>,
    applied_index: Arc<Mutex<u64>>,
}

/// The credential the fake manager gives node `node`, and the node's log key.
fn node_credential(node: u64) -> String {
    format!("node-credential-{node}-0123456789")
}

fn log_key(node: u64) -> String {
    format!("log-key-{node}")
}

impl FakeManager {
    /// Registration takes the bootstrap token or a node credential; every other call
    /// a node credential only.
    fn check(&self, request: &Request<impl Sized>, call: &'static str) -> Result<(), Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        let is_node = token.starts_with("node-credential-");
        let is_bootstrap = token == TOKEN;
        self.recorded
            .lock()
            .unwrap()
            .credentials
            .push((call, token.clone()));
        if !(is_node || (is_bootstrap && call == "register")) {
            return Err(Status::unauthenticated("bad token"));
        }
        if let Some(leader) = self.leader.lock().unwrap().clone() {
            self.recorded.lock().unwrap().redirects += 1;
            let mut status = Status::unavailable("not the leader");
            status
                .metadata_mut()
                .insert(LEADER_HEADER, leader.parse().unwrap());
            return Err(status);
        }
        Ok(())
    }

    fn sender(&self, node: u64) -> watch::Sender<Option<pb::NodeAssignments>> {
        self.assignments
            .lock()
            .unwrap()
            .entry(node)
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Publishes the whole desired state of `node`.
    fn assign(&self, node: u64, replicas: Vec<pb::ReplicaAssignment>) {
        self.assign_with(node, replicas, None, "Available");
    }

    fn assign_with(
        &self,
        node: u64,
        replicas: Vec<pb::ReplicaAssignment>,
        upgrade: Option<pb::DriverTarget>,
        status: &str,
    ) {
        let applied_index = {
            let mut index = self.applied_index.lock().unwrap();
            *index += 1;
            *index
        };
        self.sender(node).send_replace(Some(pb::NodeAssignments {
            node,
            applied_index,
            replicas,
            upgrade,
            status: status.into(),
        }));
    }

    fn reports_of(&self, job: u64) -> Vec<(u64, ReportEvent)> {
        self.recorded
            .lock()
            .unwrap()
            .reports
            .iter()
            .filter(|report| report.job == job)
            .filter_map(|report| Some((report.generation, report.event.clone()?)))
            .collect()
    }

    fn heartbeats(&self) -> usize {
        self.recorded.lock().unwrap().heartbeats.len()
    }
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::NodeAssignments, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for FakeManager {
    type WatchAssignmentsStream = AssignmentStream;

    async fn register_agent_node(
        &self,
        request: Request<pb::RegisterAgentNodeRequest>,
    ) -> Result<Response<pb::RegisterAgentNodeResponse>, Status> {
        self.check(&request, "register")?;
        let request = request.into_inner();
        let node = {
            let mut ids = self.ids.lock().unwrap();
            let next = 7 + ids.len() as u64;
            *ids.entry(request.name.clone()).or_insert(next)
        };
        self.recorded.lock().unwrap().registrations.push(request);
        Ok(Response::new(pb::RegisterAgentNodeResponse {
            node,
            credential: node_credential(node),
            log_key: log_key(node),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.check(&request, "heartbeat")?;
        self.recorded
            .lock()
            .unwrap()
            .heartbeats
            .push(request.into_inner());
        Ok(Response::new(pb::HeartbeatResponse::default()))
    }

    async fn watch_assignments(
        &self,
        request: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        self.check(&request, "watch")?;
        let receiver = self.sender(request.into_inner().node).subscribe();
        let stream = tokio_stream::wrappers::WatchStream::new(receiver)
            .filter_map(|assignments| assignments.map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_replica(
        &self,
        request: Request<pb::ReplicaReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        self.check(&request, "report")?;
        self.recorded
            .lock()
            .unwrap()
            .reports
            .push(request.into_inner());
        Ok(Response::new(pb::ReportAck {
            applied: true,
            reason: String::new(),
        }))
    }

    async fn report_driver(
        &self,
        request: Request<pb::DriverReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        self.check(&request, "driver")?;
        self.recorded
            .lock()
            .unwrap()
            .drivers
            .push(request.into_inner());
        Ok(Response::new(pb::ReportAck {
            applied: true,
            reason: String::new(),
        }))
    }
}

/// Serves a fake manager on a free loopback port; returns it and its `host:port`.
async fn start_manager() -> (FakeManager, String) {
    let manager = FakeManager::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = AgentServiceServer::new(manager.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (manager, address)
}

/// A loopback address nothing listens on.
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn config(managers: Vec<String>, work_dir: &Path) -> AgentConfig {
    let mut config = AgentConfig::parse(&format!(
        r#"
managers = ["placeholder:1"]
bootstrap_token = "{TOKEN}"
name = "node-a"
flavor = "gpu-2x"
zone = "zone-z"
work_dir = "{}"
heartbeat_interval_ms = 50
termination_grace_ms = 500
simulate_accelerators = true
accelerators = 2
tls = {{ insecure = true }}
isolation = "none"
[labels]
rack = "r9"
[drivers]
gpu_driver_version = "535"
"#,
        work_dir.display()
    ))
    .unwrap();
    config.managers = managers;
    config
}

async fn start_agent(config: AgentConfig, simulate: Option<u32>) -> Agent {
    Agent::start(
        config,
        AgentOptions {
            simulate,
            shim: ShimProgram {
                program: env!("CARGO_BIN_EXE_corral-agent-shim").into(),
                leading_args: Vec::new(),
            },
        },
    )
    .await
    .expect("the agent starts")
}

/// Polls `probe` every 20 ms for at most 15 s.
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn replica(job: u64, generation: u64, script: &str, evidence: &Path) -> pb::ReplicaAssignment {
    let mut environment = BTreeMap::new();
    environment.insert("EVIDENCE".to_string(), evidence.display().to_string());
    pb::ReplicaAssignment {
        job,
        rank: 0,
        generation,
        world_size: 1,
        command: vec!["sh".into(), "-c".into(), script.into()],
        environment,
        kind: "training".into(),
        ..Default::default()
    }
}

fn started_pid(event: &ReportEvent) -> Option<u32> {
    match event {
        ReportEvent::Started(started) => Some(started.pid),
        ReportEvent::Exited(_) => None,
    }
}

fn exited(event: &ReportEvent) -> Option<(i32, String)> {
    match event {
        ReportEvent::Exited(exited) => Some((exited.exit_code, exited.reason.clone())),
        ReportEvent::Started(_) => None,
    }
}

/// Whether `pid` runs: it exists and is neither a zombie nor dead.
fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, in parentheses that may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

/// SIGKILL to the process group `group`.
fn kill_group(group: u32) {
    let group = i32::try_from(group).unwrap();
    assert!(group > 1);
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
}

/// Publishes `listed` plus a replica of `job` that exits at once, and waits for its
/// exit report: the node's loop has then handled every earlier message, event and
/// reconciliation, and the reports it queued before have been sent (a node's reports
/// go out in order). The positive signal that the agent had its chance to do
/// something it must not do.
async fn settled(
    manager: &FakeManager,
    mut listed: Vec<pb::ReplicaAssignment>,
    job: u64,
    evidence: &Path,
) {
    listed.push(replica(job, 1, "exit 0", evidence));
    manager.assign(7, listed);
    eventually("the sentinel replica's exit report", || {
        manager
            .reports_of(job)
            .iter()
            .find_map(|(_, event)| exited(event))
    })
    .await;
}

struct Setup {
    _dir: tempfile::TempDir,
    work_dir: PathBuf,
    evidence: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let work_dir = dir.path().join("work");
    let evidence = dir.path().join("evidence");
    std::fs::create_dir_all(&evidence).unwrap();
    Setup {
        _dir: dir,
        work_dir,
        evidence,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_through_a_follower_heartbeats_the_leader_and_runs_its_assignments() {
    let s = setup();
    let (leader, leader_address) = start_manager().await;
    let (follower, follower_address) = start_manager().await;
    *follower.leader.lock().unwrap() = Some(leader_address.clone());
    let agent = start_agent(
        config(
            vec![
                dead_address().await,
                follower_address.clone(),
                leader_address.clone(),
            ],
            &s.work_dir,
        ),
        None,
    )
    .await;

    let registration = eventually("registration at the leader", || {
        leader
            .recorded
            .lock()
            .unwrap()
            .registrations
            .first()
            .cloned()
    })
    .await;
    assert_eq!(registration.name, "node-a");
    assert_eq!(registration.flavor, "gpu-2x");
    assert_eq!(registration.zone, "zone-z");
    assert_eq!(
        registration.labels.get("rack").map(String::as_str),
        Some("r9")
    );
    assert_eq!(registration.gpu_driver_version, "535");
    assert_eq!(registration.agent_address, agent.advertised_address());
    assert!(!agent.advertised_address().ends_with(":0"));
    eventually("heartbeats at the leader", || {
        (leader.heartbeats() >= 3).then_some(())
    })
    .await;
    assert!(follower.recorded.lock().unwrap().redirects >= 1);
    assert!(follower.recorded.lock().unwrap().heartbeats.is_empty());

    // One replica that records its environment and exits.
    let script = r#"env | grep -E '^(CORRAL_|CUDA_|MASTER_)' | sort > "$EVIDENCE/env"; while [ ! -f "$EVIDENCE/go" ]; do sleep 0.02; done"#;
    let mut assignment = replica(1, 3, script, &s.evidence);
    assignment.world_size = 2;
    assignment.master_host = "127.0.0.1".into();
    assignment.device_indices = vec![1];
    assignment.accelerator_kind = "gpu".into();
    assignment.storage_endpoints = vec!["s3:1".into(), "s3:2".into()];
    leader.assign(7, vec![assignment.clone()]);
    let pid = eventually("the started report", || {
        leader
            .reports_of(1)
            .first()
            .and_then(|(_, event)| started_pid(event))
    })
    .await;
    assert!(pid > 1);
    let env = eventually("the workload's environment", || {
        let env = read(&s.evidence.join("env"));
        env.contains("CUDA").then_some(env)
    })
    .await;
    for expected in [
        "CORRAL_GENERATION=3",
        "CORRAL_JOB_ID=1",
        "CORRAL_NODE_NAME=node-a",
        "CORRAL_RANK=0",
        "CORRAL_STORAGE_ENDPOINTS=s3:1,s3:2",
        "CORRAL_WORLD_SIZE=2",
        "CUDA_VISIBLE_DEVICES=1",
    ] {
        assert!(
            env.lines().any(|line| line == expected),
            "{expected} in {env}"
        );
    }
    // Rank 0 of a gang: its agent chose a free rendezvous port of master_port_range.
    let port: u16 = env
        .lines()
        .find_map(|line| line.strip_prefix("MASTER_PORT="))
        .and_then(|port| port.parse().ok())
        .expect("MASTER_PORT");
    assert!((29_500..=30_499).contains(&port), "{port}");
    assert!(
        env.lines().any(|line| line == "MASTER_ADDR=127.0.0.1"),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|line| line == format!("CORRAL_MASTER_ADDR=127.0.0.1:{port}")),
        "{env}"
    );
    // ... and reported it with the start, for the other ranks.
    let reported = leader
        .reports_of(1)
        .iter()
        .find_map(|(_, event)| match event {
            ReportEvent::Started(started) => Some(started.master_port),
            ReportEvent::Exited(_) => None,
        });
    assert_eq!(reported, Some(u32::from(port)));
    // Heartbeats carry the running replica and the simulated utilisation (1 of 2).
    eventually("a heartbeat with the replica", || {
        let recorded = leader.recorded.lock().unwrap();
        let last = recorded.heartbeats.last()?;
        (last.replicas.len() == 1
            && last.replicas[0].pid == pid
            && last.replicas[0].generation == 3
            && last.accelerator_utilization_percent == 50
            && last.agent_address == agent.advertised_address())
        .then_some(())
    })
    .await;

    // The same desired state again (recorded started now) starts nothing new.
    assignment.started = true;
    leader.assign(7, vec![assignment.clone()]);
    std::fs::write(s.evidence.join("go"), "").unwrap();
    let reports = eventually("the exit report", || {
        let reports = leader.reports_of(1);
        (reports.len() >= 2).then_some(reports)
    })
    .await;
    assert_eq!(started_pid(&reports[0].1), Some(pid));
    assert_eq!(exited(&reports[1].1), Some((0, String::new())));

    // The leader moves: heartbeats and the assignments stream follow.
    *follower.leader.lock().unwrap() = None;
    *leader.leader.lock().unwrap() = Some(follower_address.clone());
    let before = follower.heartbeats();
    eventually("heartbeats at the new leader", || {
        (follower.heartbeats() > before + 2).then_some(())
    })
    .await;
    // The new leader knows the node and the log index (replicated state).
    follower.ids.lock().unwrap().insert("node-a".into(), 7);
    let index = *leader.applied_index.lock().unwrap();
    *follower.applied_index.lock().unwrap() = index;
    follower.assign(7, vec![replica(2, 1, "exit 0", &s.evidence)]);
    eventually("the new leader's assignment ran", || {
        let reports = follower.reports_of(2);
        reports
            .iter()
            .any(|(_, event)| exited(event) == Some((0, String::new())))
            .then_some(())
    })
    .await;
    // Since job 1's exit the node handled the leader's move and a newer assignment.
    assert_eq!(
        leader.reports_of(1).len() + follower.reports_of(1).len(),
        2,
        "started once, exited once"
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reports_the_exit_while_stale_and_superseded_processes_die_unreported() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    let forever = r#"echo $$ > "$EVIDENCE/pid-$CORRAL_JOB_ID-$CORRAL_GENERATION"; while true; do sleep 0.02; done"#;
    manager.assign(
        7,
        vec![
            replica(1, 1, forever, &s.evidence),
            replica(2, 1, forever, &s.evidence),
        ],
    );
    let pid_of = |job: u64, generation: u64| -> Option<u32> {
        read(&s.evidence.join(format!("pid-{job}-{generation}")))
            .trim()
            .parse()
            .ok()
    };
    let (one, two) = eventually("both run", || Some((pid_of(1, 1)?, pid_of(2, 1)?))).await;

    // Job 1 is stopped; job 2 is placed again (generation 2).
    let mut stopping = replica(1, 1, forever, &s.evidence);
    stopping.stop = true;
    stopping.started = true;
    manager.assign(
        7,
        vec![stopping.clone(), replica(2, 2, forever, &s.evidence)],
    );
    let stopped = eventually("job 1's exit report", || {
        manager
            .reports_of(1)
            .iter()
            .find_map(|(_, event)| exited(event))
    })
    .await;
    assert_eq!(stopped, (143, "stopped".to_string()), "sh ended by SIGTERM");
    assert!(!pid_alive(one));
    let newer = eventually("generation 2 runs", || pid_of(2, 2)).await;
    assert!(
        !pid_alive(two),
        "generation 1 ended before generation 2 started"
    );
    let reports = manager.reports_of(2);
    assert!(
        reports
            .iter()
            .all(|(generation, event)| *generation == 2 || exited(event).is_none()),
        "no exit report for the superseded generation: {reports:?}"
    );

    // The managers declare the node lost: nothing is listed; heartbeats go on.
    manager.assign_with(7, vec![], None, "Abnormal");
    eventually("the stale process is killed", || {
        (!pid_alive(newer)).then_some(())
    })
    .await;
    let beats = manager.heartbeats();
    eventually("heartbeats continue", || {
        (manager.heartbeats() > beats + 2).then_some(())
    })
    .await;
    eventually("records of replicas no longer listed are removed", || {
        let files = |dir: &str| {
            std::fs::read_dir(s.work_dir.join(dir))
                .ok()
                .map(Iterator::count)
        };
        (files("state")? == 0 && files("trash")? == 0).then_some(())
    })
    .await;
    settled(&manager, vec![], 9, &s.evidence).await;
    assert!(
        manager
            .reports_of(2)
            .iter()
            .all(|(_, event)| exited(event).is_none()),
        "stale exits are not reported"
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_past_its_max_runtime_is_ended_and_reported_as_such() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    let mut limited = replica(1, 1, "exec sleep 30", &s.evidence);
    limited.max_runtime_ms = 400;
    let assigned = Instant::now();
    manager.assign(7, vec![limited]);
    let exit = eventually("the exit report", || {
        manager
            .reports_of(1)
            .iter()
            .find_map(|(_, event)| exited(event))
    })
    .await;
    assert_eq!(exit, (143, "max_runtime".to_string()));
    assert!(assigned.elapsed() >= Duration::from_millis(400));
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_replicas_and_reports_what_ended_meanwhile() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address.clone()], &s.work_dir), None).await;
    let waits_for = |file: &str, code: i32| {
        format!(
            r#"echo $$ >> "$EVIDENCE/starts-$CORRAL_JOB_ID"; while [ ! -f "$EVIDENCE/{file}" ]; do sleep 0.02; done; exit {code}"#
        )
    };
    let assignments = vec![
        replica(1, 1, &waits_for("go-1", 5), &s.evidence),
        replica(2, 1, "exec sleep 30", &s.evidence),
        replica(3, 1, &waits_for("go-3", 6), &s.evidence),
        replica(4, 1, &waits_for("never", 0), &s.evidence),
    ];
    manager.assign(7, assignments.clone());
    let pids: BTreeMap<u64, u32> = eventually("four started reports", || {
        let pids: BTreeMap<u64, u32> = (1..=4)
            .filter_map(|job| {
                let pid = manager
                    .reports_of(job)
                    .iter()
                    .find_map(|(_, event)| started_pid(event))?;
                Some((job, pid))
            })
            .collect();
        (pids.len() == 4).then_some(pids)
    })
    .await;
    agent.stop().await.unwrap();
    assert!(
        pids.values().all(|pid| pid_alive(*pid)),
        "replicas outlive the agent"
    );

    // While no agent runs: job 3 ends by itself, job 2's shim and workload are killed.
    std::fs::write(s.evidence.join("go-3"), "").unwrap();
    kill_group(pids[&2]);
    eventually("job 3 and job 2 are gone", || {
        (!pid_alive(pids[&3]) && !pid_alive(pids[&2])).then_some(())
    })
    .await;
    // The managers recorded jobs 2 and 3 started; job 1's start record was lost on
    // their side; job 4 is no longer wanted.
    let mut relisted: Vec<pb::ReplicaAssignment> = assignments[..3].to_vec();
    relisted[1].started = true;
    relisted[2].started = true;
    manager.assign(7, relisted);

    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    eventually("job 3's recorded exit", || {
        manager
            .reports_of(3)
            .iter()
            .find_map(|(_, event)| exited(event))
            .filter(|exit| *exit == (6, String::new()))
    })
    .await;
    eventually("job 2 is lost", || {
        manager
            .reports_of(2)
            .iter()
            .find_map(|(_, event)| exited(event))
            .filter(|exit| *exit == (137, "lost".to_string()))
    })
    .await;
    // Job 1 is adopted: its start reported again with the same process.
    eventually("job 1's start reported again", || {
        let starts: Vec<u32> = manager
            .reports_of(1)
            .iter()
            .filter_map(|(_, event)| started_pid(event))
            .collect();
        (starts.len() == 2).then_some(())
    })
    .await;
    assert!(manager
        .reports_of(1)
        .iter()
        .filter_map(|(_, event)| started_pid(event))
        .all(|pid| pid == pids[&1]));
    eventually("job 4 (stale) is killed", || {
        (!pid_alive(pids[&4])).then_some(())
    })
    .await;
    std::fs::write(s.evidence.join("go-1"), "").unwrap();
    eventually("job 1's exit", || {
        manager
            .reports_of(1)
            .iter()
            .find_map(|(_, event)| exited(event))
            .filter(|exit| *exit == (5, String::new()))
    })
    .await;
    for job in [1, 3, 4] {
        assert_eq!(
            read(&s.evidence.join(format!("starts-{job}")))
                .lines()
                .count(),
            1,
            "job {job} never started twice"
        );
    }
    assert!(
        manager
            .reports_of(4)
            .iter()
            .all(|(_, event)| exited(event).is_none()),
        "a stale replica's exit is not reported"
    );
    assert_eq!(manager.recorded.lock().unwrap().registrations.len(), 2);
    agent.stop().await.unwrap();
}

/// The job ids with a started report, each with how many it has.
fn started_counts(
    manager: &FakeManager,
    jobs: std::ops::RangeInclusive<u64>,
) -> BTreeMap<u64, usize> {
    jobs.filter_map(|job| {
        let starts = manager
            .reports_of(job)
            .iter()
            .filter(|(_, event)| started_pid(event).is_some())
            .count();
        (starts > 0).then_some((job, starts))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_assignments_starts_every_replica_exactly_once() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    let jobs = 1..=40u64;
    let script = r#"echo $$ >> "$EVIDENCE/starts-$CORRAL_JOB_ID"; while [ ! -f "$EVIDENCE/go" ] && [ -d "$EVIDENCE" ]; do sleep 0.2; done"#;
    let burst: Vec<pb::ReplicaAssignment> = jobs
        .clone()
        .map(|job| replica(job, 1, script, &s.evidence))
        .collect();
    // The same whole view again and again while the spawns are under way: each
    // reconciles against replicas that are still starting.
    for _ in 0..5 {
        manager.assign(7, burst.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let starts = eventually("40 started reports", || {
        let starts = started_counts(&manager, jobs.clone());
        (starts.len() == 40).then_some(starts)
    })
    .await;
    assert!(starts.values().all(|count| *count == 1), "{starts:?}");
    std::fs::write(s.evidence.join("go"), "").unwrap();
    eventually("40 exit reports", || {
        jobs.clone()
            .all(|job| {
                manager
                    .reports_of(job)
                    .iter()
                    .any(|(_, event)| exited(event) == Some((0, String::new())))
            })
            .then_some(())
    })
    .await;
    for job in jobs {
        let reports = manager.reports_of(job);
        assert_eq!(
            reports.len(),
            2,
            "job {job}: started then exited, once: {reports:?}"
        );
        assert!(started_pid(&reports[0].1).is_some());
        assert_eq!(
            read(&s.evidence.join(format!("starts-{job}")))
                .lines()
                .count(),
            1,
            "job {job} ran once"
        );
    }
    agent.stop().await.unwrap();
}

/// Makes the next spawn of `job` (rank 0, `generation`) block after its process
/// started, until the returned path is opened for reading: the agent writes a
/// process's record to `state/<job>-<rank>-<generation>.json.tmp<pid>` before renaming
/// it into place, and opening a FIFO for writing waits for a reader.
fn block_the_record_of(work_dir: &Path, job: u64, generation: u64) -> PathBuf {
    let path = work_dir.join("state").join(format!(
        "{job}-0-{generation}.json.tmp{}",
        std::process::id()
    ));
    let name = std::ffi::CString::new(path.display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    path
}

/// Lets a spawn blocked by [`block_the_record_of`] go on.
async fn unblock(fifo: PathBuf) {
    tokio::task::spawn_blocking(move || {
        let mut contents = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::open(fifo).unwrap(), &mut contents).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_stopped_or_dropped_while_starting_are_ended_once_started() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    // Until ended, or until the test's directory is gone (should the test fail).
    let forever = r#"echo $$ >> "$EVIDENCE/starts-$CORRAL_JOB_ID"; while [ -d "$EVIDENCE" ]; do sleep 0.02; done"#;
    let pids_of = |job: u64| -> Vec<u32> {
        read(&s.evidence.join(format!("starts-{job}")))
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    // Jobs 1 and 2 start, but their spawns hang after their processes started.
    let one = block_the_record_of(&s.work_dir, 1, 1);
    let two = block_the_record_of(&s.work_dir, 2, 1);
    manager.assign(
        7,
        vec![
            replica(1, 1, forever, &s.evidence),
            replica(2, 1, forever, &s.evidence),
        ],
    );
    let (one_pid, two_pid) = eventually("both processes run", || {
        Some((*pids_of(1).first()?, *pids_of(2).first()?))
    })
    .await;

    // Job 1 is stopped and job 2 placed elsewhere while they are starting; job 3 starts
    // meanwhile (the node's loop is not held up by the hanging spawns), and its started
    // report shows that the agent has seen this view.
    let mut stopping = replica(1, 1, forever, &s.evidence);
    stopping.stop = true;
    let listed = vec![stopping, replica(3, 1, "exit 0", &s.evidence)];
    manager.assign(7, listed.clone());
    eventually("job 3 ran", || {
        manager
            .reports_of(3)
            .iter()
            .find_map(|(_, event)| exited(event))
    })
    .await;
    assert!(pid_alive(one_pid) && pid_alive(two_pid), "still starting");
    assert!(manager.reports_of(1).is_empty() && manager.reports_of(2).is_empty());

    unblock(one).await;
    unblock(two).await;
    eventually("both are ended", || {
        (!pid_alive(one_pid) && !pid_alive(two_pid)).then_some(())
    })
    .await;
    // Job 1 is still listed (stopping): its start and exit are reported; job 2 is not
    // listed here any more: nothing about it is.
    let reports = eventually("job 1's exit report", || {
        let reports = manager.reports_of(1);
        reports
            .iter()
            .any(|(_, event)| exited(event).is_some())
            .then_some(reports)
    })
    .await;
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(started_pid(&reports[0].1).is_some());
    assert_eq!(
        exited(&reports[1].1).map(|(_, reason)| reason),
        Some("stopped".into())
    );
    settled(&manager, listed, 4, &s.evidence).await;
    assert!(
        manager.reports_of(2).is_empty(),
        "a dropped replica is not reported"
    );
    assert_eq!(pids_of(1).len(), 1, "never started twice");
    assert_eq!(pids_of(2).len(), 1, "never started twice");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_while_spawning_leaves_every_replica_to_the_next_one_once() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let jobs = 1..=24u64;
    let script = r#"echo $$ >> "$EVIDENCE/starts-$CORRAL_JOB_ID"; while [ ! -f "$EVIDENCE/go" ] && [ -d "$EVIDENCE" ]; do sleep 0.2; done"#;
    let burst: Vec<pb::ReplicaAssignment> = jobs
        .clone()
        .map(|job| replica(job, 1, script, &s.evidence))
        .collect();
    manager.assign(7, burst.clone());
    let agent = start_agent(config(vec![address.clone()], &s.work_dir), None).await;
    // Stopped as soon as the first replicas started: others are being spawned, the
    // rest not yet.
    eventually("a first started report", || {
        (!started_counts(&manager, jobs.clone()).is_empty()).then_some(())
    })
    .await;
    agent.stop().await.unwrap();

    // The managers' view is unchanged (no start recorded): the next agent adopts what
    // runs and starts the rest.
    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    eventually("every replica started", || {
        jobs.clone()
            .all(|job| !read(&s.evidence.join(format!("starts-{job}"))).is_empty())
            .then_some(())
    })
    .await;
    eventually("every start reported", || {
        (started_counts(&manager, jobs.clone()).len() == 24).then_some(())
    })
    .await;
    settled(&manager, burst, 25, &s.evidence).await;
    for job in jobs.clone() {
        assert_eq!(
            read(&s.evidence.join(format!("starts-{job}")))
                .lines()
                .count(),
            1,
            "job {job} started once"
        );
    }
    std::fs::write(s.evidence.join("go"), "").unwrap();
    eventually("every replica ended", || {
        jobs.clone()
            .all(|job| {
                manager
                    .reports_of(job)
                    .iter()
                    .any(|(_, event)| exited(event) == Some((0, String::new())))
            })
            .then_some(())
    })
    .await;
    agent.stop().await.unwrap();
}

async fn logs_client(
    agent: &Agent,
    token: &str,
) -> pb::agent_logs_client::AgentLogsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AuthInterceptor>,
> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", agent.advertised_address()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    pb::agent_logs_client::AgentLogsClient::with_interceptor(
        channel,
        AuthInterceptor::new(Some(token)).unwrap(),
    )
}

async fn read_all(
    client: &mut pb::agent_logs_client::AgentLogsClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AuthInterceptor>,
    >,
    request: pb::ReadLogsRequest,
) -> Result<String, Status> {
    let mut stream = client.read_logs(request).await?.into_inner();
    let mut output = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert!(chunk.data.len() <= 64 * 1024);
        output.extend_from_slice(&chunk.data);
    }
    Ok(String::from_utf8_lossy(&output).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_served_with_the_token_and_followed_until_the_process_ends() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address], &s.work_dir), None).await;
    let script = r#"echo first; echo second >&2; while [ ! -f "$EVIDENCE/go" ]; do sleep 0.02; done; echo bye"#;
    manager.assign(7, vec![replica(1, 1, script, &s.evidence)]);
    eventually("started", || manager.reports_of(1).first().cloned()).await;
    let request = pb::ReadLogsRequest {
        node: 7,
        job: 1,
        rank: 0,
        ..Default::default()
    };
    let mut client = logs_client(&agent, &log_key(7)).await;
    let mut output = String::new();
    for _ in 0..100 {
        output = read_all(&mut client, request).await.unwrap();
        if output.contains("second") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(output, "first\nsecond\n");

    // Neither a wrong key, nor the bootstrap token, nor another node's key opens them;
    // and an unknown node answers the same as a wrong key.
    for wrong_key in ["not-the-log-key".to_string(), TOKEN.to_string(), log_key(8)] {
        let mut wrong = logs_client(&agent, &wrong_key).await;
        let refused = read_all(&mut wrong, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{wrong_key}");
    }
    let unknown = read_all(
        &mut client,
        pb::ReadLogsRequest {
            node: 99,
            ..request
        },
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);

    // Following from an offset: what is there arrives, the process goes on once the
    // stream is open, the rest arrives, and the stream ends with the process.
    let mut followed = client
        .read_logs(pb::ReadLogsRequest {
            follow: true,
            offset: 6,
            ..request
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(15), followed.message())
        .await
        .expect("the first chunk in time")
        .unwrap()
        .expect("a first chunk");
    let mut output = first.data;
    assert!(output.starts_with(b"second"), "{output:?}");
    std::fs::write(s.evidence.join("go"), "").unwrap();
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = followed.message().await.unwrap() {
            output.extend_from_slice(&chunk.data);
        }
    })
    .await
    .expect("the followed stream ends after the exit");
    assert_eq!(String::from_utf8_lossy(&output), "second\nbye\n");
    let tail = read_all(
        &mut client,
        pb::ReadLogsRequest {
            tail_bytes: 4,
            ..request
        },
    )
    .await
    .unwrap();
    assert_eq!(tail, "bye\n");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_upgrade_runs_the_hook_once_per_target_and_is_reported() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let mut config = config(vec![address.clone()], &s.work_dir);
    config.upgrade_hook = Some(
        ["sh", "-c", "echo $CORRAL_TARGET_GPU_DRIVER >> hook.log"]
            .map(String::from)
            .to_vec(),
    );
    let agent = start_agent(config.clone(), None).await;
    let target = |gpu: &str| {
        Some(pb::DriverTarget {
            gpu_driver_version: gpu.into(),
            npu_driver_version: String::new(),
        })
    };
    manager.assign_with(7, vec![], target("550"), "Available");
    let report = eventually("the driver report", || {
        manager.recorded.lock().unwrap().drivers.first().cloned()
    })
    .await;
    assert_eq!(report.gpu_driver_version, "550");
    assert_eq!(report.npu_driver_version, "");
    // The same target again, with a replica whose exit report shows that the node
    // handled this message: no second run.
    manager.assign_with(
        7,
        vec![replica(5, 1, "exit 0", &s.evidence)],
        target("550"),
        "Available",
    );
    eventually(
        "the exit report of the replica sent with the target",
        || {
            manager
                .reports_of(5)
                .iter()
                .find_map(|(_, event)| exited(event))
        },
    )
    .await;
    assert_eq!(read(&s.work_dir.join("hook.log")), "550\n");
    assert_eq!(manager.recorded.lock().unwrap().drivers.len(), 1);
    manager.assign_with(7, vec![], target("560"), "Available");
    eventually("the second upgrade", || {
        (manager.recorded.lock().unwrap().drivers.len() == 2).then_some(())
    })
    .await;
    assert_eq!(read(&s.work_dir.join("hook.log")), "550\n560\n");
    agent.stop().await.unwrap();

    // After a restart the node registers with the upgraded version.
    manager.assign(7, vec![]);
    let agent = start_agent(config, None).await;
    let registration = eventually("registered again", || {
        manager
            .recorded
            .lock()
            .unwrap()
            .registrations
            .get(1)
            .cloned()
    })
    .await;
    assert_eq!(registration.gpu_driver_version, "560");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_register_separately_and_run_in_their_own_directories() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address], &s.work_dir), Some(3)).await;
    let ids = eventually("three registrations", || {
        let ids = manager.ids.lock().unwrap().clone();
        (ids.len() == 3).then_some(ids)
    })
    .await;
    assert_eq!(
        ids.keys().cloned().collect::<Vec<_>>(),
        vec!["node-a-1", "node-a-2", "node-a-3"]
    );
    let second = ids["node-a-2"];
    manager.assign(
        second,
        vec![replica(
            1,
            1,
            r#"echo $CORRAL_NODE_NAME > "$EVIDENCE/where""#,
            &s.evidence,
        )],
    );
    eventually("ran on the second node", || {
        (read(&s.evidence.join("where")) == "node-a-2\n").then_some(())
    })
    .await;
    assert!(s
        .work_dir
        .join("node-a-2/replicas/1-0-1/output.log")
        .exists());
    let reports = eventually("reported by that node", || {
        let recorded = manager.recorded.lock().unwrap();
        (recorded.reports.len() == 2).then(|| recorded.reports.clone())
    })
    .await;
    assert!(reports.iter().all(|report| report.node == second));
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bootstraps_once_then_speaks_only_with_its_own_private_credential() {
    let s = setup();
    let (manager, address) = start_manager().await;
    let agent = start_agent(config(vec![address.clone()], &s.work_dir), None).await;
    eventually("a heartbeat", || {
        let recorded = manager.recorded.lock().unwrap();
        recorded
            .credentials
            .iter()
            .any(|(call, _)| *call == "heartbeat")
            .then_some(())
    })
    .await;
    agent.stop().await.unwrap();
    {
        let recorded = manager.recorded.lock().unwrap();
        let (first_call, first_token) = &recorded.credentials[0];
        assert_eq!((*first_call, first_token.as_str()), ("register", TOKEN));
        for (call, token) in recorded
            .credentials
            .iter()
            .filter(|(call, _)| *call != "register")
        {
            assert_eq!(
                token,
                &node_credential(7),
                "{call} must carry the node's credential"
            );
        }
    }
    // The credential and log key are kept where only the agent's user reads them.
    let file = s.work_dir.join("credential");
    let kept = read(&file);
    assert!(
        kept.contains(&node_credential(7)) && kept.contains(&log_key(7)),
        "{kept}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the credential file is {mode:o}");
    }

    // Restarted without any bootstrap token, the node registers with its credential.
    let calls_before = manager.recorded.lock().unwrap().credentials.len();
    let mut without_bootstrap = config(vec![address], &s.work_dir);
    without_bootstrap.bootstrap_token = None;
    let agent = start_agent(without_bootstrap, None).await;
    eventually("registered again", || {
        let recorded = manager.recorded.lock().unwrap();
        recorded.credentials[calls_before..]
            .iter()
            .any(|(call, _)| *call == "heartbeat")
            .then_some(())
    })
    .await;
    agent.stop().await.unwrap();
    let recorded = manager.recorded.lock().unwrap();
    assert!(recorded.credentials[calls_before..]
        .iter()
        .all(|(_, token)| token == &node_credential(7)));
}

/// Replica isolation on this machine, for real: tenant users, cgroups (v1 here), the
/// devices controller with fake accelerator device files. Needs root and a cgroup
/// hierarchy; without them each test says so and checks nothing else (the agent then
/// refuses `isolation = "full"`, which `a_full_isolation_agent_needs_what_it_confines_with`
/// checks either way).
mod isolation {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Why this machine cannot run these tests, or None.
    fn unavailable() -> Option<String> {
        corral_agent::isolation_unavailable()
    }

    /// An agent config with full isolation, a small pids limit and the fake devices.
    fn isolated_config(managers: Vec<String>, work_dir: &Path, devices: &[PathBuf]) -> AgentConfig {
        let mut config = config(managers, work_dir);
        config.isolation = corral_agent::IsolationMode::Full;
        config.replica_pids_max = 48;
        config.tenant_uid_range = [300_000, 300_099];
        config.accelerator_devices = devices.to_vec();
        config
    }

    /// A setup for an isolation test, or None (said why) when this machine cannot
    /// isolate.
    fn isolated_setup() -> Option<Setup> {
        if let Some(reason) = unavailable() {
            eprintln!("skipped: {reason}");
            return None;
        }
        Some(setup())
    }

    /// A fake manager (and its address) and a fully isolating agent of it working in
    /// `s`'s directory, with `devices` as its accelerators.
    async fn start_isolated(s: &Setup, devices: &[PathBuf]) -> (FakeManager, String, Agent) {
        let (manager, address) = start_manager().await;
        let config = isolated_config(vec![address.clone()], &s.work_dir, devices);
        (manager, address, start_agent(config, None).await)
    }

    fn job(job: u64, tenant: u64, script: &str) -> pb::ReplicaAssignment {
        pb::ReplicaAssignment {
            job,
            rank: 0,
            generation: 1,
            world_size: 1,
            command: vec!["sh".into(), "-c".into(), script.into()],
            kind: "training".into(),
            tenant,
            ..Default::default()
        }
    }

    /// The assignment again, to be stopped (an unlisted replica would die unreported).
    fn stopped(assignment: pb::ReplicaAssignment) -> pb::ReplicaAssignment {
        pb::ReplicaAssignment {
            stop: true,
            ..assignment
        }
    }

    fn work_dir_of(node_root: &Path, job: u64) -> PathBuf {
        node_root.join(format!("replicas/{job}-0-1/work"))
    }

    fn log_of(node_root: &Path, job: u64) -> String {
        read(&node_root.join(format!("replicas/{job}-0-1/output.log")))
    }

    async fn exit_of(manager: &FakeManager, job: u64) -> (i32, String) {
        eventually(&format!("job {job}'s exit report"), || {
            manager
                .reports_of(job)
                .iter()
                .find_map(|(_, event)| exited(event))
        })
        .await
    }

    /// The replica's cgroup directories, from its record.
    fn cgroup_dirs(node_root: &Path, job: u64) -> BTreeMap<String, PathBuf> {
        let record: serde_json::Value =
            serde_json::from_str(&read(&node_root.join(format!("state/{job}-0-1.json")))).unwrap();
        serde_json::from_value(record["cgroup"].clone()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_isolation_agent_needs_what_it_confines_with() {
        let s = setup();
        let (_manager, address) = start_manager().await;
        let config = isolated_config(vec![address], &s.work_dir, &[]);
        let started = Agent::start(
            config,
            AgentOptions {
                simulate: None,
                shim: ShimProgram {
                    program: env!("CARGO_BIN_EXE_corral-agent-shim").into(),
                    leading_args: Vec::new(),
                },
            },
        )
        .await;
        match (unavailable(), started) {
            (None, Ok(agent)) => agent.stop().await.unwrap(),
            (Some(reason), Err(error)) => {
                assert!(error.to_string().contains("isolation"), "{error}");
                eprintln!("refused as it must be here: {reason}");
            }
            (None, Err(error)) => panic!("this machine can isolate, yet: {error}"),
            (Some(reason), Ok(_)) => panic!("started without isolation ({reason})"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenants_run_as_their_own_users_and_cannot_read_each_other_or_the_agent() {
        let Some(s) = isolated_setup() else {
            return;
        };
        let (manager, _, agent) = start_isolated(&s, &[]).await;
        let root = s.work_dir.clone();
        // Tenant 1: a secret in its environment, its pid in its own directory.
        let mut secret = job(
            1,
            1,
            "echo $$ > pid; echo secret-of-tenant-1 > notes; exec sleep 60",
        );
        secret
            .environment
            .insert("API_KEY".into(), "tenant-1-api-key".into());
        manager.assign(7, vec![secret.clone()]);
        let pid_file = work_dir_of(&root, 1).join("pid");
        let pid: u32 = eventually("tenant 1's pid", || read(&pid_file).trim().parse().ok()).await;
        // Tenant 2 tries everything, and says what it is.
        let other_work = work_dir_of(&root, 1);
        let probe = format!(
            r#"id -u; id -G; umask; grep NoNewPrivs /proc/self/status; env | sort
for target in /proc/{pid}/environ {other}/notes {root}/credential {root}/tenant-users.json; do
  if cat "$target" >/dev/null 2>&1; then echo "READ $target"; else echo "DENIED $target"; fi
done
for target in {other} {root}/state {root}/replicas; do
  if ls "$target" >/dev/null 2>&1; then echo "READ $target"; else echo "DENIED $target"; fi
done
if echo x > {other}/planted 2>/dev/null; then echo "WROTE"; else echo "NO-WRITE"; fi"#,
            other = other_work.display(),
            root = root.display(),
        );
        let secret_stopped = secret.clone();
        manager.assign(7, vec![secret, job(2, 2, &probe)]);
        let exit = exit_of(&manager, 2).await;
        let log = log_of(&root, 2);
        assert_eq!(exit, (0, String::new()), "{log}");
        let lines: Vec<&str> = log.lines().collect();
        let uid: u32 = lines[0].parse().unwrap();
        assert!((300_000..300_100).contains(&uid), "{log}");
        assert_eq!(lines[1], uid.to_string(), "only its own group: {log}");
        assert_eq!(lines[2], "0077", "{log}");
        assert_eq!(
            lines[3].split_whitespace().last(),
            Some("1"),
            "no_new_privs: {log}"
        );
        assert!(!log.contains("tenant-1-api-key"), "{log}");
        assert!(
            !log.contains("CORRAL_TOKEN") && !log.contains("CARGO"),
            "a clean environment: {log}"
        );
        for target in [
            format!("/proc/{pid}/environ"),
            format!("{}/notes", other_work.display()),
            format!("{}/credential", root.display()),
            format!("{}/tenant-users.json", root.display()),
            format!("{}", other_work.display()),
            format!("{}/state", root.display()),
            format!("{}/replicas", root.display()),
        ] {
            assert!(log.contains(&format!("DENIED {target}")), "{target}: {log}");
        }
        assert!(log.contains("NO-WRITE"), "{log}");
        // Tenant 1 runs as another uid, and owns its directory alone.
        let status = read(Path::new(&format!("/proc/{pid}/status")));
        let uid_line = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .unwrap();
        let tenant_1_uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(tenant_1_uid != uid && tenant_1_uid != 0);
        let mode = std::fs::metadata(&other_work).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        manager.assign(7, vec![stopped(secret_stopped)]);
        exit_of(&manager, 1).await;
        agent.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_pids_and_cpu_are_limited_and_an_oom_kill_is_reported_as_such() {
        let Some(s) = isolated_setup() else {
            return;
        };
        let (manager, _, agent) = start_isolated(&s, &[]).await;
        let root = s.work_dir.clone();
        // 32 MiB allowed; dd touches a 256 MiB buffer.
        let mut hungry = job(1, 1, "dd if=/dev/zero of=/dev/null bs=256M count=4");
        hungry.memory_mib = 32;
        // 48 pids allowed; a fork bomb of sleeps.
        // (dash gives up at the first refused fork; the outer shell reports it.)
        let bomb = job(
            2,
            1,
            "sh -c 'n=0; while [ $n -lt 200 ]; do sleep 30 & n=$((n+1)); done'; echo forked $?; exec sleep 30",
        );
        // Half a core, busy.
        let mut busy = job(3, 1, "while :; do :; done");
        busy.cpu_millicores = 500;
        manager.assign(7, vec![hungry, bomb.clone(), busy.clone()]);
        let exit = exit_of(&manager, 1).await;
        assert_eq!(
            exit,
            (137, "oom_killed".to_string()),
            "{}",
            log_of(&root, 1)
        );

        let log = eventually("the fork bomb hits its limit", || {
            let log = log_of(&root, 2);
            log.contains("forked").then_some(log)
        })
        .await;
        let bomb_cgroup = cgroup_dirs(&root, 2);
        let pids = read(&bomb_cgroup["pids"].join("pids.current"));
        let pids: u32 = pids.trim().parse().unwrap();
        assert!(pids <= 48, "{pids} processes: {log}");
        assert!(pids >= 40, "the bomb filled its limit: {pids}");

        let busy_cgroup = cgroup_dirs(&root, 3);
        let usage = |cgroup: &BTreeMap<String, PathBuf>| -> u64 {
            read(&cgroup["cpuacct"].join("cpuacct.usage"))
                .trim()
                .parse()
                .unwrap()
        };
        let (before, at) = (usage(&busy_cgroup), Instant::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cores = (usage(&busy_cgroup) - before) as f64 / at.elapsed().as_nanos() as f64;
        assert!(
            (0.2..=0.6).contains(&cores),
            "a 500 millicore quota used {cores:.2} cores"
        );

        manager.assign(7, vec![stopped(bomb), stopped(busy)]);
        exit_of(&manager, 2).await;
        exit_of(&manager, 3).await;
        for dir in bomb_cgroup.values().chain(busy_cgroup.values()) {
            eventually("the cgroup is removed", || (!dir.exists()).then_some(())).await;
        }
        agent.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_opens_only_its_own_accelerators_and_leaves_no_daemon_behind() {
        let Some(s) = isolated_setup() else {
            return;
        };
        // Fake accelerators: character devices of a major number no driver has (240 is
        // for local use), so an allowed open fails with ENXIO, a refused one with EPERM.
        let devices_dir = s.evidence.join("dev");
        std::fs::create_dir_all(&devices_dir).unwrap();
        std::fs::set_permissions(&devices_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&s.evidence, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            s.evidence.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let devices: Vec<PathBuf> = (0..2)
            .map(|index| devices_dir.join(format!("accel{index}")))
            .collect();
        for (index, device) in devices.iter().enumerate() {
            let path = std::ffi::CString::new(device.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string; mknod has no other preconditions.
            let made = unsafe {
                libc::mknod(
                    path.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(240, index as u32),
                )
            };
            assert_eq!(made, 0, "mknod {}", device.display());
            std::fs::set_permissions(device, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        let (manager, address, agent) = start_isolated(&s, &devices).await;
        let root = s.work_dir.clone();
        let probe = format!(
            r#"for device in {0} {1}; do cat "$device"; done 2>&1
setsid sh -c 'echo $$ > daemon; exec sleep 300' & 
while [ ! -s daemon ]; do sleep 0.02; done; echo ready; exec sleep 300"#,
            devices[0].display(),
            devices[1].display()
        );
        let mut holder = job(1, 1, &probe);
        holder.device_indices = vec![1];
        manager.assign(7, vec![holder.clone()]);
        let log = eventually("the probe is ready", || {
            let log = log_of(&root, 1);
            log.contains("ready").then_some(log)
        })
        .await;
        let denied = format!("{}: Operation not permitted", devices[0].display());
        let allowed = format!("{}: No such device or address", devices[1].display());
        assert!(log.contains(&denied), "accelerator 0 is not its own: {log}");
        assert!(
            log.contains(&allowed),
            "accelerator 1 is (no driver behind it): {log}"
        );
        let daemon: u32 = read(&work_dir_of(&root, 1).join("daemon"))
            .trim()
            .parse()
            .unwrap();
        assert!(pid_alive(daemon));

        // An agent restart adopts the replica with its cgroup.
        agent.stop().await.unwrap();
        let cgroup = cgroup_dirs(&root, 1);
        assert!(cgroup.values().all(|dir| dir.exists()));
        let agent = start_agent(isolated_config(vec![address], &s.work_dir, &devices), None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(pid_alive(daemon), "adopted, not ended");
        // Stopped: the daemonized grandchild, in its own session, goes with its cgroup.
        manager.assign(7, vec![stopped(holder)]);
        exit_of(&manager, 1).await;
        eventually("the daemon is gone", || (!pid_alive(daemon)).then_some(())).await;
        for dir in cgroup.values() {
            eventually("the cgroup is removed", || (!dir.exists()).then_some(())).await;
        }
        agent.stop().await.unwrap();
    }
}

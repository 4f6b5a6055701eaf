//! Gray failures against three real replicas under write load, one test per finding of
//! issue 19: a data directory that fills up, a wall clock stepped by an hour forward and
//! back, and a leader (then a follower) that can send but not receive. Each ends with
//! no acknowledged write lost, the replicas' digests equal, and writes resumed within
//! the bound it states.
//!
//! The disk and partition tests need root (tmpfs mounts, network namespaces and
//! iptables, which `.ci/run` installs); without it they say so and pass vacuously.

use crate::common::{self, Admin, Cluster, ADMIN_TOKEN, HARNESS_RAFT, QUIET_LOOPS};
use corral_client::pb;
use corral_client::{ClientOptions, CorralClient};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Runs a system command that must succeed.
fn run(program: &str, arguments: &[&str]) {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("{program} {arguments:?}: {error}"));
    assert!(
        output.status.success(),
        "{program} {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One acknowledged write: a tenant, with the cluster's stamp of it and the wall clock
/// around the call.
#[derive(Clone, Debug)]
struct Acknowledged {
    created_at_ms: u64,
    sent_wall_ms: u64,
    acknowledged_wall_ms: u64,
    acknowledged_at: Instant,
}

/// Writers creating tenants until stopped: one through the client library (failing over
/// by itself), and one pinned to each replica (so the cluster's first write after a
/// fault is seen whichever replica takes it).
struct Load {
    acknowledged: Arc<Mutex<BTreeMap<String, Acknowledged>>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn create_tenant(
    create: impl std::future::Future<Output = Result<pb::Tenant, String>>,
    name: String,
    acknowledged: &Mutex<BTreeMap<String, Acknowledged>>,
) -> Result<(), String> {
    let sent_wall_ms = wall_ms();
    let tenant = create.await?;
    acknowledged.lock().unwrap().insert(
        name,
        Acknowledged {
            created_at_ms: tenant.created_at_ms,
            sent_wall_ms,
            acknowledged_wall_ms: wall_ms(),
            acknowledged_at: Instant::now(),
        },
    );
    Ok(())
}

fn tenant_request(name: &str) -> pb::CreateTenantRequest {
    pb::CreateTenantRequest {
        name: name.to_string(),
        quota: Some(common::resources(1_000, 1_024, 0)),
        ..Default::default()
    }
}

impl Load {
    fn start(addresses: &[String]) -> Load {
        // Names differ between the loads of one test, so a second load creates anew.
        static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let load = LOADS.fetch_add(1, Ordering::Relaxed);
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let options = ClientOptions {
            timeout: Duration::from_secs(30),
            transport: common::tls::transport(),
            ..ClientOptions::default()
        };
        let client = CorralClient::connect(addresses.to_vec(), Some(ADMIN_TOKEN.into()), options)
            .expect("client");
        {
            let (acknowledged, failures, stop) =
                (acknowledged.clone(), failures.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut number = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("library-{load}-{number}");
                    number += 1;
                    let create = async {
                        client
                            .create_tenant(tenant_request(&name))
                            .await
                            .map_err(|error| error.to_string())
                    };
                    if let Err(error) = create_tenant(create, name.clone(), &acknowledged).await {
                        failures.lock().unwrap().push(format!("{name}: {error}"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        for (index, address) in addresses.iter().enumerate() {
            let (acknowledged, stop, address) =
                (acknowledged.clone(), stop.clone(), address.clone());
            tasks.push(tokio::spawn(async move {
                let admin = Admin::connect(&address, ADMIN_TOKEN).await;
                let mut number = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("pinned-{load}-{index}-{number}");
                    number += 1;
                    let request = admin.request(tenant_request(&name));
                    let mut raw = admin.raw();
                    let create = async move {
                        let call = raw.create_tenant(request);
                        match tokio::time::timeout(Duration::from_millis(500), call).await {
                            Ok(Ok(response)) => Ok(response.into_inner()),
                            Ok(Err(status)) => Err(status.message().to_string()),
                            Err(_) => Err("no answer within 500 ms".to_string()),
                        }
                    };
                    // A pinned writer's failures are expected while its replica is cut
                    // off; what it acknowledged must survive all the same.
                    if create_tenant(create, name, &acknowledged).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }));
        }
        Load {
            acknowledged,
            failures,
            stop,
            tasks,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    async fn wait_for(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count() < count {
            assert!(Instant::now() < deadline, "the load did not get going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How long after `fault` the first write was acknowledged, waiting up to `within`.
    async fn resumed_after(&self, fault: Instant, within: Duration) -> Option<Duration> {
        let deadline = fault + within + Duration::from_secs(1);
        loop {
            let first = self
                .acknowledged
                .lock()
                .unwrap()
                .values()
                .map(|ack| ack.acknowledged_at)
                .filter(|at| *at > fault)
                .min();
            if let Some(at) = first {
                return Some(at - fault);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> (BTreeMap<String, Acknowledged>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (acknowledged, failures)
    }
}

/// Every acknowledged tenant is on every running replica, and they all agree.
async fn check_nothing_lost(cluster: &Cluster, acknowledged: &BTreeMap<String, Acknowledged>) {
    cluster.wait_for_agreement(Duration::from_secs(60)).await;
    for replica in cluster
        .replicas
        .iter()
        .filter(|replica| replica.child.is_some())
    {
        let admin = Admin::connect(&replica.address, ADMIN_TOKEN).await;
        let tenants = admin
            .raw()
            .list_tenants(admin.request(pb::ListTenantsRequest {
                read: Some(pb::ReadOptions { stale: true }),
            }))
            .await
            .expect("list tenants")
            .into_inner()
            .tenants;
        let names: std::collections::BTreeSet<String> =
            tenants.into_iter().map(|tenant| tenant.name).collect();
        let missing: Vec<&String> = acknowledged
            .keys()
            .filter(|name| !names.contains(*name))
            .collect();
        assert!(
            missing.is_empty(),
            "replica {} lost acknowledged writes: {:?}",
            replica.id,
            &missing[..missing.len().min(10)]
        );
    }
}

async fn status_within(address: &str, timeout: Duration) -> Option<pb::ClusterStatusResponse> {
    let admin = Admin::connect(address, ADMIN_TOKEN).await;
    tokio::time::timeout(timeout, admin.status())
        .await
        .ok()?
        .ok()
}

/// The leader as the given replicas see it (a majority naming one), polled until
/// `accept` takes it or `timeout` passes.
async fn leader_among(
    cluster: &Cluster,
    indexes: &[usize],
    timeout: Duration,
    accept: impl Fn(u64) -> bool,
) -> Option<(u64, Instant)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for index in indexes {
            if let Some(status) = status_within(
                &cluster.replicas[*index].address,
                Duration::from_millis(300),
            )
            .await
            {
                if status.leader != 0 && accept(status.leader) {
                    return Some((status.leader, Instant::now()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Three sled replicas on loopback with the harness settings, not started.
fn three_local_replicas() -> Cluster {
    let hosts = vec!["127.0.0.1".to_string(); 3];
    Cluster::prepare(
        "sled",
        QUIET_LOOPS,
        HARNESS_RAFT,
        &hosts,
        &common::tls::pki().config_section(),
    )
}

fn spawn_all(cluster: &mut Cluster) {
    for index in 0..cluster.replicas.len() {
        cluster.spawn(index);
    }
}

fn addresses_of(cluster: &Cluster) -> Vec<String> {
    cluster
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect()
}

// ---------- a full disk ----------

/// tmpfs mounts, unmounted when dropped (after the cluster, which is declared later).
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
    }
}

/// Add `line` to the `[storage]` table of every replica's config (before they start).
fn set_storage(cluster: &Cluster, line: &str) {
    for replica in &cluster.replicas {
        let config = std::fs::read_to_string(&replica.config_path).unwrap();
        let changed = config.replacen("[storage]\n", &format!("[storage]\n{line}\n"), 1);
        assert_ne!(config, changed, "the harness config has a [storage] table");
        std::fs::write(&replica.config_path, changed).unwrap();
    }
}

/// Mount a tmpfs of `size_mib` on every replica's data directory.
fn mount_data_dirs(cluster: &Cluster, size_mib: u64) -> Mounts {
    let mut mounts = Mounts(Vec::new());
    for replica in &cluster.replicas {
        std::fs::create_dir_all(&replica.data_dir).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0700"),
                "tmpfs",
                replica.data_dir.to_str().unwrap(),
            ],
        );
        mounts.0.push(replica.data_dir.clone());
    }
    mounts
}

/// Write `mib` MiB of zeros into `directory`, or until it is full when None; the file is
/// returned for freeing.
fn fill_with(directory: &Path, mib: Option<u64>) -> PathBuf {
    use std::io::Write;
    let path = directory.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while mib.is_none_or(|mib| written < mib) && file.write_all(&chunk).is_ok() {
        written += 1;
    }
    file.sync_all().expect("filler on disk");
    path
}

/// Write zeros into `directory` until it is full; the file is returned for freeing.
fn fill(directory: &Path) -> PathBuf {
    fill_with(directory, None)
}

/// Wait for replica `index`'s process to end; its exit status.
async fn exit_of(
    cluster: &mut Cluster,
    index: usize,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let child = cluster.replicas[index].child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            cluster.replicas[index].child = None;
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "replica {} kept running on a full disk:\n{}",
            cluster.replicas[index].id,
            cluster.log_of(cluster.replicas[index].id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A full data directory stops its replica (leader, then follower) at once with a
/// clear message; the others go on taking writes within 5 s; after the space is freed
/// the replica is restarted (as its supervisor would) and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_its_replica_and_the_cluster_goes_on() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let _machine = common::machine_alone().await;
    let mut cluster = three_local_replicas();
    // No floor: this test is about the disk actually filling.
    set_storage(&cluster, "min_free_disk_mib = 0");
    let _mounts = mount_data_dirs(&cluster, 64);
    spawn_all(&mut cluster);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let load = Load::start(&addresses_of(&cluster));
    load.wait_for(50).await;

    for role in ["leader", "follower"] {
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
        let index = if role == "leader" {
            cluster.index_of(leader)
        } else {
            (cluster.index_of(leader) + 1) % 3
        };
        let id = cluster.replicas[index].id;
        let filler = fill(&cluster.replicas[index].data_dir);
        let fault = Instant::now();
        let status = exit_of(&mut cluster, index, Duration::from_secs(20)).await;
        let stopped = Instant::now();
        let stopped_after = stopped - fault;
        assert!(!status.success(), "a storage fault is a failure exit");
        let log = cluster.log_of(id);
        assert!(
            log.contains("storage failed") && log.contains("supervisor restarts"),
            "replica {id} ({role}) says why it stopped:\n{log}"
        );
        // Counted from the stop: writes the quorum took before it do not count.
        let resumed = load
            .resumed_after(stopped, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!("no write was acknowledged within 5 s of the {role} stopping")
            });
        eprintln!(
            "{role} {id}: stopped {stopped_after:?} after its disk filled; writes resumed {resumed:?} after it stopped"
        );
        assert!(resumed < Duration::from_secs(5));

        // Space freed, the supervisor restarts it: it catches up from its disk.
        std::fs::remove_file(&filler).unwrap();
        let freed = Instant::now();
        cluster.spawn(index);
        cluster.wait_for_catch_up(Duration::from_secs(60)).await;
        eprintln!(
            "{role} {id}: caught up {:?} after its disk was freed",
            freed.elapsed()
        );
    }
    let (acknowledged, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "the client library rode out both faults: {failures:?}"
    );
    check_nothing_lost(&cluster, &acknowledged).await;
    drop(cluster);
}

/// The first cluster alarm, once one is in force (within 10 s).
async fn first_alarm(client: &CorralClient) -> pb::Alarm {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.cluster_status(false).await.expect("status");
        if let Some(alarm) = status.alarms.first() {
            return alarm.clone();
        }
        assert!(Instant::now() < deadline, "no NOSPACE alarm within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Below the free-space floor a replica raises NOSPACE: every replica then refuses new
/// work with RESOURCE_EXHAUSTED and shows the alarm, while deletes go on; an alarm
/// disarmed too early comes back, and once space is freed and the operator disarms it
/// (`corral cluster alarm-disarm`) writes are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn below_the_free_space_floor_new_work_is_refused_until_disarmed() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let _machine = common::machine_alone().await;
    let mut cluster = three_local_replicas();
    set_storage(&cluster, "min_free_disk_mib = 32");
    let _mounts = mount_data_dirs(&cluster, 64);
    spawn_all(&mut cluster);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let addresses = addresses_of(&cluster);
    let options = ClientOptions {
        transport: common::tls::transport(),
        ..ClientOptions::default()
    };
    let client = CorralClient::connect(addresses.clone(), Some(ADMIN_TOKEN.into()), options)
        .expect("client");
    let doomed = client
        .create_tenant(tenant_request("before-the-alarm"))
        .await
        .expect("writes are taken while there is room");

    // Replica 2's disk falls under the floor (64 MiB tmpfs, 40 MiB taken).
    let filler = fill_with(&cluster.replicas[1].data_dir, Some(40));
    let alarm = first_alarm(&client).await;
    assert_eq!((alarm.replica, alarm.kind.as_str()), (2, "NOSPACE"));
    assert!(
        !alarm.detail.contains('/'),
        "no path leaks: {}",
        alarm.detail
    );
    for (index, address) in addresses.iter().enumerate() {
        let admin = Admin::connect(address, ADMIN_TOKEN).await;
        let status = admin.status().await.expect("status");
        assert_eq!(status.alarms.len(), 1, "every replica shows the alarm");
        // Each replica enforces the alarm once it has applied it (at once after the
        // apply; at worst one heartbeat interval later).
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut attempt = 0;
        let refused = loop {
            let name = format!("refused-{index}-{attempt}");
            attempt += 1;
            match admin
                .raw()
                .create_tenant(admin.request(tenant_request(&name)))
                .await
            {
                Err(status) => break status,
                Ok(_) => assert!(Instant::now() < deadline, "{address} kept taking new work"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("NOSPACE"),
            "{}",
            refused.message()
        );
    }
    client
        .delete_tenant(pb::DeleteTenantRequest { tenant: doomed.id })
        .await
        .expect("what frees space goes on");

    // Disarmed while the disk is still low: raised again.
    let disarm = || {
        let output = common::corral_command(&addresses.join(","), ADMIN_TOKEN)
            .args(["cluster", "alarm-disarm"])
            .output()
            .expect("run corral cluster alarm-disarm");
        assert!(output.status.success(), "{output:?}");
    };
    disarm();
    let again = first_alarm(&client).await;
    assert_eq!(again.replica, 2, "the cause remains, so the alarm returns");

    // Space freed and the alarm disarmed: writes are taken again.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    disarm();
    let status = client.cluster_status(false).await.expect("status");
    assert!(status.alarms.is_empty(), "{:?}", status.alarms);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    client
        .create_tenant(tenant_request("after-the-alarm"))
        .await
        .expect("writes are taken again");
    cluster.wait_for_agreement(Duration::from_secs(30)).await;
}

// ---------- a clock step ----------

/// The configured `max_clock_offset_ms` (the default).
const CLOCK_BOUND_MS: u64 = 500;
const HOUR_MS: i64 = 3_600_000;

/// One clock-offset file per replica (each starting at 0), named in its environment.
fn clock_offset_files(cluster: &mut Cluster) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = (1..=3)
        .map(|id| cluster.directory.path().join(format!("clock-{id}")))
        .collect();
    for (replica, file) in cluster.replicas.iter_mut().zip(&files) {
        std::fs::write(file, "0").unwrap();
        replica.env.push((
            corral_server::CLOCK_OFFSET_FILE_VARIABLE.to_string(),
            file.display().to_string(),
        ));
    }
    files
}

/// The wall clock of each replica steps by an hour (forward on one leader, back on the
/// next): every acknowledged write is stamped within the bound (500 ms) of true time,
/// leadership leaves each stepped replica, and time never freezes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hour_clock_step_moves_no_stamp_and_leadership_leaves_it() {
    let _machine = common::machine_shared().await;
    let mut cluster = three_local_replicas();
    let offset_files = clock_offset_files(&mut cluster);
    spawn_all(&mut cluster);
    let first = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let load = Load::start(&addresses_of(&cluster));
    load.wait_for(30).await;

    // Forward an hour on the leader, then back an hour on whoever leads next.
    let mut stepped = Vec::new();
    let mut leader = first;
    for step_ms in [HOUR_MS, -HOUR_MS] {
        let index = cluster.index_of(leader);
        std::fs::write(&offset_files[index], step_ms.to_string()).unwrap();
        let step = Instant::now();
        stepped.push(leader);
        let others: Vec<usize> = (0..3).filter(|other| *other != index).collect();
        let (next, at) = leader_among(&cluster, &others, Duration::from_secs(10), |candidate| {
            !stepped.contains(&candidate)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "leadership did not leave replica {leader} after its clock stepped {step_ms:+} ms"
            )
        });
        eprintln!(
            "clock {step_ms:+} ms on {leader}: replica {next} leads {:?} later",
            at - step
        );
        let status = status_within(&cluster.replicas[index].address, Duration::from_secs(2))
            .await
            .expect("the stepped replica answers");
        assert!(
            status
                .problems
                .iter()
                .any(|problem| problem.contains("wall clock")),
            "the stepped replica reports its clock: {:?}",
            status.problems
        );
        assert!(
            status.clock_offset_ms.unsigned_abs() > 3_000_000,
            "{status:?}"
        );
        leader = next;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Both clocks corrected; time goes on at once.
    for file in &offset_files {
        std::fs::write(file, "0").unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acknowledged, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_stamped_within(&acknowledged, CLOCK_BOUND_MS);
    check_nothing_lost(&cluster, &acknowledged).await;
}

/// Every acknowledged write was stamped while its call was in flight, give or take
/// `bound_ms`.
fn assert_stamped_within(acknowledged: &BTreeMap<String, Acknowledged>, bound_ms: u64) {
    let mut worst_ms = 0u64;
    for (name, ack) in acknowledged {
        let early = ack.sent_wall_ms.saturating_sub(ack.created_at_ms);
        let late = ack.created_at_ms.saturating_sub(ack.acknowledged_wall_ms);
        worst_ms = worst_ms.max(early).max(late);
        assert!(
            early <= bound_ms && late <= bound_ms,
            "{name} was stamped {} while its call ran from {} to {}",
            ack.created_at_ms,
            ack.sent_wall_ms,
            ack.acknowledged_wall_ms
        );
    }
    eprintln!(
        "{} writes, every stamp within {worst_ms} ms of true time",
        acknowledged.len()
    );
}

/// After the whole cluster stops, the replica that led comes back first as leader of
/// its term (its vote is durable), with a wall clock an hour ahead and no anchor: it
/// stamps the time its peers' clocks agree on (from their replies), not its own, and
/// hands leadership to one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "open finding (issue 19): followers anchor on the first leader's unchecked wall \
            clock from its early heartbeats, and the next leader stamps that time"]
async fn a_first_leader_with_a_wrong_clock_after_a_full_restart_moves_no_stamp() {
    let _machine = common::machine_shared().await;
    let mut cluster = three_local_replicas();
    let offset_files = clock_offset_files(&mut cluster);
    spawn_all(&mut cluster);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let load = Load::start(&addresses_of(&cluster));
    load.wait_for(20).await;
    let (before, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    cluster.wait_for_agreement(Duration::from_secs(30)).await;

    // Everything stops at once; the leader's clock is an hour ahead when all return.
    for index in 0..3 {
        cluster.kill(index);
    }
    let wrong = cluster.index_of(leader);
    std::fs::write(&offset_files[wrong], HOUR_MS.to_string()).unwrap();
    spawn_all(&mut cluster);
    let load = Load::start(&addresses_of(&cluster));
    load.wait_for(30).await;
    let others: Vec<usize> = (0..3).filter(|index| *index != wrong).collect();
    leader_among(&cluster, &others, Duration::from_secs(10), |candidate| {
        candidate != leader
    })
    .await
    .expect("leadership leaves the replica whose clock is an hour ahead");
    load.wait_for(60).await;
    let (after, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_stamped_within(&after, CLOCK_BOUND_MS);
    let status = status_within(&cluster.replicas[wrong].address, Duration::from_secs(2))
        .await
        .expect("the replica an hour ahead answers");
    assert!(
        status.clock_offset_ms > 3_000_000,
        "it reports its own clock as off: {status:?}"
    );
    let mut everything = before;
    everything.extend(after);
    check_nothing_lost(&cluster, &everything).await;
}

// ---------- a one-way partition ----------

/// Three network namespaces on a bridge, one per replica, removed when dropped.
struct Network {
    names: Vec<String>,
    bridge: String,
}

const SUBNET: &str = "10.213.0";

impl Network {
    fn create(count: usize) -> Network {
        let tag = std::process::id() % 100_000;
        let bridge = format!("cbr{tag}");
        let network = Network {
            names: (1..=count).map(|n| format!("corral-{tag}-{n}")).collect(),
            bridge: bridge.clone(),
        };
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run(
            "ip",
            &["addr", "add", &format!("{SUBNET}.254/24"), "dev", &bridge],
        );
        run("ip", &["link", "set", &bridge, "up"]);
        for (index, name) in network.names.iter().enumerate() {
            let host_side = format!("cv{tag}-{}", index + 1);
            run("ip", &["netns", "add", name]);
            run(
                "ip",
                &[
                    "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns",
                    name,
                ],
            );
            run("ip", &["link", "set", &host_side, "master", &bridge, "up"]);
            let address = format!("{SUBNET}.{}/24", index + 1);
            run(
                "ip",
                &[
                    "netns", "exec", name, "ip", "addr", "add", &address, "dev", "eth0",
                ],
            );
            run(
                "ip",
                &["netns", "exec", name, "ip", "link", "set", "eth0", "up"],
            );
            run(
                "ip",
                &["netns", "exec", name, "ip", "link", "set", "lo", "up"],
            );
        }
        network
    }

    /// Drop everything arriving at namespace `index` (it can still send).
    fn cut_inbound(&self, index: usize) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.names[index],
                "iptables",
                "-A",
                "INPUT",
                "-i",
                "eth0",
                "-j",
                "DROP",
            ],
        );
    }

    fn heal(&self, index: usize) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.names[index],
                "iptables",
                "-D",
                "INPUT",
                "-i",
                "eth0",
                "-j",
                "DROP",
            ],
        );
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn can_partition() -> bool {
    is_root()
        && Command::new("iptables")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
}

/// A leader that can send but not receive is replaced within 2 s (CheckQuorum's
/// quorum-loss probe), the client library's writes go on within its attempt timeout,
/// and when it heals it rejoins without a new election. A follower that cannot receive
/// does not inflate terms or unseat the leader when it returns (pre-vote).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_cannot_receive_is_replaced_and_rejoins_quietly() {
    if !can_partition() {
        eprintln!("skipped: network namespaces and iptables need root and the iptables package");
        return;
    }
    let _machine = common::machine_alone().await;
    let network = Network::create(3);
    let hosts: Vec<String> = (1..=3).map(|n| format!("{SUBNET}.{n}")).collect();
    // A certificate valid for the namespaces' addresses, from the harness CA.
    let pki = common::tls::pki();
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().display().to_string();
    let ca_dir = pki.directory.display().to_string();
    let mut arguments = vec![
        "issue", "--ca-dir", &ca_dir, "--name", "netns", "--out", &out,
    ];
    for host in &hosts {
        arguments.extend(["--host", host.as_str()]);
    }
    common::tls::corral_cert(&arguments);
    let tls_section = format!(
        "[tls]\nca_file = \"{}\"\ncert_file = \"{out}/netns.pem\"\nkey_file = \"{out}/netns-key.pem\"\n",
        pki.ca_file.display()
    );
    // The shipped raft timing: what the bound below is stated for.
    let mut cluster = Cluster::prepare("sled", QUIET_LOOPS, "", &hosts, &tls_section);
    for (replica, name) in cluster.replicas.iter_mut().zip(&network.names) {
        replica.wrapper = vec!["ip".into(), "netns".into(), "exec".into(), name.clone()];
    }
    spawn_all(&mut cluster);
    let all = [0, 1, 2];
    let (leader, _) = leader_among(&cluster, &all, Duration::from_secs(30), |_| true)
        .await
        .expect("a leader");
    let load = Load::start(&addresses_of(&cluster));
    load.wait_for(50).await;

    // The leader stops receiving.
    let cut = cluster.index_of(leader);
    let others: Vec<usize> = all.iter().copied().filter(|index| *index != cut).collect();
    network.cut_inbound(cut);
    let fault = Instant::now();
    let (next, elected_at) =
        leader_among(&cluster, &others, Duration::from_secs(10), |candidate| {
            candidate != leader
        })
        .await
        .expect("a new leader while the old one cannot receive");
    let resumed = load
        .resumed_after(fault, Duration::from_secs(2))
        .await
        .expect("writes resumed within 2 s of the leader's inbound partition");
    eprintln!(
        "leader {leader} cut off inbound: replica {next} elected after {:?}, writes resumed after {resumed:?}",
        elected_at - fault
    );
    assert!(resumed < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    network.heal(cut);
    let healed = Instant::now();
    let term_before = status_within(&cluster.replicas[others[0]].address, Duration::from_secs(2))
        .await
        .expect("status")
        .term;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = status_within(&cluster.replicas[cut].address, Duration::from_secs(2))
        .await
        .expect("the healed replica answers");
    assert_eq!(
        status.leader, next,
        "the old leader follows the new one after healing"
    );
    assert!(status.healthy, "{:?}", status.problems);
    eprintln!("healed for {:?}", healed.elapsed());

    // A follower that cannot receive: no term inflation, no disruption on return.
    let follower = *others
        .iter()
        .find(|index| cluster.replicas[**index].id != next)
        .unwrap();
    network.cut_inbound(follower);
    tokio::time::sleep(Duration::from_secs(5)).await;
    network.heal(follower);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader_index = cluster.index_of(next);
    let status = status_within(
        &cluster.replicas[leader_index].address,
        Duration::from_secs(2),
    )
    .await
    .expect("leader status");
    assert_eq!(
        status.leader, next,
        "the returning follower did not unseat the leader"
    );
    assert_eq!(
        status.term, term_before,
        "a follower cut off for 5 s did not raise the term (pre-vote)"
    );

    let (acknowledged, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "the client library rode out the partitions: {failures:?}"
    );
    check_nothing_lost(&cluster, &acknowledged).await;
    drop(cluster);
    drop(network);
}

//! One cgroup per replica, under the agent's own, on cgroup v1 (a directory per
//! controller, as this project's CI machine and older distributions mount them) or v2
//! (one unified directory, as current distributions do): its CPU quota, memory limit,
//! pids limit, I/O weight where the host has one and, on v1, the devices it may open.
//!
//! The shim joins the replica's cgroup before it starts the workload (so nothing of the
//! workload ever runs outside it), the agent reads its OOM kills and use from it, and
//! ending a replica kills the cgroup, not only the process group: a daemonized
//! grandchild (setsid, double fork) leaves the group but never the cgroup.
//!
//! Detection reads `/proc/self/mountinfo` and `/proc/self/cgroup`: a controller's
//! directory for the agent is its mount point plus the agent's path in that hierarchy
//! (less the mount's root, inside a container).

use crate::process::signal_process;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The v1 controllers a replica must be limited by; the agent refuses to isolate
/// without them.
const REQUIRED_V1: [&str; 4] = ["cpu", "memory", "pids", "devices"];
/// v1 controllers used where mounted: freezer (to kill a forking cgroup without a
/// race), cpuacct (CPU time), blkio (I/O weight).
const OPTIONAL_V1: [&str; 3] = ["freezer", "cpuacct", "blkio"];
/// The v2 controllers a replica must be limited by.
const REQUIRED_V2: [&str; 3] = ["cpu", "memory", "pids"];
/// The CFS period the CPU quota is a share of.
const CPU_PERIOD_US: u64 = 100_000;
/// A quota below this starves even a shell; requests below it get it.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// How long removing a cgroup waits for its killed processes to go.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many kill rounds over a cgroup's processes without a freezer (a fork
/// bomb outruns one round; its pids limit bounds how many it can add per round).
const MAX_KILL_ROUNDS: usize = 64;

/// Which hierarchy the machine gives the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// Controller name to the agent's own directory in that controller's hierarchy.
    V1(BTreeMap<String, PathBuf>),
    /// The agent's own directory in the unified hierarchy.
    V2(PathBuf),
}

impl Hierarchy {
    /// "cgroup v1" or "cgroup v2".
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Hierarchy::V1(_) => "cgroup v1",
            Hierarchy::V2(_) => "cgroup v2",
        }
    }

    /// Whether a replica's devices are enforced (the v1 devices controller; v2 would
    /// need a BPF program, not built yet).
    pub(crate) fn limits_devices(&self) -> bool {
        matches!(self, Hierarchy::V1(_))
    }
}

/// What a replica's cgroup allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupLimits {
    /// 1000 per core; 0: no CPU limit.
    pub(crate) cpu_millicores: u64,
    /// 0: no memory limit.
    pub(crate) memory_mib: u64,
    pub(crate) pids_max: u32,
    /// Device rules (`c 195:0 rwm`) allowed besides the basic ones; v1 only.
    pub(crate) devices: Vec<String>,
}

/// The basic devices every replica may use: null, zero, full, random, urandom, tty,
/// ptmx and pseudo-terminals.
const BASIC_DEVICES: [&str; 8] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// Finds the hierarchy the agent can create replica cgroups in; None when the machine
/// has no usable one (no v1 mount of each required controller, no v2 mount with them).
pub(crate) fn detect() -> io::Result<Option<Hierarchy>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let membership = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(detect_from(&mountinfo, &membership, |path| {
        std::fs::read_to_string(path).ok()
    }))
}

/// [`detect`] on the given file contents (`read` reads a v2 `cgroup.controllers`).
fn detect_from(
    mountinfo: &str,
    membership: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<Hierarchy> {
    // (mount root, mount point, fstype, super options) of every cgroup mount.
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next()?;
            let options = after.next().unwrap_or("");
            let (root, point) = (*fields.get(3)?, *fields.get(4)?);
            matches!(fstype, "cgroup" | "cgroup2").then_some((root, point, fstype, options))
        })
        .collect();
    // Controller list ("" for v2) to the agent's path in that hierarchy.
    let own: Vec<(&str, &str)> = membership
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    let own_dir = |root: &str, point: &str, path: &str| -> PathBuf {
        let relative = path.strip_prefix(root).unwrap_or(path);
        Path::new(point).join(relative.trim_start_matches('/'))
    };
    let mut v1 = BTreeMap::new();
    for (root, point, fstype, options) in &mounts {
        if *fstype != "cgroup" {
            continue;
        }
        let controllers: Vec<&str> = options.split(',').collect();
        for (listed, path) in &own {
            let names: Vec<&str> = listed.split(',').collect();
            if names.iter().any(|name| controllers.contains(name)) {
                for name in names {
                    if REQUIRED_V1.contains(&name) || OPTIONAL_V1.contains(&name) {
                        v1.insert(name.to_string(), own_dir(root, point, path));
                    }
                }
            }
        }
    }
    if REQUIRED_V1.iter().all(|name| v1.contains_key(*name)) {
        return Some(Hierarchy::V1(v1));
    }
    let (root, point, _, _) = mounts.iter().find(|mount| mount.2 == "cgroup2")?;
    let path = own.iter().find(|(listed, _)| listed.is_empty())?.1;
    let dir = own_dir(root, point, path);
    let available = read(&Path::new(point).join("cgroup.controllers"))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    REQUIRED_V2
        .iter()
        .all(|name| available.contains(name))
        .then_some(Hierarchy::V2(dir))
}

/// Prepares the hierarchy for replica cgroups under `<own>/corral`: on v2, moves the
/// agent into a leaf of its own (a v2 cgroup with processes cannot hand controllers to
/// children) and enables the controllers for the subtree.
pub(crate) fn prepare(hierarchy: &Hierarchy) -> io::Result<()> {
    match hierarchy {
        Hierarchy::V1(dirs) => {
            for dir in dirs.values() {
                std::fs::create_dir_all(dir.join("corral"))?;
            }
            Ok(())
        }
        Hierarchy::V2(own) => {
            let procs = std::fs::read_to_string(own.join("cgroup.procs"))?;
            if !procs.trim().is_empty() {
                let leaf = own.join("corral-agent");
                std::fs::create_dir_all(&leaf)?;
                for pid in procs.split_whitespace() {
                    // Moving a process that just ended fails; that is fine.
                    let _ = std::fs::write(leaf.join("cgroup.procs"), pid);
                }
            }
            let base = own.join("corral");
            std::fs::create_dir_all(&base)?;
            enable_subtree(own)?;
            enable_subtree(&base)
        }
    }
}

/// Enables, for `dir`'s children, each controller `dir` has that replicas use.
fn enable_subtree(dir: &Path) -> io::Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|name| matches!(*name, "cpu" | "memory" | "pids" | "io"))
        .map(|name| format!("+{name}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "))
}

/// The directories of one replica's cgroup: one per v1 controller (several names may
/// share a directory where controllers are mounted together), or the v2 one under the
/// name [`UNIFIED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaCgroup {
    dirs: BTreeMap<String, PathBuf>,
}

/// The key of the v2 directory in a replica's record.
pub(crate) const UNIFIED: &str = "unified";

impl ReplicaCgroup {
    /// The cgroup recorded as `dirs` (from a replica's record).
    pub(crate) fn from_dirs(dirs: BTreeMap<String, PathBuf>) -> ReplicaCgroup {
        ReplicaCgroup { dirs }
    }

    /// Creates the cgroup `<own>/corral/<node>/<name>` with `limits`. A cgroup left by
    /// an earlier attempt of the same replica is emptied and reused.
    pub(crate) fn create(
        hierarchy: &Hierarchy,
        node: &str,
        name: &str,
        limits: &CgroupLimits,
    ) -> io::Result<ReplicaCgroup> {
        let cgroup = match hierarchy {
            Hierarchy::V1(dirs) => ReplicaCgroup {
                dirs: dirs
                    .iter()
                    .map(|(controller, dir)| {
                        (controller.clone(), dir.join("corral").join(node).join(name))
                    })
                    .collect(),
            },
            Hierarchy::V2(own) => {
                let node_dir = own.join("corral").join(node);
                if !node_dir.exists() {
                    std::fs::create_dir_all(&node_dir)?;
                    enable_subtree(&node_dir)?;
                }
                ReplicaCgroup {
                    dirs: [(UNIFIED.to_string(), node_dir.join(name))].into(),
                }
            }
        };
        for dir in cgroup.distinct_dirs() {
            std::fs::create_dir_all(dir)?;
        }
        cgroup.kill_all();
        if let Err(error) = cgroup.apply(limits) {
            cgroup.remove();
            return Err(error);
        }
        Ok(cgroup)
    }

    /// What a replica's record keeps.
    pub(crate) fn dirs(&self) -> &BTreeMap<String, PathBuf> {
        &self.dirs
    }

    fn is_v2(&self) -> bool {
        self.dirs.contains_key(UNIFIED)
    }

    /// Each directory once (controllers mounted together share one).
    fn distinct_dirs(&self) -> Vec<&PathBuf> {
        let mut dirs: Vec<&PathBuf> = self.dirs.values().collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Every `cgroup.procs` a process joins to be in this cgroup.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.distinct_dirs()
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// The directory of a v1 controller, or the v2 one.
    fn controller(&self, name: &str) -> Option<&Path> {
        self.dirs
            .get(name)
            .or_else(|| self.dirs.get(UNIFIED))
            .map(PathBuf::as_path)
    }

    fn apply(&self, limits: &CgroupLimits) -> io::Result<()> {
        let quota_us = (limits.cpu_millicores * CPU_PERIOD_US / 1000).max(MIN_CPU_QUOTA_US);
        let memory_bytes = limits.memory_mib.saturating_mul(1 << 20);
        match self.dirs.get(UNIFIED) {
            Some(dir) => {
                if limits.cpu_millicores > 0 {
                    write(dir, "cpu.max", &format!("{quota_us} {CPU_PERIOD_US}"))?;
                }
                if memory_bytes > 0 {
                    write(dir, "memory.max", &memory_bytes.to_string())?;
                    // Swap would let a replica run far past its limit, slowly.
                    write_if_present(dir, "memory.swap.max", "0")?;
                }
                write(dir, "pids.max", &limits.pids_max.to_string())?;
                write_if_present(dir, "io.weight", "default 100")?;
            }
            None => {
                let cpu = self.required("cpu")?;
                if limits.cpu_millicores > 0 {
                    write(cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    write(cpu, "cpu.cfs_quota_us", &quota_us.to_string())?;
                }
                let memory = self.required("memory")?;
                if memory_bytes > 0 {
                    write(memory, "memory.limit_in_bytes", &memory_bytes.to_string())?;
                    write_if_present(
                        memory,
                        "memory.memsw.limit_in_bytes",
                        &memory_bytes.to_string(),
                    )?;
                }
                write(
                    self.required("pids")?,
                    "pids.max",
                    &limits.pids_max.to_string(),
                )?;
                let devices = self.required("devices")?;
                write(devices, "devices.deny", "a")?;
                for rule in BASIC_DEVICES
                    .iter()
                    .copied()
                    .chain(limits.devices.iter().map(String::as_str))
                {
                    write(devices, "devices.allow", rule)?;
                }
                if let Some(blkio) = self.controller("blkio") {
                    write_if_present(blkio, "blkio.weight", "500")?;
                }
            }
        }
        Ok(())
    }

    fn required(&self, name: &str) -> io::Result<&Path> {
        self.controller(name)
            .ok_or_else(|| io::Error::other(format!("no {name} controller")))
    }

    /// The processes in the cgroup now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .distinct_dirs()
            .into_iter()
            .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup: at once through `cgroup.kill` (v2), or
    /// frozen first so none can fork meanwhile (v1 freezer), or in rounds.
    pub(crate) fn kill_all(&self) {
        // The common case, a replica whose workload ended with nothing left behind,
        // costs one read (freezing and thawing an empty cgroup costs ~0.8 ms).
        if self.pids().is_empty() {
            return;
        }
        if let Some(dir) = self.dirs.get(UNIFIED) {
            // Linux 5.14 and later; older kernels fall back to the rounds below.
            let kill = dir.join("cgroup.kill");
            if kill.exists() && std::fs::write(&kill, "1").is_ok() {
                return;
            }
        }
        let freezer = self.dirs.get("freezer").cloned();
        if let Some(freezer) = &freezer {
            if std::fs::write(freezer.join("freezer.state"), "FROZEN").is_err() {
                debug!("{}: cannot freeze", freezer.display());
            }
        }
        for _ in 0..MAX_KILL_ROUNDS {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = signal_process(pid, libc::SIGKILL);
            }
            if freezer.is_some() {
                break;
            }
        }
        if let Some(freezer) = &freezer {
            // Killed processes die only once thawed.
            let _ = std::fs::write(freezer.join("freezer.state"), "THAWED");
        }
    }

    /// Kills what is left in the cgroup and removes it, waiting (bounded) for the
    /// processes to go. Logs what it cannot do: a cgroup left behind holds no
    /// process of a replica that ended, and the next attempt empties it.
    pub(crate) fn remove(&self) {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        loop {
            self.kill_all();
            if self.pids().is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                warn!("{:?}: processes survive SIGKILL; cgroup left", self.dirs);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for dir in self.distinct_dirs() {
            // A just-killed process may linger a moment as the cgroup's last member.
            let mut attempts = 0;
            while let Err(error) = std::fs::remove_dir(dir) {
                if error.kind() == io::ErrorKind::NotFound {
                    break;
                }
                attempts += 1;
                if attempts > 100 || Instant::now() >= deadline {
                    warn!("cannot remove cgroup {}: {error}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        let (file, key) = if self.is_v2() {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        self.controller("memory")
            .and_then(|dir| std::fs::read_to_string(dir.join(file)).ok())
            .and_then(|text| keyed_value(&text, key))
            .unwrap_or(0)
    }
}

/// What a replica's cgroup measured: CPU time, memory now and at its peak, OOM kills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupSample {
    pub(crate) cpu_us: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) memory_peak_bytes: u64,
    pub(crate) oom_kills: u64,
}

impl ReplicaCgroup {
    /// The cgroup's figures now; None when its CPU or memory cannot be read (gone).
    pub(crate) fn sample(&self) -> Option<CgroupSample> {
        let read = |dir: Option<&Path>, name: &str| -> Option<String> {
            std::fs::read_to_string(dir?.join(name)).ok()
        };
        let number = |text: Option<String>| -> Option<u64> { text?.trim().parse().ok() };
        let cpu_us = if self.is_v2() {
            keyed_value(&read(self.controller("cpu"), "cpu.stat")?, "usage_usec")?
        } else {
            number(read(self.controller("cpuacct"), "cpuacct.usage"))? / 1_000
        };
        let (current, peak) = if self.is_v2() {
            ("memory.current", "memory.peak")
        } else {
            ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
        };
        let memory_bytes = number(read(self.controller("memory"), current))?;
        Some(CgroupSample {
            cpu_us,
            memory_bytes,
            memory_peak_bytes: number(read(self.controller("memory"), peak))
                .unwrap_or(memory_bytes),
            oom_kills: self.oom_kills(),
        })
    }
}

/// The number after `key ` on its own line of a flat-keyed cgroup file.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("writing {value:?} to {}: {error}", dir.join(file).display()),
        )
    })
}

fn write_if_present(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    if dir.join(file).exists() {
        write(dir, file, value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
25 30 0:22 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw shared:10 - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/pids rw shared:12 - cgroup cgroup rw,pids
29 25 0:26 / /sys/fs/cgroup/devices rw shared:13 - cgroup cgroup rw,devices
30 25 0:27 / /sys/fs/cgroup/freezer rw shared:14 - cgroup cgroup rw,freezer
31 25 0:28 / /sys/fs/cgroup/unified rw shared:15 - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_controllers_are_found_under_the_agents_own_cgroup() {
        let membership = "5:devices:/\n4:memory:/ci/job-1\n3:pids:/\n2:freezer:/\n1:cpu:/\n0::/\n";
        let hierarchy = detect_from(MOUNTINFO_V1, membership, |_| None).unwrap();
        let Hierarchy::V1(dirs) = hierarchy else {
            panic!("v1 expected");
        };
        assert_eq!(
            dirs["memory"],
            PathBuf::from("/sys/fs/cgroup/memory/ci/job-1")
        );
        assert_eq!(dirs["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(dirs["freezer"], PathBuf::from("/sys/fs/cgroup/freezer"));
        assert!(!dirs.contains_key("cpuacct"));
    }

    #[test]
    fn a_v2_only_host_needs_its_controllers_and_a_missing_one_means_none() {
        let mountinfo =
            "31 25 0:28 / /sys/fs/cgroup rw shared:15 - cgroup2 cgroup2 rw,nsdelegate\n";
        let membership = "0::/system.slice/corral-agent.service\n";
        let full = |_: &Path| Some("cpuset cpu io memory pids".to_string());
        assert_eq!(
            detect_from(mountinfo, membership, full),
            Some(Hierarchy::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/corral-agent.service"
            )))
        );
        let no_pids = |_: &Path| Some("cpu memory".to_string());
        assert_eq!(detect_from(mountinfo, membership, no_pids), None);
        // The v1 mounts of a hybrid host without the devices controller, and a v2 tree
        // with no controllers: nothing usable.
        let hybrid = MOUNTINFO_V1.replace("cgroup rw,devices", "cgroup rw,net_cls");
        assert_eq!(
            detect_from(&hybrid, "0::/\n", |_| Some(String::new())),
            None
        );
    }

    #[test]
    fn flat_keyed_files_give_their_numbers() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(2));
        assert_eq!(keyed_value(text, "missing"), None);
    }
}

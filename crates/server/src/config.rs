//! The manager's configuration file (TOML): who this replica is, where it listens, the
//! initial members, storage, auth and loop intervals. Loading validates every field and a
//! bad file is refused with the field's name and the reason.

use corral_store::Engine;
pub use corral_wire::tls::TlsConfig;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This replica's raft node id (1..).
    pub id: u64,
    /// Address the gRPC services (admin, raft) listen on.
    pub listen: String,
    /// Address other replicas and clients use to reach this one; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub loops: LoopConfig,
    /// Per-tenant bounds kept at the API edge.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// TLS on the replica's port and on its connections to peers and agents (the
    /// cluster CA, this replica's certificate and key), or `insecure = true`.
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The voters a brand-new cluster starts with. The member with the lowest id
    /// initializes the cluster on its first start; later starts ignore this list.
    pub members: Vec<MemberConfig>,
    /// Shared secret peers present to each other on raft and forwarding calls.
    pub secret: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    pub address: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "default_engine")]
    pub engine: Engine,
    /// Take a snapshot (and purge the log behind it) every this many entries.
    #[serde(default = "default_snapshot_every_entries")]
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging replica catches up from
    /// the log instead of receiving a whole snapshot.
    #[serde(default = "default_logs_kept_after_snapshot")]
    pub logs_kept_after_snapshot: u64,
    /// Free space the data directory's file system keeps. Below it the replica raises
    /// the cluster's NOSPACE alarm, which refuses new work everywhere until an operator
    /// disarms it, so the disk does not fill under acknowledged writes (a full disk
    /// stops the replica). 0 turns the check off.
    #[serde(default = "default_min_free_disk_mib")]
    pub min_free_disk_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: default_engine(),
            snapshot_every_entries: default_snapshot_every_entries(),
            logs_kept_after_snapshot: default_logs_kept_after_snapshot(),
            min_free_disk_mib: default_min_free_disk_mib(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The platform admin token to install on first start. When absent, a random one is
    /// generated, printed once and written to `<data_dir>/admin-token`.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A node-bootstrap token to install on first start (for bringing up the first
    /// nodes from config files); agents present it once, as their `bootstrap_token`.
    /// It registers nodes only, expires after 400 days, and can be revoked like any
    /// token (`corral token revoke configured-bootstrap`).
    #[serde(default)]
    pub bootstrap_token: Option<String>,
    /// Removed: agents join with a node-bootstrap token and then use their node's own
    /// credential. Kept only to say so to a config that still sets it.
    #[serde(default)]
    pub agent_token: Option<String>,
}

/// Raft timing. A follower that stops hearing from the leader waits out the leader's
/// lease (openraft sets it to `election_timeout_max_ms`) and then its own randomized
/// election timeout before it campaigns, so a dead leader is replaced after roughly
/// `election_timeout_max_ms` + [`election_timeout_min_ms`, `election_timeout_max_ms`)
/// since its last heartbeat: 450-600 ms with the defaults (100 / 150-300 ms), which keeps
/// failover under 1 s. A follower also campaigns after that long without a heartbeat
/// from a live leader, so the timeouts must stay well above the longest stall a loaded
/// host can cause. The heartbeat interval is also openraft's deadline for every
/// AppendEntries call (three quarters of it), so it must stay above a loaded follower's
/// append time: at 50 ms, calls timed out and were resent even at one client.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "default_election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// How far a replica's wall clock may be from the cluster's time before it is
    /// called stepped: the leader then stamps from its monotonic clock and hands
    /// leadership to a peer whose clock agrees (`replication::cluster_clock`). Also the
    /// most a clock step can move any deadline, bill or timestamp.
    #[serde(default = "default_max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            election_timeout_min_ms: default_election_timeout_min_ms(),
            election_timeout_max_ms: default_election_timeout_max_ms(),
            max_clock_offset_ms: default_max_clock_offset_ms(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// The scheduler runs a round at least this often (and whenever work changes).
    #[serde(default = "default_scheduler_interval_ms")]
    pub scheduler_interval_ms: u64,
    /// The leader proposes a MeterTick this often.
    #[serde(default = "default_metering_interval_ms")]
    pub metering_interval_ms: u64,
    /// A node whose agent has heartbeated is lost after this long without one.
    #[serde(default = "default_node_grace_ms")]
    pub node_grace_ms: u64,
    /// The interval agents are told to heartbeat at (well inside the grace period).
    #[serde(default = "default_agent_heartbeat_interval_ms")]
    pub agent_heartbeat_interval_ms: u64,
    /// The driver-upgrade loop looks for nodes to isolate this often.
    #[serde(default = "default_upgrade_interval_ms")]
    pub upgrade_interval_ms: u64,
}

/// `[limits]`: how fast one tenant may submit jobs to one replica.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Jobs one tenant may submit per second (each spec of a SubmitJobs counts).
    #[serde(default = "default_submit_jobs_per_second")]
    pub submit_jobs_per_second: u32,
    /// Jobs one tenant may submit at once after being idle.
    #[serde(default = "default_submit_jobs_burst")]
    pub submit_jobs_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            submit_jobs_per_second: default_submit_jobs_per_second(),
            submit_jobs_burst: default_submit_jobs_burst(),
        }
    }
}

/// Near what a 3-replica cluster commits from all its clients together (BENCHMARKS.md:
/// about 6,000 jobs/s), so one tenant can use the cluster but not flood it for long.
fn default_submit_jobs_per_second() -> u32 {
    5_000
}
/// Twenty batches of SubmitJobs' 1,000 specs at once.
fn default_submit_jobs_burst() -> u32 {
    20_000
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            scheduler_interval_ms: default_scheduler_interval_ms(),
            metering_interval_ms: default_metering_interval_ms(),
            node_grace_ms: default_node_grace_ms(),
            agent_heartbeat_interval_ms: default_agent_heartbeat_interval_ms(),
            upgrade_interval_ms: default_upgrade_interval_ms(),
        }
    }
}

fn default_agent_heartbeat_interval_ms() -> u64 {
    1_000
}
fn default_upgrade_interval_ms() -> u64 {
    1_000
}

fn default_engine() -> Engine {
    Engine::Sled
}
fn default_snapshot_every_entries() -> u64 {
    10_000
}
fn default_logs_kept_after_snapshot() -> u64 {
    1_000
}
/// Room for a few snapshots of a large state and the log behind them.
fn default_min_free_disk_mib() -> u64 {
    256
}
fn default_heartbeat_interval_ms() -> u64 {
    100
}
fn default_election_timeout_min_ms() -> u64 {
    150
}
fn default_election_timeout_max_ms() -> u64 {
    300
}
/// CockroachDB's default maximum offset; NTP keeps healthy clocks within a few ms.
fn default_max_clock_offset_ms() -> u64 {
    500
}
fn default_scheduler_interval_ms() -> u64 {
    200
}
fn default_metering_interval_ms() -> u64 {
    10_000
}
fn default_node_grace_ms() -> u64 {
    10_000
}

/// A configuration problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "config field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn error(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

const MAX_CONFIG_BYTES: u64 = 1 << 20;
const MAX_MEMBERS: usize = 9;

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let metadata = std::fs::metadata(path)
            .map_err(|io| error("(file)", format!("{}: {io}", path.display())))?;
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(error("(file)", "larger than 1 MiB"));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|io| error("(file)", format!("{}: {io}", path.display())))?;
        let mut config = ServerConfig::parse(&text)?;
        // A relative data directory is relative to the config file, so a config works
        // wherever it is started from; so are the TLS files.
        if let Some(parent) = path.parent() {
            if config.data_dir.is_relative() {
                config.data_dir = parent.join(&config.data_dir);
            }
            config.tls.resolve_relative_to(parent);
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|parse| {
            let field = parse
                .span()
                .map(|span| text[span].chars().take(60).collect::<String>())
                .unwrap_or_default();
            error(
                if field.is_empty() { "(syntax)" } else { &field },
                parse.message().to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn advertise_address(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(error("id", "must be at least 1"));
        }
        self.listen.parse::<SocketAddr>().map_err(|_| {
            error(
                "listen",
                format!("'{}' is not host:port with an IP host", self.listen),
            )
        })?;
        if let Some(advertise) = &self.advertise {
            validate_address("advertise", advertise)?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(error("data_dir", "must not be empty"));
        }
        let members = &self.cluster.members;
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return Err(error(
                "cluster.members",
                format!("list 1..={MAX_MEMBERS} members"),
            ));
        }
        let ids: BTreeSet<u64> = members.iter().map(|member| member.id).collect();
        if ids.len() != members.len() {
            return Err(error("cluster.members", "an id is listed twice"));
        }
        if ids.contains(&0) {
            return Err(error("cluster.members.id", "must be at least 1"));
        }
        for member in members {
            validate_address("cluster.members.address", &member.address)?;
        }
        if self.cluster.secret.len() < 8 {
            return Err(error("cluster.secret", "must be at least 8 characters"));
        }
        if self
            .auth
            .admin_token
            .as_ref()
            .is_some_and(|token| token.len() < 16)
        {
            return Err(error("auth.admin_token", "must be at least 16 characters"));
        }
        if self
            .auth
            .bootstrap_token
            .as_ref()
            .is_some_and(|token| token.len() < 16)
        {
            return Err(error(
                "auth.bootstrap_token",
                "must be at least 16 characters",
            ));
        }
        if self.auth.agent_token.is_some() {
            return Err(error(
                "auth.agent_token",
                "was removed: a shared agent token spoke for every node. Agents now join \
                 with a node-bootstrap token (`corral token create NAME --role node-bootstrap`) \
                 and then use their node's own credential; delete this line",
            ));
        }
        if self.storage.snapshot_every_entries < 100 {
            return Err(error(
                "storage.snapshot_every_entries",
                "must be at least 100",
            ));
        }
        let raft = &self.raft;
        if raft.heartbeat_interval_ms == 0
            || raft.heartbeat_interval_ms >= raft.election_timeout_min_ms
        {
            return Err(error(
                "raft.heartbeat_interval_ms",
                "must be above 0 and below raft.election_timeout_min_ms",
            ));
        }
        if raft.election_timeout_min_ms >= raft.election_timeout_max_ms {
            return Err(error(
                "raft.election_timeout_max_ms",
                "must be above raft.election_timeout_min_ms",
            ));
        }
        if raft.max_clock_offset_ms == 0 || raft.max_clock_offset_ms > 3_600_000 {
            return Err(error(
                "raft.max_clock_offset_ms",
                "must be above 0 and at most 3600000 (an hour)",
            ));
        }
        if self.loops.scheduler_interval_ms == 0
            || self.loops.metering_interval_ms == 0
            || self.loops.node_grace_ms == 0
            || self.loops.upgrade_interval_ms == 0
        {
            return Err(error("loops", "intervals must be above 0"));
        }
        if self.loops.agent_heartbeat_interval_ms == 0
            || self.loops.agent_heartbeat_interval_ms * 2 > self.loops.node_grace_ms
        {
            return Err(error(
                "loops.agent_heartbeat_interval_ms",
                "must be above 0 and at most half of loops.node_grace_ms",
            ));
        }
        if self.limits.submit_jobs_per_second == 0 || self.limits.submit_jobs_burst == 0 {
            return Err(error(
                "limits",
                "submit_jobs_per_second and submit_jobs_burst must be at least 1",
            ));
        }
        self.tls
            .validate()
            .map_err(|tls| error(&tls.field, tls.reason))?;
        Ok(())
    }
}

fn validate_address(field: &str, address: &str) -> Result<(), ConfigError> {
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
    });
    if valid {
        Ok(())
    } else {
        Err(error(field, format!("'{address}' is not host:port")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
id = 1
listen = "127.0.0.1:7001"
data_dir = "data/manager-1"
[cluster]
secret = "cluster-secret"
members = [{ id = 1, address = "127.0.0.1:7001" }, { id = 2, address = "127.0.0.1:7002" }]
[tls]
ca_file = "tls/ca.pem"
cert_file = "tls/manager-1.pem"
key_file = "tls/manager-1-key.pem"
"#;

    #[test]
    fn a_valid_config_loads_with_defaults() {
        let config = ServerConfig::parse(VALID).unwrap();
        assert_eq!(config.id, 1);
        assert_eq!(config.storage.engine, Engine::Sled);
        assert_eq!(config.advertise_address(), "127.0.0.1:7001");
        assert!(!config.tls.insecure);
    }

    #[test]
    fn submission_limits_default_and_must_be_positive() {
        let config = ServerConfig::parse(VALID).unwrap();
        assert_eq!(config.limits.submit_jobs_per_second, 5_000);
        assert_eq!(config.limits.submit_jobs_burst, 20_000);
        let set =
            ServerConfig::parse(&format!("{VALID}[limits]\nsubmit_jobs_per_second = 5\n")).unwrap();
        assert_eq!(set.limits.submit_jobs_per_second, 5);
        let zero =
            ServerConfig::parse(&format!("{VALID}[limits]\nsubmit_jobs_burst = 0\n")).unwrap_err();
        assert_eq!(zero.field, "limits");
    }

    #[test]
    fn plaintext_must_be_asked_for() {
        let without_tls = VALID.split("[tls]").next().unwrap();
        let failure = ServerConfig::parse(without_tls).unwrap_err();
        assert_eq!(failure.field, "tls");
        assert!(
            failure.reason.contains("add a [tls] section") && failure.reason.contains("insecure"),
            "{failure}"
        );
        let insecure =
            ServerConfig::parse(&format!("{without_tls}[tls]\ninsecure = true\n")).unwrap();
        assert!(insecure.tls.insecure);
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("manager-1.toml");
        std::fs::write(&path, VALID).unwrap();
        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(
            config.tls.ca_file.unwrap(),
            directory.path().join("tls/ca.pem")
        );
    }

    #[test]
    fn the_shipped_configs_load() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        for name in [
            "dev.toml",
            "manager-1.toml",
            "manager-2.toml",
            "manager-3.toml",
        ] {
            let config = ServerConfig::load(&directory.join(name))
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(!config.tls.insecure, "{name} ships with TLS on");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (VALID.replace("id = 1\n", "id = 0\n"), "id"),
            (
                VALID.replace("127.0.0.1:7001\"\ndata", "nowhere\"\ndata"),
                "listen",
            ),
            (VALID.replace("cluster-secret", "short"), "cluster.secret"),
            (VALID.replace("{ id = 2,", "{ id = 1,"), "cluster.members"),
            (
                format!("{VALID}\n[storage]\nengine = \"floppy\"\n"),
                "floppy",
            ),
            (
                format!("{VALID}\n[raft]\nheartbeat_interval_ms = 900\n"),
                "raft.heartbeat_interval_ms",
            ),
            (format!("{VALID}\nunknown_field = 3\n"), "unknown_field"),
            (
                VALID.replace("key_file = \"tls/manager-1-key.pem\"\n", ""),
                "tls.key_file",
            ),
            (
                VALID.replace("[tls]\n", "[tls]\ninsecure = true\n"),
                "tls.insecure",
            ),
        ];
        for (text, field) in cases {
            let failure = ServerConfig::parse(&text).expect_err(field);
            assert!(
                failure.to_string().contains(field),
                "{failure} should name {field}"
            );
        }
    }
}

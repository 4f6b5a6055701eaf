//! The agent's configuration file (TOML): the managers it talks to and its credential,
//! the node it registers (name, flavor, zone, labels, drivers), where it keeps its
//! replicas and serves their logs, and its intervals and bounds. Loading validates every
//! field; a bad file is refused with the field's name and the reason.

use crate::wire::TlsConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest accepted configuration file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// At most this many manager addresses.
pub(crate) const MAX_MANAGERS: usize = 16;
/// At most this many labels.
pub(crate) const MAX_LABELS: usize = 64;
/// At most this many rotated log files kept per replica.
pub(crate) const MAX_LOG_FILES_KEPT: u32 = 32;
/// At most this many virtual nodes in one `--simulate` process.
pub(crate) const MAX_SIMULATED_NODES: u32 = 1024;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Manager replicas (`host:port`); any of them is asked first, the agent then
    /// follows the leader they name.
    pub managers: Vec<String>,
    /// A node-bootstrap token (`corral token create NAME --role node-bootstrap`): used
    /// to register the node, which gives it its own credential; the agent keeps that
    /// (and the key managers present to its `AgentLogs`) in a 0600 file under the
    /// node's work directory and needs the bootstrap token no more.
    #[serde(default)]
    pub bootstrap_token: Option<String>,
    /// As `bootstrap_token`, read from this file (keeps the secret out of the config
    /// and out of `ps`). A relative path is relative to the configuration file's
    /// directory.
    #[serde(default)]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The node's name (unique in the cluster; `--simulate N` appends `-1..N`).
    pub name: String,
    /// The flavor (hardware shape) the node registers as.
    pub flavor: String,
    #[serde(default)]
    pub zone: String,
    /// Where replicas run and the agent keeps its state. A relative path is relative to
    /// the configuration file's directory.
    pub work_dir: PathBuf,
    /// Where `AgentLogs` listens (`ip:port`); port 0 picks a free port.
    #[serde(default = "default_listen_address")]
    pub listen_address: String,
    /// The `host:port` managers use to reach `AgentLogs`; defaults to `listen_address`
    /// with the bound port. Required when `listen_address` binds every interface.
    #[serde(default)]
    pub advertise_address: Option<String>,
    /// Heartbeat period until a manager answers with another one.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Time between SIGTERM and SIGKILL when the agent ends a replica.
    #[serde(default = "default_termination_grace_ms")]
    pub termination_grace_ms: u64,
    /// A replica's `output.log` is rotated once it grows beyond this.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated logs kept per replica (`output.log.1` .. `output.log.N`).
    #[serde(default = "default_log_files_kept")]
    pub log_files_kept: u32,
    /// Accelerators are simulated: utilisation is 100 % per busy device.
    #[serde(default)]
    pub simulate_accelerators: bool,
    /// Accelerator devices on the node, for the utilisation figure (0: unknown, the
    /// highest device index in use plus one is assumed).
    #[serde(default)]
    pub accelerators: u32,
    /// Program and arguments run to upgrade drivers, with `CORRAL_TARGET_GPU_DRIVER` and
    /// `CORRAL_TARGET_NPU_DRIVER` in its environment. None: upgrades only record the
    /// versions.
    #[serde(default)]
    pub upgrade_hook: Option<Vec<String>>,
    /// Bound on one run of the upgrade hook.
    #[serde(default = "default_upgrade_timeout_ms")]
    pub upgrade_timeout_ms: u64,
    /// Runs of a failing upgrade hook before the agent gives up (the node then stays
    /// isolated and the pool's upgrade goes on without it).
    #[serde(default = "default_upgrade_attempts")]
    pub upgrade_attempts: u32,
    /// Pause after the first failed run, doubled after each next one (at most 10 min).
    #[serde(default = "default_upgrade_retry_backoff_ms")]
    pub upgrade_retry_backoff_ms: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub drivers: DriverVersions,
    /// TLS towards the managers (the agent's certificate is its client certificate) and
    /// on the log server (which takes only callers the CA signed), or `insecure = true`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// How replicas are isolated: "full" (a user per tenant, a cgroup per replica with
    /// its limits and devices; needs root and cgroups) or "none" (development only).
    #[serde(default)]
    pub isolation: IsolationMode,
    /// The uids (each with the gid of the same number) given to tenants on this
    /// machine, `[first, last]`: unprivileged and used by nothing else on it.
    #[serde(default = "default_tenant_uid_range")]
    pub tenant_uid_range: [u32; 2],
    /// The ports rank 0's agent gives a multi-replica job's rendezvous
    /// (`MASTER_PORT`), `[first, last]`; one checked free is chosen.
    #[serde(default = "default_master_port_range")]
    pub master_port_range: [u16; 2],
    /// The pids limit of every replica's cgroup (a fork bomb stops there).
    #[serde(default = "default_replica_pids_max")]
    pub replica_pids_max: u32,
    /// The device file of each accelerator, by index (`/dev/nvidia0`, `/dev/davinci0`):
    /// a replica may open only those of the accelerators allocated to it.
    #[serde(default)]
    pub accelerator_devices: Vec<PathBuf>,
}

/// How a node isolates its replicas.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// A user per tenant and a cgroup per replica (root and cgroups required).
    #[default]
    Full,
    /// Replicas run as the agent's user without limits: development only.
    None,
}

/// The lowest uid a tenant may get: below are the system's own users.
const MIN_TENANT_UID: u32 = 10_000;
/// At most this many uids in the range (a node never hosts more tenants at once).
const MAX_TENANT_UIDS: u32 = 1 << 20;

/// Installed driver versions ("" when the node has none of that kind).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DriverVersions {
    #[serde(default)]
    pub gpu_driver_version: String,
    #[serde(default)]
    pub npu_driver_version: String,
}

fn default_listen_address() -> String {
    "127.0.0.1:0".to_string()
}
fn default_heartbeat_interval_ms() -> u64 {
    1_000
}
fn default_termination_grace_ms() -> u64 {
    10_000
}
fn default_log_max_bytes() -> u64 {
    8 << 20
}
fn default_log_files_kept() -> u32 {
    3
}
fn default_upgrade_timeout_ms() -> u64 {
    600_000
}
fn default_upgrade_attempts() -> u32 {
    3
}
fn default_upgrade_retry_backoff_ms() -> u64 {
    30_000
}
fn default_tenant_uid_range() -> [u32; 2] {
    [200_000, 265_535]
}
fn default_master_port_range() -> [u16; 2] {
    [29_500, 30_499]
}
fn default_replica_pids_max() -> u32 {
    4_096
}

impl AgentConfig {
    /// A config with these required fields and every other field at the default a
    /// config file that leaves it out gets, for a program that builds one in code
    /// (`corral dev`); `validate` it like a loaded one.
    pub fn new(
        managers: Vec<String>,
        bootstrap_token: Option<String>,
        name: String,
        flavor: String,
        work_dir: PathBuf,
    ) -> AgentConfig {
        AgentConfig {
            managers,
            bootstrap_token,
            bootstrap_token_file: None,
            name,
            flavor,
            zone: String::new(),
            work_dir,
            listen_address: default_listen_address(),
            advertise_address: None,
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            termination_grace_ms: default_termination_grace_ms(),
            log_max_bytes: default_log_max_bytes(),
            log_files_kept: default_log_files_kept(),
            simulate_accelerators: false,
            accelerators: 0,
            upgrade_hook: None,
            upgrade_timeout_ms: default_upgrade_timeout_ms(),
            upgrade_attempts: default_upgrade_attempts(),
            upgrade_retry_backoff_ms: default_upgrade_retry_backoff_ms(),
            labels: BTreeMap::new(),
            drivers: DriverVersions::default(),
            // Neither files nor plaintext: `validate` asks for one of them.
            tls: TlsConfig::default(),
            isolation: IsolationMode::Full,
            tenant_uid_range: default_tenant_uid_range(),
            replica_pids_max: default_replica_pids_max(),
            master_port_range: default_master_port_range(),
            accelerator_devices: Vec::new(),
        }
    }
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

fn validate_token(field: &str, token: &str) -> Result<(), ConfigError> {
    if token.len() < 16 {
        return Err(error(field, "must be at least 16 characters"));
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(error(field, "must be printable ASCII without spaces"));
    }
    Ok(())
}

impl AgentConfig {
    /// The bootstrap token, from the config or its file (trimmed); None when neither is
    /// set (the nodes must then have their credentials already).
    pub fn bootstrap_secret(&self) -> Result<Option<String>, ConfigError> {
        if let Some(token) = &self.bootstrap_token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.bootstrap_token_file else {
            return Ok(None);
        };
        let bytes = crate::files::read_small(path)
            .map_err(|io| error("bootstrap_token_file", format!("{}: {io}", path.display())))?;
        let token = String::from_utf8_lossy(&bytes).trim().to_string();
        validate_token("bootstrap_token_file", &token)?;
        Ok(Some(token))
    }

    /// Reads, parses and validates a configuration file; a relative `work_dir` is made
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let metadata = std::fs::metadata(path)
            .map_err(|io| error("(file)", format!("{}: {io}", path.display())))?;
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(error("(file)", "larger than 1 MiB"));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|io| error("(file)", format!("{}: {io}", path.display())))?;
        let mut config = AgentConfig::parse(&text)?;
        if let Some(parent) = path.parent() {
            if config.work_dir.is_relative() {
                config.work_dir = parent.join(&config.work_dir);
            }
            if let Some(file) = config.bootstrap_token_file.as_mut() {
                if file.is_relative() {
                    *file = parent.join(&*file);
                }
            }
            config.tls.resolve_relative_to(parent);
        }
        Ok(config)
    }

    /// Parses and validates configuration text (`work_dir` is taken as written).
    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|parse| {
            let field = parse
                .span()
                .and_then(|span| text.get(span))
                .map(|field| field.chars().take(60).collect::<String>())
                .unwrap_or_default();
            error(
                if field.is_empty() { "(syntax)" } else { &field },
                parse.message().to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.managers.is_empty() {
            return Err(error("managers", "must list at least one address"));
        }
        if self.managers.len() > MAX_MANAGERS {
            return Err(error(
                "managers",
                format!("must list at most {MAX_MANAGERS} addresses"),
            ));
        }
        self.tls
            .validate()
            .map_err(|tls| error(&tls.field, tls.reason))?;
        for manager in &self.managers {
            validate_host_port("managers", strip_scheme(manager))?;
            validate_scheme(manager, self.tls.insecure)?;
        }
        if self.bootstrap_token.is_some() && self.bootstrap_token_file.is_some() {
            return Err(error(
                "bootstrap_token",
                "set bootstrap_token or bootstrap_token_file, not both",
            ));
        }
        if let Some(token) = &self.bootstrap_token {
            validate_token("bootstrap_token", token)?;
        }
        validate_name("name", &self.name)?;
        if self.flavor.trim().is_empty() || self.flavor.len() > 128 {
            return Err(error("flavor", "must be 1..=128 characters"));
        }
        if self.zone.len() > 128 {
            return Err(error("zone", "must be at most 128 characters"));
        }
        if self.work_dir.as_os_str().is_empty() {
            return Err(error("work_dir", "must not be empty"));
        }
        let listen: SocketAddr = self.listen_address.parse().map_err(|_| {
            error(
                "listen_address",
                format!("'{}' is not ip:port", self.listen_address),
            )
        })?;
        match &self.advertise_address {
            Some(advertise) => validate_host_port("advertise_address", advertise)?,
            None if listen.ip().is_unspecified() => {
                return Err(error(
                    "advertise_address",
                    "required when listen_address binds every interface",
                ))
            }
            None => {}
        }
        if !(10..=60_000).contains(&self.heartbeat_interval_ms) {
            return Err(error(
                "heartbeat_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if self.termination_grace_ms > 3_600_000 {
            return Err(error(
                "termination_grace_ms",
                "must be at most 3600000 (one hour)",
            ));
        }
        if self.log_max_bytes < 4096 {
            return Err(error("log_max_bytes", "must be at least 4096"));
        }
        if self.log_files_kept > MAX_LOG_FILES_KEPT {
            return Err(error(
                "log_files_kept",
                format!("must be at most {MAX_LOG_FILES_KEPT}"),
            ));
        }
        if self.accelerators > 1024 {
            return Err(error("accelerators", "must be at most 1024"));
        }
        if let Some(hook) = &self.upgrade_hook {
            if hook.first().is_none_or(|program| program.trim().is_empty()) {
                return Err(error(
                    "upgrade_hook",
                    "must name a program (or be left out)",
                ));
            }
        }
        if self.upgrade_timeout_ms == 0 {
            return Err(error("upgrade_timeout_ms", "must be above 0"));
        }
        if !(1..=100).contains(&self.upgrade_attempts) {
            return Err(error("upgrade_attempts", "must be between 1 and 100"));
        }
        if self.upgrade_retry_backoff_ms > 600_000 {
            return Err(error("upgrade_retry_backoff_ms", "must be at most 600000"));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(error(
                "labels",
                format!("must have at most {MAX_LABELS} entries"),
            ));
        }
        for (key, value) in &self.labels {
            if key.is_empty() || key.len() > 63 || value.len() > 63 {
                return Err(error(
                    "labels",
                    format!("'{key}': keys must be 1..=63 characters, values at most 63"),
                ));
            }
        }
        let [first_uid, last_uid] = self.tenant_uid_range;
        if first_uid < MIN_TENANT_UID || last_uid < first_uid || last_uid >= u32::MAX - 1 {
            return Err(error(
                "tenant_uid_range",
                format!(
                    "must be [first, last] with {MIN_TENANT_UID} <= first <= last < 4294967294"
                ),
            ));
        }
        if last_uid - first_uid >= MAX_TENANT_UIDS {
            return Err(error(
                "tenant_uid_range",
                format!("must hold at most {MAX_TENANT_UIDS} uids"),
            ));
        }
        let [first_port, last_port] = self.master_port_range;
        if first_port < 1024 || last_port < first_port {
            return Err(error(
                "master_port_range",
                "must be [first, last] with 1024 <= first <= last",
            ));
        }
        if !(16..=1 << 22).contains(&self.replica_pids_max) {
            return Err(error("replica_pids_max", "must be between 16 and 4194304"));
        }
        if self.accelerator_devices.len() > 64 {
            return Err(error("accelerator_devices", "must list at most 64 devices"));
        }
        if let Some(path) = self
            .accelerator_devices
            .iter()
            .find(|path| !path.is_absolute())
        {
            return Err(error(
                "accelerator_devices",
                format!("'{}' must be an absolute path", path.display()),
            ));
        }
        for (field, version) in [
            (
                "drivers.gpu_driver_version",
                &self.drivers.gpu_driver_version,
            ),
            (
                "drivers.npu_driver_version",
                &self.drivers.npu_driver_version,
            ),
        ] {
            if version.len() > 64 {
                return Err(error(field, "must be at most 64 characters"));
            }
        }
        Ok(())
    }

    /// The node names this process runs: `name`, or `name-1..N` with `--simulate N`.
    pub(crate) fn node_names(&self, simulate: Option<u32>) -> Result<Vec<String>, ConfigError> {
        match simulate {
            None => Ok(vec![self.name.clone()]),
            Some(count) if count == 0 || count > MAX_SIMULATED_NODES => Err(error(
                "--simulate",
                format!("must be 1..={MAX_SIMULATED_NODES}"),
            )),
            Some(count) => Ok((1..=count)
                .map(|index| format!("{}-{index}", self.name))
                .collect()),
        }
    }
}

fn strip_scheme(address: &str) -> &str {
    let address = address.trim();
    address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address)
        .trim_end_matches('/')
}

/// A scheme must agree with `[tls]`: `http://` under TLS would send the token in
/// plaintext, `https://` without TLS files cannot check the manager.
fn validate_scheme(manager: &str, insecure: bool) -> Result<(), ConfigError> {
    let manager = manager.trim();
    if !insecure && manager.starts_with("http://") {
        return Err(error(
            "managers",
            format!(
                "'{manager}' is plaintext but [tls] is configured; write host:port or https://"
            ),
        ));
    }
    if insecure && manager.starts_with("https://") {
        return Err(error(
            "managers",
            format!("'{manager}' asks for TLS but [tls] says insecure; give tls files instead"),
        ));
    }
    Ok(())
}

fn validate_host_port(field: &str, address: &str) -> Result<(), ConfigError> {
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
    });
    if valid {
        Ok(())
    } else {
        Err(error(field, format!("'{address}' is not host:port")))
    }
}

fn validate_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 58
        && name.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.'
        })
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(error(
            field,
            format!(
                "'{name}' must be 1..=58 letters, digits, '-', '_' or '.', not starting with '.'"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
managers = ["127.0.0.1:7001", "http://127.0.0.1:7002"]
bootstrap_token = "agent-token-0123456789"
name = "node-1"
flavor = "gpu-8x-a100"
work_dir = "data/node-1"
tls = { insecure = true }
"#;

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = AgentConfig::parse(VALID).unwrap();
        assert_eq!(config.listen_address, "127.0.0.1:0");
        assert_eq!(config.heartbeat_interval_ms, 1_000);
        assert_eq!(config.termination_grace_ms, 10_000);
        assert_eq!(config.log_max_bytes, 8 << 20);
        assert_eq!(config.log_files_kept, 3);
        assert_eq!(config.upgrade_hook, None);
        assert!(!config.simulate_accelerators);
    }

    #[test]
    fn the_shipped_config_loads_with_its_work_dir_beside_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent.toml");
        let config = AgentConfig::load(&path).unwrap();
        assert_eq!(config.name, "node-1");
        assert_eq!(config.managers.len(), 3);
        assert!(config.work_dir.starts_with(path.parent().unwrap()));
        assert!(config.upgrade_hook.is_some());
    }

    fn refused(text: &str) -> ConfigError {
        AgentConfig::parse(text).unwrap_err()
    }

    #[test]
    fn bad_fields_are_named_with_the_reason() {
        let error = refused(&VALID.replace(
            r#"managers = ["127.0.0.1:7001", "http://127.0.0.1:7002"]"#,
            "managers = []",
        ));
        assert_eq!(error.field, "managers");
        assert_eq!(
            error.to_string(),
            "config field `managers`: must list at least one address"
        );
        assert_eq!(
            refused(&VALID.replace("127.0.0.1:7001", "nohost")).field,
            "managers"
        );
        assert_eq!(
            refused(&VALID.replace("agent-token-0123456789", "short")).field,
            "bootstrap_token"
        );
        assert_eq!(refused(&VALID.replace("node-1", "bad name")).field, "name");
        assert_eq!(
            refused(&format!("{VALID}listen_address = \"0.0.0.0:0\"\n")).field,
            "advertise_address"
        );
        assert_eq!(
            refused(&format!("{VALID}listen_address = \"localhost\"\n")).field,
            "listen_address"
        );
        assert_eq!(
            refused(&format!("{VALID}heartbeat_interval_ms = 0\n")).field,
            "heartbeat_interval_ms"
        );
        assert_eq!(
            refused(&format!("{VALID}log_max_bytes = 10\n")).field,
            "log_max_bytes"
        );
        assert_eq!(
            refused(&format!("{VALID}upgrade_hook = []\n")).field,
            "upgrade_hook"
        );
        let unknown = refused(&format!("{VALID}colour = \"blue\"\n"));
        assert!(unknown.reason.contains("unknown field"), "{unknown}");
        assert!(
            AgentConfig::parse(&format!(
                "{VALID}listen_address = \"0.0.0.0:9000\"\nadvertise_address = \"node-1.example:9000\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn tls_must_be_configured_or_refused_explicitly() {
        let without = VALID.replace("tls = { insecure = true }\n", "");
        let error = refused(&without);
        assert_eq!(error.field, "tls");
        assert!(error.reason.contains("insecure = true"), "{error}");
        let with_files = without.replace(
            "managers = [\"127.0.0.1:7001\", \"http://127.0.0.1:7002\"]",
            "managers = [\"127.0.0.1:7001\", \"https://127.0.0.1:7002\"]",
        )
            + "tls = { ca_file = \"ca.pem\", cert_file = \"n.pem\", key_file = \"n-key.pem\" }\n";
        assert!(AgentConfig::parse(&with_files).is_ok());
        let plaintext_manager = with_files.replace("https://", "http://");
        assert_eq!(refused(&plaintext_manager).field, "managers");
        let tls_manager = VALID.replace("http://", "https://");
        assert_eq!(refused(&tls_manager).field, "managers");
        let partial = without + "tls = { ca_file = \"ca.pem\" }\n";
        assert_eq!(refused(&partial).field, "tls.cert_file");
    }

    #[test]
    fn simulated_nodes_are_numbered_from_one() {
        let config = AgentConfig::parse(VALID).unwrap();
        assert_eq!(config.node_names(None).unwrap(), vec!["node-1"]);
        assert_eq!(
            config.node_names(Some(2)).unwrap(),
            vec!["node-1-1", "node-1-2"]
        );
        assert_eq!(config.node_names(Some(0)).unwrap_err().field, "--simulate");
    }
}

//! Black-box harness for node agents: real `corral agent` processes on loopback, each
//! with its own config and work directory, killed with SIGKILL or stopped with SIGTERM
//! and started again.

use super::{corral_binary, AGENT_TOKEN};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct AgentProcess {
    pub name: String,
    pub config_path: PathBuf,
    pub work_dir: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
    /// `--simulate N`: one process running N virtual nodes named `<name>-1`..
    pub simulate: Option<u32>,
}

pub struct Agents {
    pub agents: Vec<AgentProcess>,
}

/// What every test agent shares.
pub struct AgentSettings<'a> {
    pub managers: &'a [String],
    pub flavor: &'a str,
    pub zone: &'a str,
    pub gpu_driver_version: &'a str,
    pub heartbeat_interval_ms: u64,
    pub termination_grace_ms: u64,
}

fn config_text(settings: &AgentSettings<'_>, name: &str, work_dir: &std::path::Path) -> String {
    let managers: Vec<String> = settings
        .managers
        .iter()
        .map(|address| format!("\"{address}\""))
        .collect();
    format!(
        r#"managers = [{}]
bootstrap_token = "{AGENT_TOKEN}"
name = "{name}"
flavor = "{}"
zone = "{}"
work_dir = "{}"
listen_address = "127.0.0.1:0"
heartbeat_interval_ms = {}
termination_grace_ms = {}
simulate_accelerators = true
accelerators = 2
upgrade_hook = ["sh", "-c", "if [ -f fail-upgrades ]; then echo broken driver package; exit 3; fi; echo upgraded to $CORRAL_TARGET_GPU_DRIVER >> upgrades.log"]
upgrade_attempts = 2
upgrade_retry_backoff_ms = 200

[drivers]
gpu_driver_version = "{}"

{}"#,
        managers.join(", "),
        settings.flavor,
        settings.zone,
        work_dir.display(),
        settings.heartbeat_interval_ms,
        settings.termination_grace_ms,
        settings.gpu_driver_version,
        super::tls::pki().config_section(),
    )
}

impl Agents {
    /// Write configs for `count` agents named `node-1`.. under `directory` and start them.
    pub fn start(
        directory: &std::path::Path,
        count: usize,
        settings: &AgentSettings<'_>,
    ) -> Agents {
        let mut agents = Agents { agents: Vec::new() };
        for index in 1..=count {
            let name = format!("node-{index}");
            let work_dir = directory.join(format!("agent-{name}"));
            std::fs::create_dir_all(&work_dir).expect("agent work dir");
            let config_path = directory.join(format!("agent-{name}.toml"));
            std::fs::write(&config_path, config_text(settings, &name, &work_dir))
                .expect("write agent config");
            agents.agents.push(AgentProcess {
                log_path: directory.join(format!("agent-{name}.log")),
                name,
                config_path,
                work_dir,
                child: None,
                simulate: None,
            });
        }
        for index in 0..count {
            agents.spawn(index);
        }
        agents
    }

    /// Start one more agent process, named `name`, simulating `nodes` nodes
    /// (`--simulate`); returns its index.
    pub fn add_simulated(
        &mut self,
        directory: &std::path::Path,
        name: &str,
        nodes: u32,
        settings: &AgentSettings<'_>,
    ) -> usize {
        let work_dir = directory.join(format!("agent-{name}"));
        std::fs::create_dir_all(&work_dir).expect("agent work dir");
        let config_path = directory.join(format!("agent-{name}.toml"));
        std::fs::write(&config_path, config_text(settings, name, &work_dir))
            .expect("write agent config");
        self.agents.push(AgentProcess {
            log_path: directory.join(format!("agent-{name}.log")),
            name: name.to_string(),
            config_path,
            work_dir,
            child: None,
            simulate: Some(nodes),
        });
        let index = self.agents.len() - 1;
        self.spawn(index);
        index
    }

    pub fn spawn(&mut self, index: usize) {
        let agent = &mut self.agents[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&agent.log_path)
            .expect("agent log");
        let mut command = Command::new(corral_binary());
        command.arg("agent").arg("--config").arg(&agent.config_path);
        if let Some(nodes) = agent.simulate {
            command.arg("--simulate").arg(nodes.to_string());
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start corral agent");
        agent.child = Some(child);
    }

    /// SIGKILL an agent; its replica processes keep running (they are in their own
    /// sessions), as after a crash.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.agents[index].child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.agents
            .iter()
            .position(|agent| agent.name == name)
            .expect("agent name")
    }

    pub fn log_of(&self, index: usize) -> String {
        std::fs::read_to_string(&self.agents[index].log_path).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (0..self.agents.len())
            .map(|index| {
                let log = self.log_of(index);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    self.agents[index].name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for index in 0..self.agents.len() {
            self.kill(index);
        }
        // Replica processes outlive their agent by design; end the ones of this test.
        for agent in &self.agents {
            kill_processes_under(&agent.work_dir);
        }
    }
}

/// SIGKILL every process whose working directory is inside `directory`.
pub fn kill_processes_under(directory: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(directory) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

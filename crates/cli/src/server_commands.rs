//! `corral server` and `corral dev`: thin calls into `corral_server`; `corral agent`
//! and the hidden `corral agent-shim`: thin calls into `corral_agent`.

use crate::cli::AgentShimArgs;
use crate::dev::DevOptions;
use crate::exit::CliError;
use corral_agent::{AgentConfig, AgentError};
use corral_server::ServerConfig;
use std::path::{Path, PathBuf};

/// What `corral dev` was asked for; what is not given takes `DevOptions::default()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevRequest {
    /// Admin port of the first replica.
    pub port: Option<u16>,
    /// Data directory (None: a temporary one).
    pub data_dir: Option<PathBuf>,
    /// 1 or 3 replicas.
    pub replicas: Option<u8>,
}

impl DevRequest {
    pub fn options(self) -> DevOptions {
        let defaults = DevOptions::default();
        DevOptions {
            port: self.port.unwrap_or(defaults.port),
            data_dir: self.data_dir.or(defaults.data_dir),
            replicas: self.replicas.unwrap_or(defaults.replicas),
            ..defaults
        }
    }
}

/// Runs one manager replica from `config` until SIGINT/SIGTERM. A config that does not
/// load is a usage error.
pub async fn run_server(config: &Path) -> Result<(), CliError> {
    let loaded = ServerConfig::load(config)
        .map_err(|error| CliError::usage(format!("{}: {error}", config.display())))?;
    corral_server::run(loaded)
        .await
        .map_err(|error| CliError::failed(error.to_string()))
}

/// Runs the whole system in one process until SIGINT/SIGTERM.
pub async fn run_dev(request: DevRequest) -> Result<(), CliError> {
    crate::dev::run_dev(request.options()).await
}

/// Runs a node agent (or `simulate` virtual nodes) from `config` until SIGINT/SIGTERM.
/// A config that does not load is a usage error. The replicas keep running afterwards.
pub async fn run_agent(config: &Path, simulate: Option<u32>) -> Result<(), CliError> {
    let loaded = AgentConfig::load(config)
        .map_err(|error| CliError::usage(format!("{}: {error}", config.display())))?;
    corral_agent::run(loaded, simulate, corral_server::wait_for_termination())
        .await
        .map_err(|error| match error {
            AgentError::Config(error) => CliError::usage(format!("{}: {error}", config.display())),
            error => CliError::failed(error.to_string()),
        })
}

/// Runs the replica shim to the workload's end; returns its exit code. Called before
/// any async runtime starts (the shim waits for signals on the only thread).
pub fn run_agent_shim(args: AgentShimArgs) -> i32 {
    match corral_agent::shim::parse_args(args.args) {
        Ok(options) => corral_agent::shim::run(&options),
        Err(error) => {
            eprintln!("corral agent-shim: {error}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn the_agent_and_its_hidden_shim_parse() {
        let cli = Cli::try_parse_from(["corral", "agent", "--config", "a.toml", "--simulate", "3"])
            .unwrap();
        match cli.command {
            Command::Agent(args) => {
                assert_eq!((args.config, args.simulate), ("a.toml".into(), Some(3)))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["corral", "agent", "--config", "a", "--simulate", "0"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "corral",
            "agent-shim",
            "--exit-file",
            "e",
            "--log-file",
            "l",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        match cli.command {
            Command::AgentShim(args) => {
                let options = corral_agent::shim::parse_args(args.args).unwrap();
                assert_eq!(options.command, ["sh", "-c", "exit 3"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["corral", "agent-shim"]).is_err());
    }

    #[tokio::test]
    async fn an_agent_config_that_does_not_load_is_a_usage_error() {
        let error = run_agent(Path::new("/nonexistent/agent.toml"), None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn dev_flags_override_the_server_defaults() {
        let defaults = DevOptions::default();
        let options = DevRequest::default().options();
        assert_eq!(
            (options.port, options.replicas),
            (defaults.port, defaults.replicas)
        );
        let options = DevRequest {
            port: Some(9000),
            data_dir: Some("/tmp/x".into()),
            replicas: Some(1),
        }
        .options();
        assert_eq!(
            (options.port, options.data_dir, options.replicas),
            (9000, Some("/tmp/x".into()), 1)
        );
    }
}

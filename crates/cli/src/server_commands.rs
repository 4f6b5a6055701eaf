//! `corral server` and `corral dev`: thin calls into `corral_server`.

use crate::exit::CliError;
use corral_server::config::ServerConfig;
use corral_server::dev::{run_dev as run_dev_cluster, DevOptions};
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
    run_dev_cluster(request.options())
        .await
        .map_err(|error| CliError::failed(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

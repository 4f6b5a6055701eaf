//! Errors that stop a replica from starting or running.

use std::fmt;

#[derive(Debug)]
pub enum ServerError {
    Config(crate::config::ConfigError),
    Io(std::io::Error),
    Raft(String),
    Transport(String),
    /// The replica's storage failed under it (a write or fsync of its log, vote or
    /// snapshot); it stopped so its supervisor restarts it from what is on disk.
    Storage(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Config(error) => write!(formatter, "{error}"),
            ServerError::Io(error) => write!(formatter, "io: {error}"),
            ServerError::Raft(error) => write!(formatter, "raft: {error}"),
            ServerError::Transport(error) => write!(formatter, "transport: {error}"),
            ServerError::Storage(error) => write!(
                formatter,
                "storage failed, stopping so a supervisor restarts this replica from \
                 what is durable on disk: {error}"
            ),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(error: std::io::Error) -> Self {
        ServerError::Io(error)
    }
}

impl From<crate::config::ConfigError> for ServerError {
    fn from(error: crate::config::ConfigError) -> Self {
        ServerError::Config(error)
    }
}

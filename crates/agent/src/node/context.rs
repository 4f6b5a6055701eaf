//! What one node takes from the agent process that runs it.

use crate::config::AgentConfig;
use crate::dirs::NodeDirs;
use crate::environment::AgentEnvironment;
use crate::logs::NodeRegistry;
use crate::managers::link::ManagerPool;
use std::sync::Arc;

/// Everything a node needs from the agent process.
#[derive(Clone, Debug)]
pub(crate) struct NodeContext {
    pub(crate) name: String,
    pub(crate) dirs: NodeDirs,
    pub(crate) config: Arc<AgentConfig>,
    /// Processes, clock, measured use, upgrade hook, blocking work, jitter.
    pub(crate) environment: AgentEnvironment,
    pub(crate) pool: Arc<ManagerPool>,
    /// Position among the process's nodes (spreads first managers and heartbeat phases).
    pub(crate) index: usize,
    pub(crate) node_count: usize,
    /// Where this agent serves `AgentLogs`.
    pub(crate) agent_address: String,
    pub(crate) registry: NodeRegistry,
    /// The configured node-bootstrap token, for a node without its own credential.
    pub(crate) bootstrap_token: Option<String>,
}

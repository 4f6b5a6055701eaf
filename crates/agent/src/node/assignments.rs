//! The assignments the managers send a node: bounds on what it will run, and the
//! latest accepted message (newer than the last, for this node) as its desired state.

use super::Node;
use crate::reconcile::ReplicaKey;
use crate::wire::pb;
use std::collections::BTreeSet;
use tracing::{debug, info, warn};

/// Assignments of one `NodeAssignments` message looked at, at most.
const MAX_ASSIGNMENTS: usize = 1024;
/// Argument and environment bounds of one assignment (larger ones are refused).
const MAX_COMMAND_ARGS: usize = 1024;
const MAX_ENVIRONMENT_VARIABLES: usize = 1024;
const MAX_ASSIGNMENT_TEXT_BYTES: usize = 1 << 20;

/// What the managers last asked of the node.
#[derive(Debug, Default)]
pub(super) struct Assigned {
    /// The latest assignments (None until the first message of this agent run).
    pub(super) replicas: Option<Vec<pb::ReplicaAssignment>>,
    /// The index of the latest message; older ones are ignored.
    pub(super) applied_index: u64,
    /// The node's status as the managers see it.
    pub(super) status: String,
}

impl Assigned {
    /// The assignment of `key`, when listed.
    pub(super) fn get(&self, key: ReplicaKey) -> Option<&pb::ReplicaAssignment> {
        self.replicas
            .as_ref()?
            .iter()
            .find(|assignment| key_of(assignment) == key)
    }
}

impl Node {
    pub(super) fn on_assignments(&mut self, message: pb::NodeAssignments) {
        if message.node != self.node_id {
            warn!(
                "{}: ignoring assignments for node {} (this is node {})",
                self.name(),
                message.node,
                self.node_id
            );
            return;
        }
        if message.applied_index < self.assigned.applied_index {
            debug!(
                "{}: ignoring assignments at index {} older than {}",
                self.name(),
                message.applied_index,
                self.assigned.applied_index
            );
            return;
        }
        self.assigned.applied_index = message.applied_index;
        if message.status != self.assigned.status {
            info!(
                "{}: the managers see this node as {}",
                self.name(),
                message.status
            );
            self.assigned.status = message.status.clone();
        }
        let mut seen = BTreeSet::new();
        let mut desired = Vec::new();
        for assignment in message.replicas.into_iter().take(MAX_ASSIGNMENTS) {
            if let Err(problem) = check_assignment(&assignment) {
                warn!(
                    "{}: ignoring assignment of job {} rank {}: {problem}",
                    self.name(),
                    assignment.job,
                    assignment.rank
                );
                continue;
            }
            if seen.insert(key_of(&assignment)) {
                desired.push(assignment);
            }
        }
        self.assigned.replicas = Some(desired);
        self.consider_upgrade(message.upgrade.as_ref());
        self.reconcile_due = true;
    }
}

pub(super) fn key_of(assignment: &pb::ReplicaAssignment) -> ReplicaKey {
    ReplicaKey {
        job: assignment.job,
        rank: assignment.rank,
        generation: assignment.generation,
    }
}

/// Bounds on what the agent will run from one assignment.
fn check_assignment(assignment: &pb::ReplicaAssignment) -> Result<(), String> {
    if assignment.command.len() > MAX_COMMAND_ARGS {
        return Err(format!("more than {MAX_COMMAND_ARGS} arguments"));
    }
    if assignment.environment.len() > MAX_ENVIRONMENT_VARIABLES {
        return Err(format!("more than {MAX_ENVIRONMENT_VARIABLES} variables"));
    }
    let text_bytes: usize = assignment.command.iter().map(String::len).sum::<usize>()
        + assignment
            .environment
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    if text_bytes > MAX_ASSIGNMENT_TEXT_BYTES {
        return Err("command and environment exceed 1 MiB".to_string());
    }
    let bad_text = assignment
        .command
        .iter()
        .chain(assignment.environment.values())
        .any(|text| text.contains('\0'))
        || assignment
            .environment
            .keys()
            .any(|name| name.is_empty() || name.contains('=') || name.contains('\0'));
    if bad_text {
        return Err("NUL bytes or bad variable names".to_string());
    }
    if !assignment.stop && assignment.command.first().is_none_or(String::is_empty) {
        return Err("empty command".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_beyond_the_bounds_are_refused() {
        let fine = pb::ReplicaAssignment {
            command: vec!["sh".into(), "-c".into(), "true".into()],
            ..Default::default()
        };
        assert!(check_assignment(&fine).is_ok());
        assert!(check_assignment(&pb::ReplicaAssignment {
            command: vec![],
            ..fine.clone()
        })
        .is_err());
        assert!(check_assignment(&pb::ReplicaAssignment {
            command: vec!["a\0b".into()],
            ..fine.clone()
        })
        .is_err());
        let mut bad_env = fine.clone();
        bad_env.environment.insert("A=B".into(), "x".into());
        assert!(check_assignment(&bad_env).is_err());
        assert!(check_assignment(&pb::ReplicaAssignment {
            command: vec!["x".repeat(MAX_ASSIGNMENT_TEXT_BYTES + 1)],
            ..fine
        })
        .is_err());
    }
}

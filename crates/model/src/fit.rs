//! The fit function: can one replica of a job go on a node? The scheduler uses it to
//! build a plan and the state machine uses it again to re-check the plan where it is
//! applied (Nomad's plan applier). There is exactly one copy of this logic.

use crate::job::JobSpec;
use crate::node::{Node, NodeStatus, TaintEffect};
use crate::resources::Resources;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitFailure {
    /// The node is not in the job's pool.
    WrongPool,
    /// The node is not Available.
    NotAvailable,
    /// Cordoned or draining.
    Unschedulable,
    /// A hot standby takes work only once it replaces a lost node.
    Standby,
    /// The node's accelerators are not the type the job asks for.
    AcceleratorType,
    /// A node-selector label does not match.
    Labels,
    /// A NoSchedule or NoExecute taint is not tolerated.
    Taint,
    /// Not enough free capacity on this dimension.
    Capacity(&'static str),
}

impl fmt::Display for FitFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitFailure::WrongPool => write!(formatter, "node is not in the job's pool"),
            FitFailure::NotAvailable => write!(formatter, "node is not available"),
            FitFailure::Unschedulable => write!(formatter, "node is cordoned or draining"),
            FitFailure::Standby => write!(formatter, "node is a standby"),
            FitFailure::AcceleratorType => write!(formatter, "node has another accelerator type"),
            FitFailure::Labels => write!(formatter, "node labels do not match the node selector"),
            FitFailure::Taint => write!(formatter, "node has a taint the job does not tolerate"),
            FitFailure::Capacity(dimension) => write!(formatter, "not enough free {dimension}"),
        }
    }
}

/// Everything but capacity: facts about the node that do not change as replicas are
/// placed within one round, so the scheduler can evaluate them once per node and job.
pub fn static_fit(node: &Node, spec: &JobSpec) -> Result<(), FitFailure> {
    if node.pool != Some(spec.pool) {
        return Err(FitFailure::WrongPool);
    }
    if node.status != NodeStatus::Available {
        return Err(FitFailure::NotAvailable);
    }
    if !node.schedulable {
        return Err(FitFailure::Unschedulable);
    }
    if node.standby {
        return Err(FitFailure::Standby);
    }
    if spec.per_replica.accelerators > 0
        && spec.accelerator_type.is_some()
        && node.accelerator_type != spec.accelerator_type
    {
        return Err(FitFailure::AcceleratorType);
    }
    let labels_match = spec
        .node_selector
        .iter()
        .all(|(key, value)| node.labels.get(key) == Some(value));
    if !labels_match {
        return Err(FitFailure::Labels);
    }
    let blocked_by_taint = node.taints.iter().any(|taint| {
        taint.effect != TaintEffect::PreferNoSchedule
            && !spec
                .tolerations
                .iter()
                .any(|toleration| toleration.tolerates(taint))
    });
    if blocked_by_taint {
        return Err(FitFailure::Taint);
    }
    Ok(())
}

/// Whether one replica's request fits in `free`.
pub fn capacity_fit(free: &Resources, spec: &JobSpec) -> Result<(), FitFailure> {
    if crate::fault_injection::skip_capacity_checks() {
        return Ok(());
    }
    match spec.per_replica.first_exceeding(free) {
        Some(dimension) => Err(FitFailure::Capacity(dimension)),
        None => Ok(()),
    }
}

/// The whole check for one replica on one node whose free capacity is `free` (the
/// node's own free capacity when applying; a running tally when planning).
pub fn fit(node: &Node, free: &Resources, spec: &JobSpec) -> Result<(), FitFailure> {
    static_fit(node, spec)?;
    capacity_fit(free, spec)
}

/// Whether the node has a PreferNoSchedule taint the job does not tolerate; the
/// scheduler avoids such nodes when it has a choice.
pub fn prefers_not(node: &Node, spec: &JobSpec) -> bool {
    node.taints.iter().any(|taint| {
        taint.effect == TaintEffect::PreferNoSchedule
            && !spec
                .tolerations
                .iter()
                .any(|toleration| toleration.tolerates(taint))
    })
}

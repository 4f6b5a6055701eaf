//! Node inventory commands (register, drain, cordon, lock, taints, labels, delete),
//! liveness (lost, recovered), driver reports, and a node joining or leaving a pool.

use super::{require_admin, require_node_itself, require_system, Context, Created, Handled};
use crate::state::State;
use corral_model::billing::BillSubject;
use corral_model::command::NodeRegister;
use corral_model::ids::{JobId, NodeId, PoolId};
use corral_model::limits::{
    MAX_DRIVER_VERSION_BYTES, MAX_LABELS_PER_NODE, MAX_LABEL_BYTES, MAX_NAME_BYTES, MAX_NODES,
    MAX_NODES_LOST_PER_ENTRY, MAX_TAINTS_PER_NODE,
};
use corral_model::names::{validate_name, validate_token_text};
use corral_model::node::{ReplicaIsolation, TaintEffect};
use corral_model::pool::{BillingMode, PoolKind};
use corral_model::{Event, Node, NodeStatus, Principal, Rejection, Resources, Taint};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), Rejection> {
    if labels.len() > MAX_LABELS_PER_NODE {
        return Err(Rejection::limit("labels per node", MAX_LABELS_PER_NODE));
    }
    for (key, value) in labels {
        validate_token_text("labels.key", key, MAX_LABEL_BYTES)?;
        validate_token_text("labels.value", value, MAX_LABEL_BYTES)?;
    }
    Ok(())
}

pub(crate) fn validate_taints(taints: &[Taint]) -> Result<(), Rejection> {
    if taints.len() > MAX_TAINTS_PER_NODE {
        return Err(Rejection::limit("taints per node", MAX_TAINTS_PER_NODE));
    }
    for taint in taints {
        validate_token_text("taints.key", &taint.key, MAX_LABEL_BYTES)?;
        validate_token_text("taints.value", &taint.value, MAX_LABEL_BYTES)?;
    }
    Ok(())
}

pub(crate) fn validate_agent_address(address: &str) -> Result<(), Rejection> {
    validate_token_text("agent_address", address, MAX_NAME_BYTES)?;
    if !address.contains(':') {
        return Err(Rejection::invalid("agent_address", "must be host:port"));
    }
    Ok(())
}

pub(crate) fn validate_driver(
    field: &'static str,
    version: &Option<String>,
) -> Result<(), Rejection> {
    match version {
        Some(text) => validate_token_text(field, text, MAX_DRIVER_VERSION_BYTES),
        None => Ok(()),
    }
}

impl State {
    /// Look a node up for an operator: the platform admin, or the tenant owning the
    /// dedicated pool the node is in. Anyone else is told it does not exist.
    pub(super) fn node_for_operator(
        &self,
        principal: &Principal,
        node_id: NodeId,
    ) -> Result<&Node, Rejection> {
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        if principal.is_admin() {
            return Ok(node);
        }
        let owner = node
            .pool
            .and_then(|pool| self.pools.get(&pool))
            .and_then(|pool| pool.owner());
        match (principal.tenant(), owner) {
            (Some(tenant), Some(owner)) if tenant == owner => Ok(node),
            _ => Err(Rejection::not_found("node", node_id)),
        }
    }

    pub(super) fn node_mut(&mut self, node_id: NodeId) -> &mut Node {
        match self.nodes.get_mut(&node_id) {
            Some(node) => node,
            None => unreachable!("node {node_id} must exist here"),
        }
    }

    fn node_tenant(&self, node_id: NodeId) -> Option<corral_model::TenantId> {
        self.nodes[&node_id]
            .pool
            .and_then(|pool| self.pools.get(&pool))
            .and_then(|pool| pool.owner())
    }

    pub(super) fn node_register(
        &mut self,
        context: &mut Context,
        request: &NodeRegister,
    ) -> Handled {
        if !matches!(
            context.principal,
            Principal::PlatformAdmin | Principal::Bootstrap | Principal::System
        ) {
            return Err(Rejection::denied(
                "only a node-bootstrap token or the platform admin may register nodes",
            ));
        }
        validate_token_text("name", &request.name, MAX_NAME_BYTES)?;
        validate_name("zone", &request.zone)?;
        validate_labels(&request.labels)?;
        validate_taints(&request.taints)?;
        validate_driver("gpu_driver_version", &request.gpu_driver_version)?;
        validate_driver("npu_driver_version", &request.npu_driver_version)?;
        if let Some(address) = &request.agent_address {
            validate_agent_address(address)?;
        }
        let flavor = self
            .flavors
            .get(&request.flavor)
            .ok_or_else(|| Rejection::not_found("flavor", &request.flavor))?;
        if let Some(hash) = &request.credential_hash {
            self.validate_node_credential(context, hash)?;
        } else if matches!(context.principal, Principal::Bootstrap) {
            return Err(Rejection::invalid(
                "credential_hash",
                "a bootstrap registration must install the node's credential",
            ));
        }
        if let Some(&existing) = self.node_names.get(&request.name) {
            // A replaced machine, bootstrapped again by the admin's token: it becomes
            // the node, and the old machine's credential stops working.
            // Never a live node's: a bootstrap token (perhaps one shared by many
            // machines) must not take over a node that still answers with its own
            // credential. Revoking that credential, or the node being lost, frees it.
            let node = &self.nodes[&existing];
            let has_credential = self
                .tokens
                .contains_key(&super::tokens::node_token_name(&request.name));
            if request.credential_hash.is_some()
                && has_credential
                && node.status != NodeStatus::Abnormal
            {
                return Err(Rejection::state(
                    "node",
                    existing,
                    "live with its own credential",
                    "re-bootstrap",
                ));
            }
            return match &request.credential_hash {
                Some(hash) => {
                    self.install_node_credential(context, existing, &request.name, hash);
                    let tenant = self.node_tenant(existing);
                    let node = self.node_mut(existing);
                    node.agent_address = request.agent_address.clone();
                    node.isolation = request.isolation;
                    context.emit(tenant, Event::NodeAttributesChanged { node: existing });
                    Ok(Some(Created::Node(existing)))
                }
                None => Err(Rejection::exists("node", request.name.clone())),
            };
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(Rejection::limit("nodes", MAX_NODES));
        }
        self.counters.node += 1;
        let id = NodeId(self.counters.node);
        let node = Node {
            id,
            name: request.name.clone(),
            flavor: flavor.name.clone(),
            zone: request.zone.clone(),
            capacity: flavor.capacity,
            accelerator_type: flavor.accelerator_type.clone(),
            labels: request.labels.clone(),
            taints: request.taints.clone(),
            gpu_driver_version: request.gpu_driver_version.clone(),
            npu_driver_version: request.npu_driver_version.clone(),
            deletion_locked: false,
            status: NodeStatus::Available,
            schedulable: true,
            drain_deadline_ms: None,
            pool: None,
            ip_address: None,
            allocated: Resources::ZERO,
            devices_in_use: 0,
            allocations: Vec::new(),
            registered_at_ms: context.at_ms,
            joined_pool_at_ms: None,
            meter: None,
            standby: false,
            agent_address: request.agent_address.clone(),
            isolation: request.isolation,
            upgrading: None,
            upgrade_failure: None,
        };
        self.nodes.insert(id, node);
        self.node_names.insert(request.name.clone(), id);
        context.emit(None, Event::NodeRegistered { node: id });
        if let Some(hash) = &request.credential_hash {
            self.install_node_credential(context, id, &request.name, hash);
        }
        Ok(Some(Created::Node(id)))
    }

    pub(super) fn node_drain(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        deadline_ms: Option<u64>,
    ) -> Handled {
        let node = self.node_for_operator(context.principal, node_id)?;
        if node.status == NodeStatus::Deleting {
            return Err(Rejection::state("node", node_id, node.status, "drain"));
        }
        if let Some(deadline) = deadline_ms {
            if deadline < context.at_ms {
                return Err(Rejection::invalid("deadline_ms", "is in the past"));
            }
        }
        let tenant = self.node_tenant(node_id);
        let node = self.node_mut(node_id);
        node.schedulable = false;
        node.drain_deadline_ms = deadline_ms;
        // The end of an upgrade restores what the node was before it; a drain during the
        // upgrade means it must not take work afterwards either.
        if let Some(upgrading) = node.upgrading.as_mut() {
            upgrading.was_schedulable = false;
        }
        context.emit(
            tenant,
            Event::NodeDraining {
                node: node_id,
                deadline_ms,
            },
        );
        Ok(None)
    }

    pub(super) fn node_set_schedulable(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        schedulable: bool,
    ) -> Handled {
        let node = self.node_for_operator(context.principal, node_id)?;
        if node.upgrading.is_some() {
            return Err(Rejection::state(
                "node",
                node_id,
                "Upgrading",
                "change schedulability of",
            ));
        }
        if node.schedulable == schedulable && node.drain_deadline_ms.is_none() {
            let operation = if schedulable { "uncordon" } else { "cordon" };
            let state = if schedulable {
                "Schedulable"
            } else {
                "Cordoned"
            };
            return Err(Rejection::state("node", node_id, state, operation));
        }
        let tenant = self.node_tenant(node_id);
        let node = self.node_mut(node_id);
        node.schedulable = schedulable;
        node.drain_deadline_ms = None;
        if schedulable {
            // The operator took the node back after a failed driver upgrade.
            node.upgrade_failure = None;
        }
        context.emit(
            tenant,
            Event::NodeSchedulableChanged {
                node: node_id,
                schedulable,
            },
        );
        Ok(None)
    }

    pub(super) fn node_set_deletion_lock(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        locked: bool,
    ) -> Handled {
        let node = self.node_for_operator(context.principal, node_id)?;
        if node.deletion_locked == locked {
            let state = if locked { "Locked" } else { "Unlocked" };
            return Err(Rejection::state(
                "node",
                node_id,
                state,
                if locked { "lock" } else { "unlock" },
            ));
        }
        let tenant = self.node_tenant(node_id);
        self.node_mut(node_id).deletion_locked = locked;
        context.emit(
            tenant,
            Event::NodeDeletionLockChanged {
                node: node_id,
                locked,
            },
        );
        Ok(None)
    }

    /// Replace the node's taints. A NoExecute taint evicts running work that does not
    /// tolerate it.
    pub(super) fn node_set_taints(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        taints: &[Taint],
    ) -> Handled {
        self.node_for_operator(context.principal, node_id)?;
        validate_taints(taints)?;
        let tenant = self.node_tenant(node_id);
        self.node_mut(node_id).taints = taints.to_vec();
        context.emit(tenant, Event::NodeAttributesChanged { node: node_id });
        let no_execute: Vec<&Taint> = taints
            .iter()
            .filter(|taint| taint.effect == TaintEffect::NoExecute)
            .collect();
        if !no_execute.is_empty() {
            let mut intolerant: Vec<_> = self.nodes[&node_id]
                .allocations
                .iter()
                .map(|allocation| allocation.job)
                .filter(|job_id| {
                    let tolerations = &self.jobs[job_id].spec.tolerations;
                    no_execute.iter().any(|taint| {
                        !tolerations
                            .iter()
                            .any(|toleration| toleration.tolerates(taint))
                    })
                })
                .collect();
            intolerant.sort_unstable();
            intolerant.dedup();
            for job_id in intolerant {
                self.evict_job_from_node(context, job_id, node_id, "evicted by a NoExecute taint");
            }
        }
        Ok(None)
    }

    pub(super) fn node_set_labels(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        labels: &BTreeMap<String, String>,
    ) -> Handled {
        self.node_for_operator(context.principal, node_id)?;
        validate_labels(labels)?;
        let tenant = self.node_tenant(node_id);
        self.node_mut(node_id).labels = labels.clone();
        context.emit(tenant, Event::NodeAttributesChanged { node: node_id });
        Ok(None)
    }

    /// Remove a node from the inventory. It must not belong to a pool (scale the pool
    /// in first) and must not carry a deletion lock.
    pub(super) fn node_delete(&mut self, context: &mut Context, node_id: NodeId) -> Handled {
        require_admin(context.principal)?;
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        if node.deletion_locked {
            return Err(Rejection::state(
                "node",
                node_id,
                "DeletionLocked",
                "delete",
            ));
        }
        if let Some(pool) = node.pool {
            return Err(Rejection::in_use(
                "node",
                node_id,
                format!("pool {pool}; scale the pool in first"),
            ));
        }
        let name = node.name.clone();
        self.nodes.remove(&node_id);
        self.remove_token(context, &super::tokens::node_token_name(&name));
        self.node_names.remove(&name);
        context.emit(None, Event::NodeDeleted { node: node_id });
        Ok(None)
    }

    pub(super) fn node_set_agent_address(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        address: &str,
        isolation: Option<ReplicaIsolation>,
    ) -> Handled {
        require_node_itself(context.principal, node_id)?;
        validate_agent_address(address)?;
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        let isolation = isolation.or(node.isolation);
        if node.agent_address.as_deref() == Some(address) && node.isolation == isolation {
            return Err(Rejection::state(
                "node",
                node_id,
                "SameAddress",
                "move the agent of",
            ));
        }
        let tenant = self.node_tenant(node_id);
        let node = self.node_mut(node_id);
        node.agent_address = Some(address.to_string());
        node.isolation = isolation;
        context.emit(tenant, Event::NodeAttributesChanged { node: node_id });
        Ok(None)
    }

    pub(super) fn node_lost(&mut self, context: &mut Context, node_id: NodeId) -> Handled {
        require_system(context.principal)?;
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        if !can_be_lost(node.status) {
            return Err(Rejection::state("node", node_id, node.status, "mark lost"));
        }
        self.mark_nodes_lost(context, &[node_id]);
        Ok(None)
    }

    /// Every node the leader found silent in one pass. Listed nodes that are gone or
    /// already lost are skipped (the leader's view may lag by an entry); refused only
    /// when the list is empty, too long, repeats a node, or none can be marked.
    pub(super) fn nodes_lost(&mut self, context: &mut Context, nodes: &[NodeId]) -> Handled {
        require_system(context.principal)?;
        if nodes.is_empty() {
            return Err(Rejection::invalid("nodes", "name at least one node"));
        }
        if nodes.len() > MAX_NODES_LOST_PER_ENTRY {
            return Err(Rejection::limit(
                "nodes lost in one entry",
                MAX_NODES_LOST_PER_ENTRY,
            ));
        }
        let distinct: BTreeSet<NodeId> = nodes.iter().copied().collect();
        if distinct.len() != nodes.len() {
            return Err(Rejection::invalid("nodes", "a node is listed twice"));
        }
        let losable: Vec<NodeId> = distinct
            .into_iter()
            .filter(|node_id| {
                self.nodes
                    .get(node_id)
                    .is_some_and(|node| can_be_lost(node.status))
            })
            .collect();
        if losable.is_empty() {
            return Err(Rejection::state(
                "nodes",
                format!("{} listed", nodes.len()),
                "AlreadyLostOrGone",
                "mark lost",
            ));
        }
        self.mark_nodes_lost(context, &losable);
        Ok(None)
    }

    /// Mark `lost` (distinct, each Available or Checking) lost together: first every one
    /// Abnormal, so nothing displaced here can be placed back on a rack-mate; then each
    /// job on any of them is taken off all of its lost nodes at once (one disruption,
    /// its reason naming those nodes); then standbys replace them.
    fn mark_nodes_lost(&mut self, context: &mut Context, lost: &[NodeId]) {
        for node_id in lost {
            self.set_node_status(context, *node_id, NodeStatus::Abnormal);
        }
        let mut nodes_of_job: BTreeMap<JobId, Vec<NodeId>> = BTreeMap::new();
        for node_id in lost {
            for allocation in &self.nodes[node_id].allocations {
                let nodes = nodes_of_job.entry(allocation.job).or_default();
                if !nodes.contains(node_id) {
                    nodes.push(*node_id);
                }
            }
        }
        for (job_id, nodes) in nodes_of_job {
            let reason = lost_nodes_reason(&nodes);
            self.evict_job_from_nodes(context, job_id, &nodes, &reason);
        }
        for node_id in lost {
            self.promote_standby_for(context, *node_id);
        }
    }

    pub(super) fn node_recovered(&mut self, context: &mut Context, node_id: NodeId) -> Handled {
        require_node_itself(context.principal, node_id)?;
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        if node.status != NodeStatus::Abnormal {
            return Err(Rejection::state("node", node_id, node.status, "recover"));
        }
        self.set_node_status(context, node_id, NodeStatus::Available);
        Ok(None)
    }

    pub(super) fn node_driver_report(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        gpu_driver_version: &Option<String>,
        npu_driver_version: &Option<String>,
    ) -> Handled {
        require_node_itself(context.principal, node_id)?;
        validate_driver("gpu_driver_version", gpu_driver_version)?;
        validate_driver("npu_driver_version", npu_driver_version)?;
        if !self.nodes.contains_key(&node_id) {
            return Err(Rejection::not_found("node", node_id));
        }
        let tenant = self.node_tenant(node_id);
        let node = self.node_mut(node_id);
        node.gpu_driver_version = gpu_driver_version.clone();
        node.npu_driver_version = npu_driver_version.clone();
        let pool_id = node.pool;
        context.emit(tenant, Event::NodeDriverChanged { node: node_id });
        self.finish_node_upgrade_if_done(context, node_id);
        if let Some(pool_id) = pool_id {
            self.complete_upgrade_if_done(pool_id);
        }
        Ok(None)
    }

    /// Clear a pool's pending driver upgrade once every node runs the target versions.
    pub(super) fn complete_upgrade_if_done(&mut self, pool_id: PoolId) {
        let Some(upgrade) = self.pools[&pool_id].pending_upgrade.clone() else {
            return;
        };
        let done = self
            .pool_nodes(pool_id)
            .all(|node| upgrade.target.is_run_by(node) || node.failed_upgrade(&upgrade));
        if done {
            self.clear_pool_upgrades(pool_id);
            if let Some(pool) = self.pools.get_mut(&pool_id) {
                pool.pending_upgrade = None;
            }
        }
    }

    pub(crate) fn set_node_status(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        status: NodeStatus,
    ) {
        let tenant = self.node_tenant(node_id);
        let node = self.node_mut(node_id);
        let from = node.status;
        if from == status {
            return;
        }
        node.status = status;
        context.emit(
            tenant,
            Event::NodeStatusChanged {
                node: node_id,
                from,
                to: status,
            },
        );
    }

    /// A free node joins a pool: it gets an address from the pool's network and, in a
    /// pay-per-use dedicated pool, a node-time meter.
    pub(crate) fn node_join_pool(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        pool_id: PoolId,
    ) {
        let pool = &self.pools[&pool_id];
        let (kind, billing, network) = (pool.kind, pool.billing, pool.network);
        let address = network.map(|network_id| {
            let network = self
                .networks
                .get_mut(&network_id)
                .expect("a pool's network exists");
            let address = network
                .next_free_address()
                .expect("address capacity was checked before joining");
            network.addresses.insert(address, node_id);
            address
        });
        let price = self
            .flavors
            .get(&self.nodes[&node_id].flavor)
            .map_or(0, |flavor| flavor.price_micros_per_hour);
        let meter = match (kind, billing) {
            (PoolKind::Dedicated { owner }, BillingMode::PayPerUse) => Some(self.open_meter(
                owner,
                pool_id,
                BillSubject::Node { node: node_id },
                price,
                context.at_ms,
            )),
            _ => None,
        };
        let node = self.node_mut(node_id);
        assert!(
            node.pool.is_none(),
            "node {node_id} joins a pool while in another"
        );
        node.pool = Some(pool_id);
        node.ip_address = address;
        node.meter = meter;
        node.joined_pool_at_ms = Some(context.at_ms);
        self.pool_nodes.entry(pool_id).or_default().insert(node_id);
        context.emit(
            kind_owner(kind),
            Event::NodeJoinedPool {
                node: node_id,
                pool: pool_id,
            },
        );
    }

    /// A node leaves its pool: its work is evicted by policy, its address and meter are
    /// given back, and it returns to the free inventory.
    pub(crate) fn node_leave_pool(&mut self, context: &mut Context, node_id: NodeId) {
        let Some(pool_id) = self.nodes[&node_id].pool else {
            unreachable!("node {node_id} leaves a pool it is not in");
        };
        self.evict_node(
            context,
            node_id,
            &format!("node {node_id} left pool {pool_id}"),
        );
        let network = self.pools[&pool_id].network;
        let owner = self.pools[&pool_id].owner();
        self.clear_node_upgrade(node_id);
        let node = self.node_mut(node_id);
        node.standby = false;
        let address = node.ip_address.take();
        let meter = node.meter.take();
        node.pool = None;
        node.joined_pool_at_ms = None;
        node.schedulable = true;
        node.drain_deadline_ms = None;
        if let (Some(network_id), Some(address)) = (network, address) {
            if let Some(network) = self.networks.get_mut(&network_id) {
                network.addresses.remove(&address);
            }
        }
        if let Some(meter_id) = meter {
            self.close_meter(context, meter_id);
        }
        if let Some(members) = self.pool_nodes.get_mut(&pool_id) {
            members.remove(&node_id);
            if members.is_empty() {
                self.pool_nodes.remove(&pool_id);
            }
        }
        context.emit(
            owner,
            Event::NodeLeftPool {
                node: node_id,
                pool: pool_id,
            },
        );
        // The node may have been the last one behind the pool's driver upgrade.
        self.complete_upgrade_if_done(pool_id);
    }
}

/// A node the liveness loop may mark lost.
fn can_be_lost(status: NodeStatus) -> bool {
    matches!(status, NodeStatus::Available | NodeStatus::Checking)
}

/// Nodes named in a job's reason at most; the rest are counted.
const MAX_NODES_NAMED_IN_REASON: usize = 8;

/// "node n1 was lost" / "nodes n1, n2 were lost" (the first few, then a count).
fn lost_nodes_reason(nodes: &[NodeId]) -> String {
    let named: Vec<String> = nodes
        .iter()
        .take(MAX_NODES_NAMED_IN_REASON)
        .map(|node| node.to_string())
        .collect();
    let more = nodes.len().saturating_sub(MAX_NODES_NAMED_IN_REASON);
    let mut list = named.join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    if nodes.len() == 1 {
        format!("node {list} was lost")
    } else {
        format!("nodes {list} were lost")
    }
}

fn kind_owner(kind: PoolKind) -> Option<corral_model::TenantId> {
    match kind {
        PoolKind::Dedicated { owner } => Some(owner),
        PoolKind::Public => None,
    }
}

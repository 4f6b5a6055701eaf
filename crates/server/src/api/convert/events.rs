//! Events for the Watch API: the variant name as the kind and a readable rendering of
//! its fields as the detail.

use super::names::{job_state_name, node_status_name, pool_status_name};
use corral_model::{Event, EventRecord};
use corral_wire::pb;

/// Tenant 0 for platform events.
pub fn event_to_proto(record: &EventRecord) -> pb::Event {
    pb::Event {
        index: record.index,
        at_ms: record.at_ms,
        tenant: record.tenant.map_or(0, |tenant| tenant.0),
        kind: event_kind(&record.event).to_string(),
        detail: event_detail(&record.event),
        principal: record.principal.describe(),
    }
}

/// The variant name, e.g. `JobStateChanged`.
pub fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::TenantCreated { .. } => "TenantCreated",
        Event::TenantQuotaChanged { .. } => "TenantQuotaChanged",
        Event::TenantDeleted { .. } => "TenantDeleted",
        Event::TokenCreated { .. } => "TokenCreated",
        Event::TokenRotated { .. } => "TokenRotated",
        Event::TokenRevoked { .. } => "TokenRevoked",
        Event::FlavorDefined { .. } => "FlavorDefined",
        Event::NetworkCreated { .. } => "NetworkCreated",
        Event::NetworkDeleted { .. } => "NetworkDeleted",
        Event::NetworkStorageChanged { .. } => "NetworkStorageChanged",
        Event::PoolCreated { .. } => "PoolCreated",
        Event::PoolStatusChanged { .. } => "PoolStatusChanged",
        Event::PoolScaled { .. } => "PoolScaled",
        Event::PoolJobTypesChanged { .. } => "PoolJobTypesChanged",
        Event::PoolDriverUpgradeRequested { .. } => "PoolDriverUpgradeRequested",
        Event::PoolDeleted { .. } => "PoolDeleted",
        Event::PrepaidCharged { .. } => "PrepaidCharged",
        Event::NodeRegistered { .. } => "NodeRegistered",
        Event::NodeJoinedPool { .. } => "NodeJoinedPool",
        Event::NodeLeftPool { .. } => "NodeLeftPool",
        Event::NodeStatusChanged { .. } => "NodeStatusChanged",
        Event::NodeSchedulableChanged { .. } => "NodeSchedulableChanged",
        Event::NodeDraining { .. } => "NodeDraining",
        Event::NodeDeletionLockChanged { .. } => "NodeDeletionLockChanged",
        Event::NodeAttributesChanged { .. } => "NodeAttributesChanged",
        Event::NodeDriverChanged { .. } => "NodeDriverChanged",
        Event::NodeDeleted { .. } => "NodeDeleted",
        Event::JobSubmitted { .. } => "JobSubmitted",
        Event::JobStateChanged { .. } => "JobStateChanged",
        Event::JobPriorityChanged { .. } => "JobPriorityChanged",
        Event::ReplicaAssigned { .. } => "ReplicaAssigned",
        Event::ReplicaReleased { .. } => "ReplicaReleased",
        Event::ReplicaStarted { .. } => "ReplicaStarted",
        Event::ReplicaExited { .. } => "ReplicaExited",
        Event::PlacementRejected { .. } => "PlacementRejected",
        Event::Billed { .. } => "Billed",
        Event::NodeStandbyChanged { .. } => "NodeStandbyChanged",
        Event::NodeStandbyPromoted { .. } => "NodeStandbyPromoted",
        Event::NodeUpgradeStarted { .. } => "NodeUpgradeStarted",
        Event::NodeUpgradeFinished { .. } => "NodeUpgradeFinished",
        Event::NodeUpgradeFailed { .. } => "NodeUpgradeFailed",
        Event::PoolDriverUpgradeCancelled { .. } => "PoolDriverUpgradeCancelled",
        Event::RendezvousReady { .. } => "RendezvousReady",
        Event::AlarmRaised { .. } => "AlarmRaised",
        Event::AlarmDisarmed { .. } => "AlarmDisarmed",
        Event::QueueCreated { .. } => "QueueCreated",
        Event::QueueUpdated { .. } => "QueueUpdated",
        Event::QueueDeleted { .. } => "QueueDeleted",
    }
}

/// The event's fields for people, e.g. `job-3: Pending -> Running (placed)`.
pub fn event_detail(event: &Event) -> String {
    match event {
        Event::TenantCreated { tenant }
        | Event::TenantQuotaChanged { tenant }
        | Event::TenantDeleted { tenant } => tenant.to_string(),
        Event::TokenCreated { name }
        | Event::TokenRotated { name }
        | Event::TokenRevoked { name } => format!("token {name}"),
        Event::FlavorDefined { name } => format!("flavor {name}"),
        Event::NetworkCreated { network }
        | Event::NetworkDeleted { network }
        | Event::NetworkStorageChanged { network } => network.to_string(),
        Event::PoolCreated { pool }
        | Event::PoolJobTypesChanged { pool }
        | Event::PoolDriverUpgradeRequested { pool }
        | Event::PoolDeleted { pool } => pool.to_string(),
        Event::PoolDriverUpgradeCancelled { pool } => {
            format!("{pool}: driver upgrade cancelled")
        }
        Event::RendezvousReady { job, node } => {
            format!("{job}: rank 0's rendezvous port is known to {node}")
        }
        Event::AlarmRaised { replica, kind } => format!("{kind} raised by replica {replica}"),
        Event::AlarmDisarmed { replica, kind } => {
            format!("{kind} of replica {replica} disarmed")
        }
        Event::QueueCreated { pool, name }
        | Event::QueueUpdated { pool, name }
        | Event::QueueDeleted { pool, name } => format!("{pool}: queue {name}"),
        Event::PoolStatusChanged { pool, from, to } => format!(
            "{pool}: {} -> {}",
            pool_status_name(*from),
            pool_status_name(*to)
        ),
        Event::PoolScaled {
            pool,
            flavor,
            zone,
            from,
            to,
        } => {
            format!("{pool}: {flavor} in {zone} from {from} to {to} nodes")
        }
        Event::PrepaidCharged {
            pool,
            amount_micros,
            paid_until_ms,
        } => {
            format!("{pool}: charged {amount_micros} micros, paid until {paid_until_ms} ms")
        }
        Event::NodeRegistered { node }
        | Event::NodeAttributesChanged { node }
        | Event::NodeDriverChanged { node }
        | Event::NodeDeleted { node } => node.to_string(),
        Event::NodeJoinedPool { node, pool } => format!("{node} joined {pool}"),
        Event::NodeLeftPool { node, pool } => format!("{node} left {pool}"),
        Event::NodeStatusChanged { node, from, to } => format!(
            "{node}: {} -> {}",
            node_status_name(*from),
            node_status_name(*to)
        ),
        Event::NodeSchedulableChanged { node, schedulable } => {
            format!("{node}: schedulable {schedulable}")
        }
        Event::NodeDraining { node, deadline_ms } => match deadline_ms {
            Some(deadline_ms) => format!("{node}: draining, eviction at {deadline_ms} ms"),
            None => format!("{node}: draining, no eviction deadline"),
        },
        Event::NodeDeletionLockChanged { node, locked } => {
            format!(
                "{node}: deletion lock {}",
                if *locked { "on" } else { "off" }
            )
        }
        Event::NodeStandbyChanged { node, standby } => format!("{node}: standby {standby}"),
        Event::NodeStandbyPromoted { node, replaced } => {
            format!("{node}: standby promoted in place of lost {replaced}")
        }
        Event::NodeUpgradeStarted { node, pool } => {
            format!("{node}: isolated for the driver upgrade of {pool}")
        }
        Event::NodeUpgradeFinished { node, pool } => {
            format!("{node}: driver upgrade of {pool} done")
        }
        Event::NodeUpgradeFailed {
            node,
            pool,
            attempt,
            final_attempt,
        } => {
            if *final_attempt {
                format!("{node}: driver upgrade of {pool} failed (attempt {attempt}, the last); the node stays isolated")
            } else {
                format!("{node}: driver upgrade of {pool} failed (attempt {attempt}); retrying")
            }
        }
        Event::JobSubmitted { job, pool } => format!("{job} in {pool}"),
        Event::JobStateChanged {
            job,
            from,
            to,
            reason,
        } => {
            let change = format!(
                "{job}: {} -> {}",
                job_state_name(*from),
                job_state_name(*to)
            );
            if reason.is_empty() {
                change
            } else {
                format!("{change} ({reason})")
            }
        }
        Event::JobPriorityChanged { job, priority } => format!("{job}: priority {priority}"),
        Event::ReplicaAssigned { job, rank, node } => {
            format!("{job} rank {rank} assigned to {node}")
        }
        Event::ReplicaReleased { job, rank, node } => {
            format!("{job} rank {rank} released from {node}")
        }
        Event::ReplicaStarted { job, rank, node } => format!("{job} rank {rank} started on {node}"),
        Event::ReplicaExited {
            job,
            rank,
            node,
            exit_code,
            oom_killed,
        } => {
            if *oom_killed {
                format!("{job} rank {rank} was OOMKilled on {node} (code {exit_code}): it passed its memory limit")
            } else {
                format!("{job} rank {rank} exited on {node} with code {exit_code}")
            }
        }
        Event::PlacementRejected { job, reason } => format!("{job}: placement rejected ({reason})"),
        Event::Billed {
            tenant,
            pool,
            amount_micros,
        } => {
            format!("{tenant} billed {amount_micros} micros in {pool}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{
        JobId, JobState, NetworkId, NodeId, NodeStatus, PoolId, PoolStatus, TenantId,
    };

    fn every_event() -> Vec<Event> {
        let (tenant, pool, node, job) = (TenantId(1), PoolId(2), NodeId(3), JobId(4));
        vec![
            Event::TenantCreated { tenant },
            Event::TenantQuotaChanged { tenant },
            Event::TenantDeleted { tenant },
            Event::TokenCreated { name: "ops".into() },
            Event::TokenRevoked { name: "ops".into() },
            Event::FlavorDefined {
                name: "cpu-16".into(),
            },
            Event::NetworkCreated {
                network: NetworkId(5),
            },
            Event::NetworkDeleted {
                network: NetworkId(5),
            },
            Event::PoolCreated { pool },
            Event::PoolStatusChanged {
                pool,
                from: PoolStatus::Creating,
                to: PoolStatus::Running,
            },
            Event::PoolScaled {
                pool,
                flavor: "cpu-16".into(),
                zone: "zone-a".into(),
                from: 1,
                to: 3,
            },
            Event::PoolJobTypesChanged { pool },
            Event::PoolDriverUpgradeRequested { pool },
            Event::PoolDeleted { pool },
            Event::PrepaidCharged {
                pool,
                amount_micros: 10,
                paid_until_ms: 20,
            },
            Event::NodeRegistered { node },
            Event::NodeJoinedPool { node, pool },
            Event::NodeLeftPool { node, pool },
            Event::NodeStatusChanged {
                node,
                from: NodeStatus::Available,
                to: NodeStatus::Abnormal,
            },
            Event::NodeSchedulableChanged {
                node,
                schedulable: false,
            },
            Event::NodeDraining {
                node,
                deadline_ms: Some(9),
            },
            Event::NodeDeletionLockChanged { node, locked: true },
            Event::NodeAttributesChanged { node },
            Event::NodeDriverChanged { node },
            Event::NodeDeleted { node },
            Event::JobSubmitted { job, pool },
            Event::JobStateChanged {
                job,
                from: JobState::Pending,
                to: JobState::Running,
                reason: "placed".into(),
            },
            Event::JobPriorityChanged { job, priority: 3 },
            Event::ReplicaAssigned { job, rank: 0, node },
            Event::ReplicaReleased { job, rank: 0, node },
            Event::ReplicaStarted { job, rank: 0, node },
            Event::ReplicaExited {
                job,
                rank: 0,
                node,
                exit_code: 1,
                oom_killed: false,
            },
            Event::PlacementRejected {
                job,
                reason: "node full".into(),
            },
            Event::Billed {
                tenant,
                pool,
                amount_micros: 7,
            },
        ]
    }

    #[test]
    fn kinds_are_the_variant_names() {
        for event in every_event() {
            let debug = format!("{event:?}");
            let variant = debug.split([' ', '{', '(']).next().unwrap_or_default();
            assert_eq!(event_kind(&event), variant);
            assert!(!event_detail(&event).is_empty());
        }
    }

    #[test]
    fn details_read_well() {
        let changed = Event::JobStateChanged {
            job: JobId(3),
            from: JobState::Pending,
            to: JobState::Running,
            reason: "placed".into(),
        };
        assert_eq!(event_detail(&changed), "job-3: Pending -> Running (placed)");
        let record = EventRecord {
            index: 12,
            at_ms: 34,
            principal: corral_model::Principal::System,
            tenant: None,
            event: changed,
        };
        let proto = event_to_proto(&record);
        assert_eq!((proto.index, proto.at_ms, proto.tenant), (12, 34, 0));
        assert_eq!(proto.kind, "JobStateChanged");
        let owned = EventRecord {
            tenant: Some(TenantId(6)),
            ..record
        };
        assert_eq!(event_to_proto(&owned).tenant, 6);
    }
}

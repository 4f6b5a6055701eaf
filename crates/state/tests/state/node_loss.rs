//! Correlated node loss and the retry rules: a rack marked lost in one `NodesLost`
//! entry re-queues everything on it at once without spending retries; only the job's
//! own failures spend `retry_limit`; a job disrupted too often fails with a clear
//! reason; a placement onto a lost node or during a disruption backoff is refused.

use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::job::disruption_backoff_ms;
use corral_model::limits::{
    DISRUPTIONS_WITHOUT_BACKOFF, MAX_DISRUPTIONS_PER_JOB, MAX_DISRUPTION_BACKOFF_MS,
    MAX_NODES_LOST_PER_ENTRY,
};
use corral_model::{BillingMode, Command, JobKind, JobState, NodeStatus, Principal};
use corral_state::testing::*;
use proptest::prelude::*;

/// A dedicated pool of `racks` racks of `per_rack` GPU nodes (8 accelerators each).
struct Racks {
    fx: Fx,
    tenant: TenantId,
    pool: PoolId,
    racks: Vec<Vec<NodeId>>,
}

fn racks(racks: usize, per_rack: usize) -> Racks {
    let mut fx = Fx::new();
    fx.define_catalog();
    let nodes = (racks * per_rack) as u32;
    let tenant = fx.create_tenant("alpha", unlimited_quota(8 * nodes), true);
    fx.register_nodes("gpu", GPU, ZONE, nodes);
    let network = fx.create_network(tenant, "alpha-net", "172.16.0.0/16");
    let pool = fx.create_dedicated_pool(
        tenant,
        "alpha-pool",
        network,
        &[(GPU, nodes)],
        BillingMode::PayPerUse,
    );
    let ids: Vec<NodeId> = fx.state.pool_nodes(pool).map(|node| node.id).collect();
    Racks {
        fx,
        tenant,
        pool,
        racks: ids.chunks(per_rack).map(<[NodeId]>::to_vec).collect(),
    }
}

impl Racks {
    /// A gang of `replicas` whole nodes, running on `nodes`.
    fn running_gang(&mut self, nodes: &[NodeId], retry_limit: u32) -> JobId {
        let mut spec = training(self.pool, nodes.len() as u32, 8);
        spec.kind = JobKind::Training { retry_limit };
        let job = self.fx.submit(self.tenant, spec);
        self.fx.place_on(job, nodes);
        self.fx.start_all(job);
        job
    }
}

#[test]
fn a_rack_lost_in_one_entry_requeues_every_gang_without_spending_retries() {
    let mut world = racks(3, 8);
    let rack = world.racks[0].clone();
    // Four 2-node gangs fill the rack; one gang spans the rack and a healthy node.
    let mut gangs: Vec<JobId> = rack
        .chunks(2)
        .take(3)
        .map(|pair| world.running_gang(pair, 1))
        .collect();
    let spanning = world.running_gang(&[rack[6], world.racks[1][0]], 1);
    gangs.push(spanning);
    let applied = world.fx.system(Command::NodesLost {
        nodes: rack.clone(),
    });
    for node in &rack {
        assert_eq!(world.fx.node(*node).status, NodeStatus::Abnormal);
        assert!(world.fx.node(*node).allocations.is_empty());
    }
    for gang in &gangs {
        let job = world.fx.job(*gang);
        assert_eq!(job.state, JobState::Pending, "{gang}: {}", job.reason);
        assert_eq!((job.retries_used, job.disruptions), (0, 1), "{gang}");
        assert!(job.placed_replicas().next().is_none());
        assert!(job.reason.contains("no retry spent"), "{}", job.reason);
    }
    // Each gang went back to the queue exactly once in that entry.
    let requeued: Vec<JobId> = transitions(&applied)
        .into_iter()
        .filter(|(_, from, to)| (*from, *to) == (JobState::Running, JobState::Pending))
        .map(|(job, _, _)| job)
        .collect();
    assert_eq!(requeued, gangs);
    // The reason names the lost nodes the gang was on.
    let first = &world.fx.job(gangs[0]).reason;
    assert!(
        first.contains(&format!("nodes {}, {} were lost", rack[0], rack[1])),
        "{first}"
    );
    // The healthy node of the spanning gang was released too (a gang restarts whole).
    assert!(world.fx.node(world.racks[1][0]).allocations.is_empty());
    assert_eq!(world.fx.queued(world.pool), gangs);
}

#[test]
fn a_job_failing_on_its_own_still_spends_a_retry() {
    let mut world = racks(1, 2);
    let nodes = world.racks[0].clone();
    let job = world.running_gang(&nodes, 1);
    world.fx.exited(job, 0, 3);
    assert_eq!(world.fx.job_state(job), JobState::Pending);
    assert_eq!(
        (
            world.fx.job(job).retries_used,
            world.fx.job(job).disruptions
        ),
        (1, 0)
    );
    world.fx.place_on(job, &nodes);
    world.fx.start_all(job);
    world.fx.exited(job, 1, 1);
    assert_eq!(world.fx.job_state(job), JobState::Failed);
    assert!(world.fx.job(job).reason.contains("no retries left"));
}

#[test]
fn an_oom_kill_spends_a_retry_and_a_lost_process_does_not() {
    let mut world = racks(1, 2);
    let nodes = world.racks[0].clone();
    let job = world.running_gang(&nodes, 2);
    world.fx.agent(Command::ReplicaExited {
        job,
        rank: 0,
        node: nodes[0],
        exit_code: 137,
        oom_killed: true,
    });
    assert_eq!(world.fx.job(job).retries_used, 1);
    world.fx.place_on(job, &nodes);
    world.fx.start_all(job);
    world.fx.agent(Command::ReplicaLost {
        job,
        rank: 1,
        node: nodes[1],
    });
    let record = world.fx.job(job);
    assert_eq!(record.state, JobState::Pending);
    assert_eq!((record.retries_used, record.disruptions), (1, 1));
    assert!(record.reason.contains("was lost"), "{}", record.reason);
    // A node's agent may report only its own replicas.
    let rejection = world.fx.reject(
        Principal::Node(nodes[0]),
        Command::ReplicaLost {
            job,
            rank: 0,
            node: nodes[1],
        },
    );
    expect_denied(&rejection);
}

#[test]
fn a_job_disrupted_too_often_fails_with_a_clear_reason() {
    let mut world = racks(1, 2);
    let (node, other) = (world.racks[0][0], world.racks[0][1]);
    let job = world.running_gang(&[node], 3);
    for disruption in 1..=MAX_DISRUPTIONS_PER_JOB {
        world.fx.system(Command::NodesLost { nodes: vec![node] });
        world.fx.agent(Command::NodeRecovered { node });
        let record = world.fx.job(job);
        assert_eq!(record.state, JobState::Pending, "{}", record.reason);
        assert_eq!((record.retries_used, record.disruptions), (0, disruption));
        world.fx.advance(MAX_DISRUPTION_BACKOFF_MS);
        world.fx.place_on(job, &[node]);
        world.fx.start_all(job);
    }
    world.fx.system(Command::NodesLost { nodes: vec![node] });
    let record = world.fx.job(job);
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.retries_used, 0);
    assert!(
        record.reason.contains(&format!("node {node} was lost"))
            && record
                .reason
                .contains(&format!("disrupted {} times", MAX_DISRUPTIONS_PER_JOB + 1)),
        "{}",
        record.reason
    );
    assert!(world.fx.node(other).allocations.is_empty());
}

#[test]
fn disruptions_past_the_free_ones_hold_the_job_back_with_backoff() {
    assert_eq!(disruption_backoff_ms(DISRUPTIONS_WITHOUT_BACKOFF), 0);
    assert!(disruption_backoff_ms(DISRUPTIONS_WITHOUT_BACKOFF + 1) > 0);
    assert!(
        disruption_backoff_ms(DISRUPTIONS_WITHOUT_BACKOFF + 2)
            > disruption_backoff_ms(DISRUPTIONS_WITHOUT_BACKOFF + 1)
    );
    assert_eq!(disruption_backoff_ms(u32::MAX), MAX_DISRUPTION_BACKOFF_MS);
    let mut world = racks(1, 2);
    let (node, spare) = (world.racks[0][0], world.racks[0][1]);
    let job = world.running_gang(&[node], 1);
    for disruption in 1..=DISRUPTIONS_WITHOUT_BACKOFF + 1 {
        world.fx.system(Command::NodesLost { nodes: vec![node] });
        world.fx.agent(Command::NodeRecovered { node });
        let held = world.fx.job(job).not_before_ms;
        assert_eq!(held.is_some(), disruption > DISRUPTIONS_WITHOUT_BACKOFF);
        if let Some(until) = held {
            world.fx.set_clock(until);
        }
        world.fx.place_on(job, &[node]);
    }
    // The next one waits longer than the driver's step between entries.
    world.fx.system(Command::NodesLost { nodes: vec![node] });
    let held_until = world.fx.job(job).not_before_ms.expect("held back");
    assert!(held_until > world.fx.clock(), "{held_until}");
    let reason = world
        .fx
        .place_expecting_refusal(world.pool, job, &[(0, spare)]);
    assert!(reason.contains("held back"), "{reason}");
    assert_eq!(world.fx.job_state(job), JobState::Pending);
    world.fx.set_clock(held_until);
    world.fx.place_on(job, &[spare]);
    assert_eq!(world.fx.job(job).not_before_ms, None);
}

#[test]
fn a_placement_onto_a_lost_node_is_refused_at_apply() {
    let mut world = racks(1, 3);
    let nodes = world.racks[0].clone();
    let job = world.fx.submit(world.tenant, training(world.pool, 2, 8));
    world.fx.system(Command::NodesLost {
        nodes: vec![nodes[1]],
    });
    let reason = world
        .fx
        .place_expecting_refusal(world.pool, job, &[(0, nodes[0]), (1, nodes[1])]);
    assert!(reason.contains(&format!("node {}", nodes[1])), "{reason}");
    assert!(reason.contains("lost"), "{reason}");
    // All or nothing: the healthy node got nothing either.
    assert!(world.fx.node(nodes[0]).allocations.is_empty());
    assert_eq!(world.fx.job_state(job), JobState::Pending);
}

#[test]
fn nodes_lost_is_bounded_and_refuses_repeats_but_skips_the_already_lost() {
    let mut world = racks(1, 3);
    let nodes = world.racks[0].clone();
    for principal in [Principal::PlatformAdmin, Principal::Node(nodes[0])] {
        expect_denied(&world.fx.reject(
            principal,
            Command::NodesLost {
                nodes: vec![nodes[0]],
            },
        ));
    }
    expect_invalid(
        &world
            .fx
            .reject(Principal::System, Command::NodesLost { nodes: vec![] }),
        "nodes",
    );
    expect_invalid(
        &world.fx.reject(
            Principal::System,
            Command::NodesLost {
                nodes: vec![nodes[0], nodes[0]],
            },
        ),
        "nodes",
    );
    expect_limit(
        &world.fx.reject(
            Principal::System,
            Command::NodesLost {
                nodes: (0..=MAX_NODES_LOST_PER_ENTRY as u64).map(NodeId).collect(),
            },
        ),
        "nodes lost in one entry",
        MAX_NODES_LOST_PER_ENTRY as u64,
    );
    world.fx.system(Command::NodesLost {
        nodes: vec![nodes[0]],
    });
    // The leader's view may lag: an already lost (or unknown) node is skipped...
    world.fx.system(Command::NodesLost {
        nodes: vec![nodes[0], nodes[1], NodeId(9_999)],
    });
    assert_eq!(world.fx.node(nodes[1]).status, NodeStatus::Abnormal);
    // ...but an entry that can mark nothing is refused, changing nothing.
    world.fx.reject(
        Principal::System,
        Command::NodesLost {
            nodes: vec![nodes[0], nodes[1]],
        },
    );
    assert_eq!(world.fx.node(nodes[2]).status, NodeStatus::Available);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any set of nodes lost at once: every job that was on one is back in the queue
    /// (or, for a gang without disruptions left, failed) with its retries untouched,
    /// no lost node holds anything, and jobs elsewhere are untouched. The driver checks
    /// every invariant after each entry.
    #[test]
    fn bulk_loss_requeues_everything_on_the_lost_nodes_without_spending_retries(
        layout in proptest::collection::vec((0usize..12, 1usize..4), 1..10),
        lost_mask in any::<u16>(),
    ) {
        let mut world = racks(3, 4);
        let all: Vec<NodeId> = world.racks.concat();
        let mut jobs = Vec::new();
        for (first, replicas) in layout {
            let nodes: Vec<NodeId> = (0..replicas).map(|offset| all[(first + offset) % all.len()]).collect();
            let free = nodes.iter().all(|node| world.fx.node(*node).allocations.is_empty());
            let distinct = nodes.iter().collect::<std::collections::BTreeSet<_>>().len() == nodes.len();
            if free && distinct {
                jobs.push((world.running_gang(&nodes, 1), nodes));
            }
        }
        let lost: Vec<NodeId> = all.iter().enumerate()
            .filter(|(index, _)| lost_mask & (1 << index) != 0)
            .map(|(_, node)| *node)
            .collect();
        prop_assume!(!lost.is_empty());
        world.fx.system(Command::NodesLost { nodes: lost.clone() });
        for node in &lost {
            prop_assert_eq!(world.fx.node(*node).status, NodeStatus::Abnormal);
            prop_assert!(world.fx.node(*node).allocations.is_empty());
        }
        for (job, nodes) in &jobs {
            let record = world.fx.job(*job);
            prop_assert_eq!(record.retries_used, 0);
            if nodes.iter().any(|node| lost.contains(node)) {
                prop_assert_eq!(record.state, JobState::Pending);
                prop_assert_eq!(record.disruptions, 1);
                prop_assert!(world.fx.queued(world.pool).contains(job));
            } else {
                prop_assert_eq!(record.state, JobState::Running);
                prop_assert_eq!(record.disruptions, 0);
            }
        }
    }
}

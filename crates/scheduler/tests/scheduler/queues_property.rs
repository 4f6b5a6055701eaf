//! Properties of queues inside a pool, over random pools, queues and workloads: after
//! every plan no queue exceeds its limit, borrowing never takes what another queue is
//! guaranteed and does not use, the applier accepts every fresh plan, every placement
//! within a guarantee comes before any borrowing one, and no job that fits within its
//! queue's guarantee is left unplaced while the round places a borrower.

use crate::common::{inference, notebook, per_accelerator, training, Cluster};
use corral_model::fit::fit;
use corral_model::ids::{JobId, PoolId, TenantId};
use corral_model::queue::UNBOUNDED;
use corral_model::{Command, JobSpec, Principal, QueueSpec, Resources};
use corral_scheduler::{plan_round, RoundOptions};
use corral_state::testing::rejected_jobs;
use corral_state::State;
use proptest::prelude::*;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
struct QueueChoice {
    /// Accelerators guaranteed (scaled down if the pool has fewer).
    guarantee: u8,
    /// Accelerators the limit adds to the guarantee.
    headroom: u8,
}

#[derive(Clone, Debug)]
struct WorkChoice {
    tenant: u8,
    queue: u8,
    kind: u8,
    replicas: u8,
    accelerators: u8,
}

#[derive(Clone, Debug)]
struct QueueScenario {
    nodes: u8,
    queues: Vec<QueueChoice>,
    first_wave: Vec<WorkChoice>,
    second_wave: Vec<WorkChoice>,
}

fn work_choice() -> impl Strategy<Value = WorkChoice> {
    (0u8..3, 0u8..4, 0u8..3, 1u8..4, 0u8..5).prop_map(
        |(tenant, queue, kind, replicas, accelerators)| WorkChoice {
            tenant,
            queue,
            kind,
            replicas,
            accelerators: [1, 1, 2, 4, 8][accelerators as usize],
        },
    )
}

fn queue_scenario() -> impl Strategy<Value = QueueScenario> {
    (
        2u8..7,
        proptest::collection::vec(
            (0u8..24, 0u8..24).prop_map(|(guarantee, headroom)| QueueChoice {
                guarantee,
                headroom,
            }),
            1..5,
        ),
        proptest::collection::vec(work_choice(), 0..12),
        proptest::collection::vec(work_choice(), 1..24),
    )
        .prop_map(|(nodes, queues, first_wave, second_wave)| QueueScenario {
            nodes,
            queues,
            first_wave,
            second_wave,
        })
}

/// `accelerators` accelerators' worth of every resource (zero for none).
fn share(accelerators: u32) -> Resources {
    if accelerators == 0 {
        Resources::ZERO
    } else {
        per_accelerator(accelerators)
    }
}

struct Built {
    cluster: Cluster,
    pool: PoolId,
    tenants: Vec<TenantId>,
    queue_names: Vec<String>,
}

fn build(scenario: &QueueScenario) -> Built {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenants: Vec<TenantId> = (0..3)
        .map(|index| cluster.tenant(&format!("tenant-{index}"), 100_000))
        .collect();
    let nodes = u32::from(scenario.nodes);
    cluster.register_nodes(&flavor, nodes, &Default::default(), &[]);
    let pool = cluster.public_pool(&[(&flavor, nodes)]);
    // Guarantees in proportion, scaled so that together they fit the pool.
    let capacity = nodes * 8;
    let wanted: u32 = scenario
        .queues
        .iter()
        .map(|queue| u32::from(queue.guarantee))
        .sum();
    let mut queue_names = Vec::new();
    for (index, choice) in scenario.queues.iter().enumerate() {
        let guarantee = if wanted > capacity {
            u32::from(choice.guarantee) * capacity / wanted
        } else {
            u32::from(choice.guarantee)
        };
        let limit_accelerators = guarantee + u32::from(choice.headroom);
        let name = format!("queue-{index}");
        cluster.must(
            Principal::PlatformAdmin,
            Command::QueueCreate(QueueSpec {
                pool,
                name: name.clone(),
                guarantee: share(guarantee),
                limit: Resources {
                    accelerators: limit_accelerators,
                    ..UNBOUNDED
                },
                weight: 1,
                members: tenants.iter().copied().collect::<BTreeSet<_>>(),
                default: false,
            }),
        );
        queue_names.push(name);
    }
    Built {
        cluster,
        pool,
        tenants,
        queue_names,
    }
}

fn job_of(built: &Built, choice: &WorkChoice) -> JobSpec {
    let accelerators = u32::from(choice.accelerators);
    let mut spec = match choice.kind {
        0 => training(built.pool, u32::from(choice.replicas), accelerators),
        1 => inference(built.pool, u32::from(choice.replicas), accelerators),
        _ => notebook(built.pool, accelerators),
    };
    let queue = usize::from(choice.queue) % built.queue_names.len();
    spec.queue = Some(built.queue_names[queue].clone());
    spec
}

/// Submit what the queues' limits accept at submission (a job larger than its queue's
/// limit is refused there).
fn submit_wave(built: &mut Built, wave: &[WorkChoice]) {
    for choice in wave {
        let spec = job_of(built, choice);
        let tenant = built.tenants[usize::from(choice.tenant) % built.tenants.len()];
        let _ = built
            .cluster
            .apply(Principal::TenantUser(tenant), Command::JobSubmit(spec));
    }
}

/// Each queue of the pool: (guarantee, limit, used), in name order.
fn standings(state: &State, pool: PoolId) -> Vec<(String, Resources, Resources, Resources)> {
    state
        .queues_of_pool(pool)
        .map(|queue| (queue.name.clone(), queue.guarantee, queue.limit, queue.used))
        .collect()
}

/// No queue is over its limit; on every dimension where some queue borrows, what the
/// queues claim (`max(use, guarantee)`) fits the pool.
fn assert_queue_rule(state: &State, pool: PoolId) -> Result<(), TestCaseError> {
    let capacity = state.queue_capacity(pool).dimensions();
    let queues = standings(state, pool);
    for (name, _, limit, used) in &queues {
        prop_assert!(used.fits_within(limit), "queue {name} over its limit");
    }
    for (dimension, available) in capacity.iter().enumerate() {
        let borrowing = queues.iter().any(|(_, guarantee, _, used)| {
            used.dimensions()[dimension] > guarantee.dimensions()[dimension]
        });
        let claimed: u128 = queues
            .iter()
            .map(|(_, guarantee, _, used)| {
                u128::from(used.dimensions()[dimension].max(guarantee.dimensions()[dimension]))
            })
            .sum();
        prop_assert!(
            !borrowing || claimed <= u128::from(*available),
            "borrowing took unused guarantee on dimension {}",
            dimension
        );
    }
    Ok(())
}

fn placement_borrows(state: &State, job: JobId, replicas: u32) -> bool {
    let job = state.job(job).unwrap();
    let name = job.spec.queue.as_deref().unwrap();
    let queue = state.queue_record(job.spec.pool, name).unwrap();
    let request = job.spec.per_replica.checked_mul(replicas).unwrap();
    !queue
        .used
        .saturating_add(&request)
        .fits_within(&queue.guarantee)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn rounds_keep_limits_lend_no_guarantee_and_place_guaranteed_work_first(
        scenario in queue_scenario()
    ) {
        let mut built = build(&scenario);
        let pool = built.pool;
        submit_wave(&mut built, &scenario.first_wave);
        let (_, applied) = built.cluster.run_round(pool);
        prop_assert!(rejected_jobs(&applied).is_empty());
        built.cluster.start_all_replicas();
        built.cluster.assert_invariants();
        assert_queue_rule(&built.cluster.state, pool)?;
        submit_wave(&mut built, &scenario.second_wave);

        let before = built.cluster.clone();
        let plan = plan_round(&before.state, pool, &RoundOptions::default());
        // Replay the plan placement by placement: within-guarantee ones come first.
        let mut replay = before.clone();
        let mut borrowed_yet = false;
        let mut guaranteed_prefix = replay.clone();
        for placement in &plan.placements {
            let borrows = placement_borrows(
                &replay.state,
                placement.job,
                placement.assignments.len() as u32,
            );
            prop_assert!(
                !borrowed_yet || borrows,
                "job {} placed within its guarantee after a borrower",
                placement.job
            );
            if borrows && !borrowed_yet {
                borrowed_yet = true;
                guaranteed_prefix = replay.clone();
            }
            let applied = replay
                .apply_placements(pool, vec![placement.clone()])
                .unwrap();
            prop_assert!(rejected_jobs(&applied).is_empty(), "{:?}", applied.events);
            replay.assert_invariants();
            assert_queue_rule(&replay.state, pool)?;
        }
        // The whole plan at once is accepted too.
        let mut whole = before.clone();
        let applied = whole.apply_plan(&plan);
        prop_assert!(rejected_jobs(&applied).is_empty());
        whole.assert_invariants();
        assert_queue_rule(&whole.state, pool)?;

        // Where the round placed a borrower, no single-replica job that fit within its
        // queue's guarantee (and on some node) was passed over for it.
        if borrowed_yet {
            let state = &guaranteed_prefix.state;
            let waiting: Vec<JobId> = state.queue(pool).map(|key| key.job).collect();
            for job_id in waiting {
                let job = state.job(job_id).unwrap();
                if job.spec.replicas != 1 || job.unplaced_count() != 1 {
                    continue;
                }
                if placement_borrows(state, job_id, 1) {
                    continue;
                }
                let fits_somewhere = state
                    .pool_nodes(pool)
                    .any(|node| fit(node, &node.free(), &job.spec).is_ok());
                prop_assert!(
                    !fits_somewhere,
                    "job {} fits within its queue's guarantee but a borrower went first",
                    job_id
                );
            }
        }
    }
}

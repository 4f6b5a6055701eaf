//! Random clusters and queues for property tests, built through real commands: nodes of
//! two flavors with random labels and taints, a dedicated pool and the public pool,
//! three tenants with random quotas, a first wave of jobs placed and partly started,
//! time moved on (some jobs reach their runtime limit), maybe a cordoned node, then a
//! second wave of jobs left queued.

use super::{inference, notebook, training, with_priority, with_runtime_hours, Cluster};
use corral_model::ids::{PoolId, TenantId};
use corral_model::{Command, JobSpec, Principal, Taint, TaintEffect, Toleration};
use corral_scheduler::{plan_all_pools, RoundOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct NodeChoice {
    pub four_accelerators: bool,
    pub rack_label: bool,
    pub prefer_no_schedule: bool,
    pub no_schedule: bool,
}

#[derive(Clone, Debug)]
pub struct JobChoice {
    pub tenant: u8,
    pub dedicated: bool,
    pub kind: u8,
    pub replicas: u8,
    pub accelerators: u8,
    pub runtime_hours: Option<u8>,
    pub priority: u8,
    pub rack_selector: bool,
    pub tolerates_taints: bool,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub nodes: Vec<NodeChoice>,
    pub dedicated_nodes: u8,
    pub quota_accelerators: [u16; 3],
    pub first_wave: Vec<JobChoice>,
    pub advance_minutes: u16,
    pub cordon: Option<u8>,
    pub second_wave: Vec<JobChoice>,
}

fn node_choice() -> impl Strategy<Value = NodeChoice> {
    (any::<bool>(), 0u8..4, 0u8..6, 0u8..8).prop_map(|(four, rack, prefer, blocked)| NodeChoice {
        four_accelerators: four,
        rack_label: rack == 0,
        prefer_no_schedule: prefer == 0,
        no_schedule: blocked == 0,
    })
}

pub fn job_choice() -> impl Strategy<Value = JobChoice> {
    (
        (0u8..3, any::<bool>(), 0u8..6, 1u8..7),
        (
            0u8..6,
            proptest::option::weighted(0.7, 1u8..8),
            1u8..4,
            0u8..8,
            0u8..4,
        ),
    )
        .prop_map(
            |(
                (tenant, dedicated, kind, replicas),
                (accelerators, runtime_hours, priority, rack, tolerates),
            )| JobChoice {
                tenant,
                dedicated,
                kind,
                replicas,
                accelerators: [0, 1, 1, 2, 4, 8][accelerators as usize],
                runtime_hours,
                priority,
                rack_selector: rack == 0,
                tolerates_taints: tolerates == 0,
            },
        )
}

/// First-wave work: mostly jobs whose end the state machine enforces, so that later
/// heads have reservations in the future.
fn running_job_choice() -> impl Strategy<Value = JobChoice> {
    (job_choice(), 0u8..10, 1u8..8).prop_map(|(mut choice, kind, hours)| {
        choice.kind = if kind < 8 { kind % 3 } else { kind - 5 };
        if choice.kind != 5 && kind < 9 {
            choice.runtime_hours = Some(hours);
        }
        choice
    })
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(node_choice(), 3..10),
        0u8..4,
        [8u16..80, 8u16..80, 8u16..80],
        proptest::collection::vec(running_job_choice(), 0..14),
        0u16..600,
        proptest::option::weighted(0.3, any::<u8>()),
        proptest::collection::vec(job_choice(), 1..24),
    )
        .prop_map(
            |(
                nodes,
                dedicated_nodes,
                quota_accelerators,
                first_wave,
                advance_minutes,
                cordon,
                second_wave,
            )| {
                Scenario {
                    nodes,
                    dedicated_nodes,
                    quota_accelerators,
                    first_wave,
                    advance_minutes,
                    cordon,
                    second_wave,
                }
            },
        )
}

pub struct Built {
    pub cluster: Cluster,
    pub public: PoolId,
    pub dedicated: Option<PoolId>,
    pub tenants: Vec<TenantId>,
}

fn taints_of(choice: &NodeChoice) -> Vec<Taint> {
    let mut taints = Vec::new();
    if choice.prefer_no_schedule {
        taints.push(Taint {
            key: "spot".into(),
            value: "yes".into(),
            effect: TaintEffect::PreferNoSchedule,
        });
    }
    if choice.no_schedule {
        taints.push(Taint {
            key: "maintenance".into(),
            value: "yes".into(),
            effect: TaintEffect::NoSchedule,
        });
    }
    taints
}

impl Built {
    fn spec_of(&self, choice: &JobChoice) -> JobSpec {
        let (pool, priority) = match (choice.dedicated, self.dedicated) {
            (true, Some(dedicated)) => (dedicated, choice.priority),
            _ => (self.public, 1),
        };
        let replicas = u32::from(choice.replicas);
        let accelerators = u32::from(choice.accelerators);
        let mut spec = match choice.kind {
            0..=2 => training(pool, replicas, accelerators),
            3 | 4 => inference(pool, replicas, accelerators),
            _ => notebook(pool, accelerators),
        };
        if let Some(hours) = choice.runtime_hours {
            spec = with_runtime_hours(spec, u64::from(hours));
        }
        if choice.rack_selector {
            spec.node_selector.insert("rack".into(), "r1".into());
        }
        if choice.tolerates_taints {
            spec.tolerations = ["spot", "maintenance"]
                .map(|key| Toleration {
                    key: key.into(),
                    value: None,
                })
                .to_vec();
        }
        with_priority(spec, priority)
    }

    /// Submit a wave of jobs; the state machine may refuse some (quota, shape, pool).
    pub fn submit_wave(&mut self, wave: &[JobChoice]) {
        for choice in wave {
            let spec = self.spec_of(choice);
            let submitter = if choice.dedicated && self.dedicated.is_some() {
                self.tenants[0]
            } else {
                self.tenants[usize::from(choice.tenant) % self.tenants.len()]
            };
            let _ = self
                .cluster
                .apply(Principal::TenantUser(submitter), Command::JobSubmit(spec));
        }
    }
}

/// The scenario's cluster with its second wave queued.
pub fn build(scenario: &Scenario) -> Built {
    let mut cluster = Cluster::new();
    let eight = cluster.define_flavor(8);
    let four = cluster.define_flavor(4);
    let tenants: Vec<TenantId> = scenario
        .quota_accelerators
        .iter()
        .enumerate()
        .map(|(index, quota)| cluster.tenant(&format!("tenant-{index}"), u32::from(*quota)))
        .collect();
    let rack: BTreeMap<String, String> = [("rack".to_string(), "r1".to_string())].into();
    let mut counts = BTreeMap::from([(eight.clone(), 0u32), (four.clone(), 0u32)]);
    for choice in &scenario.nodes {
        let flavor = if choice.four_accelerators {
            &four
        } else {
            &eight
        };
        let labels = if choice.rack_label {
            rack.clone()
        } else {
            BTreeMap::new()
        };
        cluster.register_nodes(flavor, 1, &labels, &taints_of(choice));
        *counts.get_mut(flavor).expect("known flavor") += 1;
    }
    let total: u32 = counts.values().sum();
    let dedicated_count = u32::from(scenario.dedicated_nodes)
        .min(counts[&eight])
        .min(total - 1);
    let dedicated = (dedicated_count > 0)
        .then(|| cluster.dedicated_pool("owned", tenants[0], &[(eight.as_str(), dedicated_count)]));
    *counts.get_mut(&eight).expect("known flavor") -= dedicated_count;
    let public_flavors: Vec<(&str, u32)> = counts
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(flavor, count)| (flavor.as_str(), *count))
        .collect();
    let public = cluster.public_pool(&public_flavors);
    let mut built = Built {
        cluster,
        public,
        dedicated,
        tenants,
    };
    built.submit_wave(&scenario.first_wave);
    for plan in plan_all_pools(&built.cluster.state, &RoundOptions::default()) {
        built.cluster.apply_plan(&plan);
    }
    built.cluster.start_all_replicas();
    built
        .cluster
        .advance_ms(u64::from(scenario.advance_minutes) * 60_000);
    if let Some(choice) = scenario.cordon {
        let nodes: Vec<_> = built.cluster.state.nodes().map(|node| node.id).collect();
        let node = nodes[usize::from(choice) % nodes.len()];
        built
            .cluster
            .must(Principal::PlatformAdmin, Command::NodeCordon { node });
    }
    built.submit_wave(&scenario.second_wave);
    built
}

//! Ready-made data for state tests: the flavor catalog, quotas, replica shapes, job
//! specs (and modifiers), node registrations and pool requests.

use corral_model::command::{NodeRegister, PoolCreate, PoolKindRequest};
use corral_model::ids::{NetworkId, PoolId};
use corral_model::limits::HOUR_MS;
use corral_model::{
    BillingMode, DriverSpec, Flavor, JobKind, JobSpec, JobType, PoolFlavor, Resources, Toleration,
    WorkflowSpec, WorkflowStep,
};
use std::collections::{BTreeMap, BTreeSet};

pub const GPU: &str = "gpu-a100-8";
pub const CPU: &str = "cpu-16";
/// An aarch64 flavor, to test that a pool's flavors share one architecture.
pub const NPU: &str = "npu-910b-8";
pub const ZONE: &str = "zone-a";
pub const ZONE_B: &str = "zone-b";
pub const GPU_PRICE: u64 = 8_000_000;
pub const CPU_PRICE: u64 = 500_000;
pub const NPU_PRICE: u64 = 6_000_000;
pub const ACCELERATOR: &str = "nvidia-a100";

/// Time of the first entry, and how far the clock moves between entries.
pub const START_MS: u64 = 1_000_000;
pub const STEP_MS: u64 = 1_000;

pub fn gpu_flavor() -> Flavor {
    Flavor {
        name: GPU.into(),
        capacity: Resources {
            cpu_millicores: 64_000,
            memory_mib: 512 * 1024,
            accelerators: 8,
            disk_gib: 2_000,
            bandwidth_mbps: 25_000,
        },
        accelerator_type: Some(ACCELERATOR.into()),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: GPU_PRICE,
    }
}

pub fn cpu_flavor() -> Flavor {
    Flavor {
        name: CPU.into(),
        capacity: Resources {
            cpu_millicores: 16_000,
            memory_mib: 64 * 1024,
            accelerators: 0,
            disk_gib: 500,
            bandwidth_mbps: 10_000,
        },
        accelerator_type: None,
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: CPU_PRICE,
    }
}

pub fn npu_flavor() -> Flavor {
    Flavor {
        name: NPU.into(),
        capacity: Resources {
            cpu_millicores: 192_000,
            memory_mib: 1024 * 1024,
            accelerators: 8,
            disk_gib: 3_000,
            bandwidth_mbps: 25_000,
        },
        accelerator_type: Some("ascend-910b".into()),
        cpu_architecture: "aarch64".into(),
        price_micros_per_hour: NPU_PRICE,
    }
}

pub fn quota(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: 1_000_000,
        memory_mib: 16 * 1024 * 1024,
        accelerators,
        disk_gib: 1_000_000,
        bandwidth_mbps: 10_000_000,
    }
}

/// A quota large enough never to matter, with `accelerators` accelerators.
pub fn unlimited_quota(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: u64::MAX / 4,
        memory_mib: u64::MAX / 4,
        accelerators,
        disk_gib: u64::MAX / 4,
        bandwidth_mbps: u64::MAX / 4,
    }
}

/// One replica's request: 8 cores, 64 GiB, `accelerators` A100s.
pub fn replica(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: 8_000,
        memory_mib: 64 * 1024,
        accelerators,
        disk_gib: 100,
        bandwidth_mbps: 1_000,
    }
}

/// A job spec with `per_replica` resources (and the accelerator type when it asks for
/// accelerators), priority 1, running `python main.py`.
pub fn job_spec(
    name: &str,
    pool: PoolId,
    kind: JobKind,
    replicas: u32,
    per_replica: Resources,
) -> JobSpec {
    JobSpec {
        name: name.into(),
        pool,
        kind,
        replicas,
        accelerator_type: (per_replica.accelerators > 0).then(|| ACCELERATOR.to_string()),
        per_replica,
        priority: 1,
        command: vec!["python".into(), "main.py".into()],
        environment: BTreeMap::new(),
        secret_environment: BTreeMap::new(),
        node_selector: BTreeMap::new(),
        tolerations: vec![],
        max_runtime_ms: None,
        queue: None,
    }
}

fn base_spec(name: &str, pool: PoolId, kind: JobKind, replicas: u32, accelerators: u32) -> JobSpec {
    job_spec(name, pool, kind, replicas, replica(accelerators))
}

/// A training gang with two retries.
pub fn training(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    base_spec(
        "train",
        pool,
        JobKind::Training { retry_limit: 2 },
        replicas,
        accelerators,
    )
}

pub fn inference(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    base_spec("serve", pool, JobKind::Inference, replicas, accelerators)
}

pub fn notebook(pool: PoolId, auto_stop_after_ms: Option<u64>) -> JobSpec {
    base_spec(
        "notebook",
        pool,
        JobKind::Notebook { auto_stop_after_ms },
        1,
        1,
    )
}

pub fn with_priority(mut job: JobSpec, priority: u8) -> JobSpec {
    job.priority = priority;
    job
}

pub fn tolerating(mut job: JobSpec, key: &str) -> JobSpec {
    job.tolerations.push(Toleration {
        key: key.into(),
        value: None,
    });
    job
}

pub fn selecting(mut job: JobSpec, key: &str, value: &str) -> JobSpec {
    job.node_selector.insert(key.into(), value.into());
    job
}

/// Give the job a runtime limit the state machine enforces: max runtime for training,
/// auto-stop for notebooks; inference services keep running (the limit is ignored).
pub fn with_runtime_hours(mut job: JobSpec, hours: u64) -> JobSpec {
    match &mut job.kind {
        JobKind::Notebook { auto_stop_after_ms } => *auto_stop_after_ms = Some(hours * HOUR_MS),
        _ => job.max_runtime_ms = Some(hours * HOUR_MS),
    }
    job
}

pub fn step(name: &str, depends_on: &[usize], spec: JobSpec) -> WorkflowStep {
    WorkflowStep {
        name: name.into(),
        depends_on: depends_on.to_vec(),
        spec,
        use_public_pool: false,
    }
}

pub fn workflow(pool: PoolId, steps: Vec<WorkflowStep>) -> JobSpec {
    let mut spec = training(pool, 1, 0);
    spec.name = "flow".into();
    spec.kind = JobKind::Workflow(WorkflowSpec { steps });
    spec
}

pub fn all_job_types() -> BTreeSet<JobType> {
    [JobType::Training, JobType::Inference, JobType::Notebook]
        .into_iter()
        .collect()
}

pub fn node_request(name: &str, flavor: &str, zone: &str) -> NodeRegister {
    NodeRegister {
        name: name.into(),
        flavor: flavor.into(),
        zone: zone.into(),
        labels: BTreeMap::new(),
        taints: vec![],
        gpu_driver_version: Some("535.1".into()),
        npu_driver_version: None,
        agent_address: None,
        credential_hash: None,
        isolation: None,
    }
}

pub fn pool_create(
    name: &str,
    kind: PoolKindRequest,
    network: Option<NetworkId>,
    flavors: &[(&str, u32)],
    billing: BillingMode,
) -> PoolCreate {
    PoolCreate {
        name: name.into(),
        description: String::new(),
        kind,
        flavors: flavors
            .iter()
            .map(|(flavor, count)| PoolFlavor {
                flavor: flavor.to_string(),
                zone: ZONE.into(),
                node_count: *count,
            })
            .collect(),
        job_types: all_job_types(),
        network,
        driver: DriverSpec::default(),
        billing,
        tags: BTreeMap::new(),
    }
}

pub fn prepaid(period_months: u32, auto_renew: bool) -> BillingMode {
    BillingMode::Prepaid {
        period_months,
        auto_renew,
    }
}

//! What the benchmark writes: the job spec of a corral submit (about 256 bytes of
//! protobuf) and the 256-byte value of an etcd put, so both systems commit requests of
//! about the same size.

use corral_client::pb;
use prost::Message;
use std::collections::BTreeMap;

pub const GPU_FLAVOR: &str = "gpu-8x-a100";
pub const ACCELERATOR_TYPE: &str = "nvidia-a100";
pub const ZONE: &str = "zone-a";
/// Nodes registered and claimed by the public pool (8 accelerators each).
pub const NODES: u32 = 8;
/// Bytes of an etcd value.
pub const ETCD_VALUE_BYTES: usize = 256;

pub fn resources(cpu_millicores: u64, memory_mib: u64, accelerators: u32) -> pb::Resources {
    pb::Resources {
        cpu_millicores,
        memory_mib,
        accelerators,
        disk_gib: 100,
        bandwidth_mbps: 1_000,
    }
}

pub fn flavor() -> pb::Flavor {
    pb::Flavor {
        name: GPU_FLAVOR.into(),
        capacity: Some(pb::Resources {
            cpu_millicores: 96_000,
            memory_mib: 1_048_576,
            accelerators: 8,
            disk_gib: 3_500,
            bandwidth_mbps: 100_000,
        }),
        accelerator_type: ACCELERATOR_TYPE.into(),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: 32_000_000,
    }
}

pub fn node(index: u32) -> pb::RegisterNodeRequest {
    pb::RegisterNodeRequest {
        name: format!("gpu-{index:03}"),
        flavor: GPU_FLAVOR.into(),
        zone: ZONE.into(),
        gpu_driver_version: "535.104".into(),
        ..Default::default()
    }
}

pub fn tenant() -> pb::CreateTenantRequest {
    pb::CreateTenantRequest {
        name: "bench".into(),
        quota: Some(pb::Resources {
            cpu_millicores: 1 << 40,
            memory_mib: 1 << 40,
            accelerators: 1 << 30,
            disk_gib: 1 << 40,
            bandwidth_mbps: 1 << 40,
        }),
        may_use_high_priority: false,
        // The restart benchmark holds a million jobs of this one tenant.
        max_active_jobs: 1_000_000,
    }
}

pub fn public_pool() -> pb::CreatePoolRequest {
    pb::CreatePoolRequest {
        name: "public".into(),
        description: "benchmark public pool".into(),
        kind: "public".into(),
        flavors: vec![pb::PoolFlavor {
            flavor: GPU_FLAVOR.into(),
            zone: ZONE.into(),
            node_count: NODES,
        }],
        job_types: vec!["training".into(), "inference".into(), "notebook".into()],
        billing: Some(pb::Billing {
            mode: "pay-per-use".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A one-replica training job asking for one accelerator. `client` and `sequence` make
/// every name distinct; the encoding is about 256 bytes (`spec_bytes`).
pub fn job_spec(pool: u64, client: usize, sequence: u64) -> pb::JobSpec {
    pb::JobSpec {
        name: format!("bench-c{client:03}-{sequence:09}"),
        pool,
        kind: "training".into(),
        replicas: 1,
        per_replica: Some(resources(8_000, 65_536, 1)),
        accelerator_type: ACCELERATOR_TYPE.into(),
        priority: 1,
        command: vec![
            "python".into(),
            "-m".into(),
            "torch.distributed.run".into(),
            "train.py".into(),
            format!("--run=exp-{client:03}-{sequence:09}"),
            "--config=/workspace/llama-7b-finetune.yaml".into(),
        ],
        environment: BTreeMap::from([
            ("DATASET".to_string(), "s3://datasets/corpus-v3".to_string()),
            (
                "CHECKPOINTS".to_string(),
                "s3://checkpoints/run".to_string(),
            ),
        ]),
        retry_limit: 2,
        ..Default::default()
    }
}

/// Encoded size of a typical job spec.
pub fn spec_bytes() -> usize {
    job_spec(1, 7, 123_456).encoded_len()
}

pub fn etcd_value() -> Vec<u8> {
    (0..ETCD_VALUE_BYTES)
        .map(|byte| b'a' + (byte % 26) as u8)
        .collect()
}

pub fn etcd_key(client: usize, sequence: u64) -> Vec<u8> {
    format!("bench/c{client:03}/{sequence:09}").into_bytes()
}

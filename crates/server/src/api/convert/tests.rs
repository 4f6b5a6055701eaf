//! Tests of the conversions as the admin service uses them: job specs round-trip
//! through protobuf for every valid spec, no request makes the conversion panic,
//! malformed requests are `INVALID_ARGUMENT` naming the field, and requests converted
//! here are applied by the real state machine and read back as response messages.

use crate::api::convert;
use corral_model::limits::{
    MAX_AUTO_STOP_MS, MAX_COMMAND_ARGUMENTS, MAX_ENVIRONMENT_VARIABLES, MAX_PRIORITY,
    MAX_RETRY_LIMIT, MAX_RUNTIME_MS, MAX_TOLERATIONS_PER_JOB, MAX_WORKFLOW_STEPS, MIN_PRIORITY,
};
use corral_model::{
    JobKind, JobSpec, PoolId, Principal, Resources, Toleration, WorkflowSpec, WorkflowStep,
};
use corral_state::testing::Fx;
use corral_state::Created;
use corral_wire::pb;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tonic::Code;

// ---------- strategies of valid specs ----------

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]"
}

fn label_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._/=-]{1,20}"
}

fn resources() -> impl Strategy<Value = Resources> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(cpu_millicores, memory_mib, accelerators, disk_gib, bandwidth_mbps)| Resources {
                cpu_millicores,
                memory_mib,
                accelerators,
                disk_gib,
                bandwidth_mbps,
            },
        )
}

fn toleration() -> impl Strategy<Value = Toleration> {
    (label_text(), option::of(label_text())).prop_map(|(key, value)| Toleration { key, value })
}

/// Training, inference or notebook, with their settings in range.
fn step_kind() -> impl Strategy<Value = JobKind> {
    prop_oneof![
        (1..=MAX_RETRY_LIMIT).prop_map(|retry_limit| JobKind::Training { retry_limit }),
        Just(JobKind::Inference),
        option::of(1..=MAX_AUTO_STOP_MS)
            .prop_map(|auto_stop_after_ms| JobKind::Notebook { auto_stop_after_ms }),
    ]
}

fn spec_of(
    kind: impl Strategy<Value = JobKind>,
    pool: impl Strategy<Value = u64>,
) -> impl Strategy<Value = JobSpec> {
    let identity = (name(), pool, kind, any::<u32>(), resources());
    let settings = (
        option::of(label_text()),
        MIN_PRIORITY..=MAX_PRIORITY,
        vec("[ -~]{0,30}", 0..4),
        btree_map("[A-Z_][A-Z0-9_]{0,10}", "[ -~]{0,20}", 0..4),
        btree_map(label_text(), label_text(), 0..4),
        vec(toleration(), 0..3),
        option::of(1..=MAX_RUNTIME_MS),
        // Lower case: never the name of a plain variable above.
        btree_map("s[a-z0-9_]{0,10}", "[ -~]{1,20}", 0..3),
        option::of(name()),
    );
    (identity, settings).prop_map(
        |(
            (name, pool, kind, replicas, per_replica),
            (
                accelerator_type,
                priority,
                command,
                environment,
                node_selector,
                tolerations,
                max_runtime_ms,
                secret_environment,
                queue,
            ),
        )| JobSpec {
            name,
            pool: PoolId(pool),
            kind,
            replicas,
            per_replica,
            accelerator_type,
            priority,
            command,
            environment,
            secret_environment,
            node_selector,
            tolerations,
            max_runtime_ms,
            queue,
        },
    )
}

/// A step names a pool unless it runs in the public pool.
fn workflow_step() -> impl Strategy<Value = WorkflowStep> {
    (
        name(),
        vec(0..MAX_WORKFLOW_STEPS, 0..4),
        spec_of(step_kind(), 0..50u64),
        any::<bool>(),
    )
        .prop_map(|(name, depends_on, spec, use_public_pool)| WorkflowStep {
            name,
            depends_on,
            use_public_pool: use_public_pool || spec.pool == PoolId(0),
            spec,
        })
}

fn valid_spec() -> impl Strategy<Value = JobSpec> {
    let workflow_kind =
        vec(workflow_step(), 1..5).prop_map(|steps| JobKind::Workflow(WorkflowSpec { steps }));
    prop_oneof![
        3 => spec_of(step_kind(), 1..u64::MAX),
        1 => spec_of(workflow_kind, any::<u64>()),
    ]
}

/// Arbitrary protobuf specs, valid or not (about a fifth accepted), with workflow steps
/// nested once.
fn any_proto_spec() -> impl Strategy<Value = pb::JobSpec> {
    let step = (
        ".{0,8}",
        vec(any::<u32>(), 0..3),
        option::of(flat_proto_spec()),
        any::<bool>(),
    );
    let steps = prop_oneof![1 => Just(Vec::new()), 6 => vec(step, 1..3)];
    // Steps mostly go with the workflow kind, and sometimes with another.
    let mismatched = proptest::bool::weighted(0.1);
    (flat_proto_spec(), steps, mismatched).prop_map(|(mut spec, steps, mismatched)| {
        if (spec.kind == "workflow") != mismatched {
            spec.steps = steps
                .into_iter()
                .map(
                    |(name, depends_on, spec, use_public_pool)| pb::WorkflowStep {
                        name,
                        depends_on,
                        spec,
                        use_public_pool,
                    },
                )
                .collect();
        }
        spec
    })
}

/// Mostly zero, sometimes anything.
fn mostly_zero<T: Arbitrary + From<u8> + Clone + std::fmt::Debug + 'static>(
) -> impl Strategy<Value = T> {
    prop_oneof![6 => Just(T::from(0u8)), 1 => any::<T>()]
}

fn flat_proto_spec() -> impl Strategy<Value = pb::JobSpec> {
    let kinds = prop_oneof![
        2 => Just("training".to_string()),
        2 => Just("Inference".to_string()),
        2 => Just("notebook".to_string()),
        1 => Just("workflow".to_string()),
        1 => ".{0,12}",
    ];
    let numbers = (
        prop_oneof![3 => 1..u64::MAX, 1 => Just(0u64)],
        any::<u32>(),
        0..5u32,
        mostly_zero::<u64>(),
        mostly_zero::<u32>(),
        mostly_zero::<u64>(),
    );
    let texts = (
        ".{0,40}",
        prop_oneof![6 => ".{0,20}", 1 => ".{100,140}"],
        prop_oneof![4 => vec(".{0,10}", 0..4), 1 => vec(".{0,10}", 60..70)],
        prop_oneof![4 => vec((".{0,5}", ".{0,5}"), 0..4), 1 => vec((".{0,5}", ".{0,5}"), 14..20)],
    );
    (kinds, numbers, texts).prop_map(
        |(
            kind,
            (pool, replicas, priority, max_runtime_ms, retry_limit, auto_stop_after_ms),
            (name, accelerator_type, command, tolerations),
        )| {
            pb::JobSpec {
                name,
                pool,
                kind,
                replicas,
                per_replica: None,
                accelerator_type,
                priority,
                command,
                environment: BTreeMap::new(),
                secret_environment: BTreeMap::new(),
                node_selector: BTreeMap::new(),
                tolerations: tolerations
                    .into_iter()
                    .map(|(key, value)| pb::Toleration { key, value })
                    .collect(),
                max_runtime_ms,
                retry_limit,
                auto_stop_after_ms,
                steps: vec![],
                queue: String::new(),
            }
        },
    )
}

/// `job_spec_from_proto` with the error as its message, for comparisons.
fn spec_from_proto(proto: &pb::JobSpec) -> Result<JobSpec, String> {
    convert::job_spec_from_proto(proto).map_err(|status| status.message().to_string())
}

proptest! {
    #[test]
    fn valid_specs_round_trip(spec in valid_spec()) {
        let proto = convert::job_spec_to_proto_with(&spec, convert::Secrets::Revealed);
        prop_assert_eq!(spec_from_proto(&proto), Ok(spec));
    }

    /// What listings show holds no secret value, at any depth of a workflow.
    #[test]
    fn listed_specs_hold_no_secret_value(spec in valid_spec()) {
        fn secrets(spec: &JobSpec, into: &mut Vec<String>) {
            into.extend(spec.secret_environment.values().cloned());
            if let JobKind::Workflow(workflow) = &spec.kind {
                for step in &workflow.steps {
                    secrets(&step.spec, into);
                }
            }
        }
        fn shown(spec: &pb::JobSpec, into: &mut Vec<String>) {
            into.extend(spec.secret_environment.values().cloned());
            for step in &spec.steps {
                if let Some(step) = &step.spec {
                    shown(step, into);
                }
            }
        }
        let mut hidden = Vec::new();
        secrets(&spec, &mut hidden);
        let mut listed = Vec::new();
        shown(&convert::job_spec_to_proto(&spec), &mut listed);
        prop_assert_eq!(listed.len(), hidden.len());
        prop_assert!(listed.iter().all(|value| value == convert::REDACTED));
    }

    #[test]
    fn any_spec_converts_or_is_an_invalid_argument(proto in any_proto_spec()) {
        match convert::job_spec_from_proto(&proto) {
            Ok(spec) => {
                // What was accepted converts back to a spec that converts to itself.
                let again = convert::job_spec_to_proto(&spec);
                prop_assert_eq!(spec_from_proto(&again), Ok(spec));
            }
            Err(status) => {
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                prop_assert!(status.message().starts_with("invalid "), "{}", status.message());
                prop_assert!(status.message().len() < 400, "{}", status.message());
            }
        }
    }
}

// ---------- job spec rules ----------

fn training_proto() -> pb::JobSpec {
    pb::JobSpec {
        name: "train".into(),
        pool: 1,
        kind: "training".into(),
        replicas: 2,
        per_replica: Some(pb::Resources {
            cpu_millicores: 1_000,
            memory_mib: 1_024,
            ..Default::default()
        }),
        command: vec!["python".into(), "train.py".into()],
        ..Default::default()
    }
}

fn workflow_proto(steps: Vec<pb::WorkflowStep>) -> pb::JobSpec {
    pb::JobSpec {
        name: "flow".into(),
        pool: 0,
        kind: "workflow".into(),
        steps,
        ..Default::default()
    }
}

fn step(spec: pb::JobSpec) -> pb::WorkflowStep {
    pb::WorkflowStep {
        name: "prepare".into(),
        depends_on: vec![],
        spec: Some(spec),
        use_public_pool: false,
    }
}

#[track_caller]
fn assert_invalid(spec: &pb::JobSpec, field_prefix: &str) {
    let status = convert::job_spec_from_proto(spec).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let expected = format!("invalid {field_prefix}");
    assert!(
        status.message().starts_with(&expected),
        "expected '{expected}...', got '{}'",
        status.message()
    );
}

#[test]
fn protobuf_defaults_are_the_model_defaults() {
    let spec = convert::job_spec_from_proto(&training_proto()).unwrap();
    assert_eq!(spec.kind, JobKind::Training { retry_limit: 1 });
    assert_eq!(spec.priority, 1);
    assert_eq!((spec.max_runtime_ms, spec.accelerator_type), (None, None));
    let notebook = pb::JobSpec {
        kind: "notebook".into(),
        replicas: 1,
        ..training_proto()
    };
    assert_eq!(
        convert::job_spec_from_proto(&notebook).unwrap().kind,
        JobKind::Notebook {
            auto_stop_after_ms: None
        }
    );
    let wildcard = pb::JobSpec {
        tolerations: vec![pb::Toleration {
            key: "gpu".into(),
            value: String::new(),
        }],
        ..training_proto()
    };
    assert_eq!(
        convert::job_spec_from_proto(&wildcard).unwrap().tolerations,
        vec![Toleration {
            key: "gpu".into(),
            value: None
        }]
    );
}

#[test]
fn invalid_job_specs_name_the_field() {
    assert_invalid(
        &pb::JobSpec {
            kind: "batch".into(),
            ..training_proto()
        },
        "kind:",
    );
    assert_invalid(
        &pb::JobSpec {
            kind: String::new(),
            ..training_proto()
        },
        "kind:",
    );
    assert_invalid(
        &pb::JobSpec {
            pool: 0,
            ..training_proto()
        },
        "pool:",
    );
    assert_invalid(
        &pb::JobSpec {
            priority: 4,
            ..training_proto()
        },
        "priority:",
    );
    assert_invalid(
        &pb::JobSpec {
            priority: 300,
            ..training_proto()
        },
        "priority:",
    );
    assert_invalid(
        &pb::JobSpec {
            kind: "inference".into(),
            retry_limit: 2,
            ..training_proto()
        },
        "retry_limit:",
    );
    assert_invalid(
        &pb::JobSpec {
            auto_stop_after_ms: 5,
            ..training_proto()
        },
        "auto_stop_after_ms:",
    );
    assert_invalid(
        &pb::JobSpec {
            steps: vec![step(training_proto())],
            ..training_proto()
        },
        "steps:",
    );
    assert_invalid(&workflow_proto(vec![]), "steps:");
    assert_invalid(
        &workflow_proto(vec![step(workflow_proto(vec![step(training_proto())]))]),
        "steps[0].spec.kind:",
    );
    assert_invalid(
        &workflow_proto(vec![
            step(training_proto()),
            step(pb::JobSpec {
                pool: 0,
                ..training_proto()
            }),
        ]),
        "steps[1].spec.pool:",
    );
    assert_invalid(
        &workflow_proto(vec![pb::WorkflowStep {
            spec: None,
            ..step(training_proto())
        }]),
        "steps[0].spec:",
    );
    assert_invalid(
        &workflow_proto(vec![step(pb::JobSpec {
            kind: "training ".into(),
            ..training_proto()
        })]),
        "steps[0].spec.kind:",
    );
    let public_step = pb::WorkflowStep {
        use_public_pool: true,
        ..step(pb::JobSpec {
            pool: 0,
            ..training_proto()
        })
    };
    assert!(convert::job_spec_from_proto(&workflow_proto(vec![public_step])).is_ok());
}

#[test]
fn secret_variables_are_named_apart_and_bounded_with_the_plain_ones() {
    let mut both = training_proto();
    both.environment.insert("TOKEN".into(), "plain".into());
    both.secret_environment
        .insert("TOKEN".into(), "secret".into());
    assert_invalid(&both, "secret_environment");
    let mut too_many = training_proto();
    for number in 0..MAX_ENVIRONMENT_VARIABLES {
        too_many
            .environment
            .insert(format!("PLAIN_{number}"), "x".into());
    }
    too_many
        .secret_environment
        .insert("ONE_MORE".into(), "x".into());
    assert_invalid(&too_many, "secret_environment");
    let mut fine = training_proto();
    fine.secret_environment
        .insert("HF_TOKEN".into(), "hf_abc".into());
    let spec = convert::job_spec_from_proto(&fine).unwrap();
    assert_eq!(spec.secret_environment["HF_TOKEN"], "hf_abc");
    assert_eq!(
        convert::job_spec_to_proto(&spec).secret_environment["HF_TOKEN"],
        convert::REDACTED
    );
}

#[test]
fn oversize_job_spec_lists_are_refused() {
    let arguments = vec!["x".to_string(); MAX_COMMAND_ARGUMENTS + 1];
    assert_invalid(
        &pb::JobSpec {
            command: arguments,
            ..training_proto()
        },
        "command:",
    );
    assert_invalid(
        &pb::JobSpec {
            command: vec!["x".repeat(1 << 20)],
            ..training_proto()
        },
        "command[0]:",
    );
    let environment = (0..=MAX_ENVIRONMENT_VARIABLES)
        .map(|index| (format!("V{index}"), String::new()))
        .collect();
    assert_invalid(
        &pb::JobSpec {
            environment,
            ..training_proto()
        },
        "environment:",
    );
    let tolerations = vec![
        pb::Toleration {
            key: "k".into(),
            value: String::new()
        };
        MAX_TOLERATIONS_PER_JOB + 1
    ];
    assert_invalid(
        &pb::JobSpec {
            tolerations,
            ..training_proto()
        },
        "tolerations:",
    );
    assert_invalid(
        &pb::JobSpec {
            name: "n".repeat(65),
            ..training_proto()
        },
        "name:",
    );
    let steps = vec![step(training_proto()); MAX_WORKFLOW_STEPS + 1];
    assert_invalid(&workflow_proto(steps), "steps:");
    let dependencies = pb::WorkflowStep {
        depends_on: vec![0; 17],
        ..step(training_proto())
    };
    assert_invalid(&workflow_proto(vec![dependencies]), "steps[0].depends_on:");
}

// ---------- through the state machine and back ----------

fn gpu_flavor() -> pb::Flavor {
    pb::Flavor {
        name: "gpu-a100-8".into(),
        capacity: Some(pb::Resources {
            cpu_millicores: 64_000,
            memory_mib: 512 * 1024,
            accelerators: 8,
            disk_gib: 2_000,
            bandwidth_mbps: 25_000,
        }),
        accelerator_type: "nvidia-a100".into(),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: 8_000_000,
    }
}

#[test]
fn converted_requests_apply_and_read_back() {
    let admin = Principal::PlatformAdmin;
    // The state kit's driver applies with increasing indexes and times, as the raft
    // log would, and checks the invariants after every entry.
    let mut log = Fx::new();
    let tenant_request = pb::CreateTenantRequest {
        name: "team-a".into(),
        quota: Some(pb::Resources {
            cpu_millicores: 1_000_000,
            memory_mib: 1 << 30,
            accelerators: 64,
            disk_gib: 1 << 20,
            bandwidth_mbps: 1 << 30,
        }),
        may_use_high_priority: false,
        max_active_jobs: 0,
    };
    let Some(Created::Tenant(tenant)) = log
        .ok(
            admin.clone(),
            convert::command_from_create_tenant(&tenant_request).unwrap(),
        )
        .created
    else {
        panic!("no tenant created");
    };
    let user = Principal::TenantUser(tenant);
    log.ok(
        admin.clone(),
        convert::command_from_define_flavor(&gpu_flavor()).unwrap(),
    );
    for host in ["host-1", "host-2"] {
        let register = pb::RegisterNodeRequest {
            name: host.into(),
            flavor: "gpu-a100-8".into(),
            zone: "zone-a".into(),
            taints: vec![pb::Taint {
                key: "gpu".into(),
                value: "a100".into(),
                effect: "NoSchedule".into(),
            }],
            ..Default::default()
        };
        log.ok(
            Principal::PlatformAdmin,
            convert::command_from_register_node(&register).unwrap(),
        );
    }
    let network_request = pb::CreateNetworkRequest {
        tenant: 0,
        name: "net-a".into(),
        cidr: "192.168.0.0/24".into(),
    };
    let Some(Created::Network(network)) = log
        .ok(
            user.clone(),
            convert::command_from_create_network(&network_request, &user).unwrap(),
        )
        .created
    else {
        panic!("no network created");
    };
    let pool_request = pb::CreatePoolRequest {
        name: "pool-a".into(),
        kind: "dedicated".into(),
        flavors: vec![pb::PoolFlavor {
            flavor: "gpu-a100-8".into(),
            zone: "zone-a".into(),
            node_count: 2,
        }],
        job_types: vec!["training".into()],
        network: network.0,
        ..Default::default()
    };
    let Some(Created::Pool(pool_id)) = log
        .ok(
            user.clone(),
            convert::command_from_create_pool(&pool_request, &user).unwrap(),
        )
        .created
    else {
        panic!("no pool created");
    };
    let job_request = pb::SubmitJobRequest {
        spec: Some(pb::JobSpec {
            pool: pool_id.0,
            per_replica: Some(pb::Resources {
                cpu_millicores: 8_000,
                memory_mib: 64 * 1024,
                accelerators: 2,
                ..Default::default()
            }),
            accelerator_type: "nvidia-a100".into(),
            tolerations: vec![pb::Toleration {
                key: "gpu".into(),
                value: String::new(),
            }],
            ..training_proto()
        }),
    };
    let Some(Created::Job(job)) = log
        .ok(
            user.clone(),
            convert::command_from_submit_job(&job_request).unwrap(),
        )
        .created
    else {
        panic!("no job submitted");
    };

    let state = &log.state;
    let pool = convert::pool_to_proto(state.pool(pool_id).unwrap(), state);
    assert_eq!(
        (pool.kind.as_str(), pool.owner, pool.status.as_str()),
        ("dedicated", tenant.0, "Running")
    );
    assert_eq!((pool.node_count, pool.queued_jobs), (2, 1));
    assert_eq!(pool.capacity.unwrap().accelerators, 16);
    assert_eq!(pool.allocated.unwrap().accelerators, 0);
    assert_eq!(pool.job_types, vec!["training"]);
    assert_eq!(pool.billing.unwrap().mode, "pay-per-use");

    let node = convert::node_to_proto(state.nodes().next().unwrap());
    assert_eq!(node.pool, pool_id.0);
    assert!(
        node.ip_address.starts_with("192.168.0."),
        "{}",
        node.ip_address
    );
    assert_eq!(node.taints[0].effect, "NoSchedule");

    let view = state.get_job(&user, job).unwrap();
    let proto_job = convert::job_view_to_proto(&view);
    assert_eq!(
        (proto_job.state.as_str(), proto_job.queue_position),
        ("Pending", 0)
    );
    assert_eq!(
        proto_job.spec.as_ref().map(|spec| spec.kind.as_str()),
        Some("training")
    );
    assert_eq!(
        convert::job_spec_from_proto(proto_job.spec.as_ref().unwrap()).unwrap(),
        view.job.spec
    );
    assert_eq!(proto_job.replicas.len(), 2);
    assert!(proto_job
        .replicas
        .iter()
        .all(|replica| replica.state == "Unplaced" && replica.node == 0));

    let network = convert::network_to_proto(state.network(network).unwrap());
    assert_eq!(
        (network.cidr.as_str(), network.addresses_in_use),
        ("192.168.0.0/24", 2)
    );
    let tenant_proto = convert::tenant_to_proto(state.tenant(tenant).unwrap());
    assert_eq!(tenant_proto.name, "team-a");
    let events: Vec<pb::Event> = state.events().map(convert::event_to_proto).collect();
    assert!(events
        .iter()
        .any(|event| event.kind == "PoolCreated" && event.tenant == tenant.0));
    assert!(events
        .iter()
        .any(|event| event.kind == "NodeRegistered" && event.tenant == 0));

    // A request the state machine refuses comes back with the contract's code.
    let duplicate = convert::command_from_create_pool(&pool_request, &user).unwrap();
    let rejection = log.reject(user, duplicate);
    let status = convert::rejection_to_status(&rejection);
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        status
            .metadata()
            .get(corral_wire::headers::REJECTION_HEADER)
            .and_then(|value| value.to_str().ok()),
        Some("already_exists")
    );
}

#[test]
fn the_node_running_a_replica_gets_its_secret_values() {
    use corral_state::testing::{training, World};
    let mut world = World::new();
    let (alpha, public, node) = (world.alpha, world.public, world.public_gpus[0]);
    let mut spec = training(public, 1, 1);
    spec.environment.insert("EPOCHS".into(), "3".into());
    spec.secret_environment
        .insert("HF_TOKEN".into(), "hf_secret".into());
    let job = world.submit(alpha, spec);
    world.place_on(job, &[node]);
    let assignments = convert::node_assignments(&world.state, node).expect("the node exists");
    let replica = &assignments.replicas[0];
    assert_eq!(replica.environment["HF_TOKEN"], "hf_secret");
    assert_eq!(replica.environment["EPOCHS"], "3");
    // Everyone else reads it redacted.
    let view = world
        .state
        .get_job(&Principal::PlatformAdmin, job)
        .expect("the job");
    let listed = convert::job_view_to_proto(&view);
    assert_eq!(
        listed.spec.expect("a spec").secret_environment["HF_TOKEN"],
        convert::REDACTED
    );
}

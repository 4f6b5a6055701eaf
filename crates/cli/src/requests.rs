//! Building API requests from parsed arguments (no IO except reading `--file`).

use crate::cli::{
    BillingArg, JobKindArg, JobSubmitArgs, JobTypeArg, PoolCreateArgs, PoolKindArg, ResourceArgs,
    TokenRoleArg, UpgradeModeArg,
};
use crate::exit::CliError;
use corral_client::pb;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Per-replica CPU when `--cpu-millicores` is not given.
pub const DEFAULT_CPU_MILLICORES: u64 = 1_000;
/// Per-replica memory when `--memory-mib` is not given.
pub const DEFAULT_MEMORY_MIB: u64 = 4_096;

/// A `--file` larger than this is refused.
const MAX_SPEC_FILE_BYTES: u64 = 4 * 1024 * 1024;

pub fn resources(args: &ResourceArgs) -> pb::Resources {
    pb::Resources {
        cpu_millicores: args.cpu_millicores,
        memory_mib: args.memory_mib,
        accelerators: args.accelerators,
        disk_gib: args.disk_gib,
        bandwidth_mbps: args.bandwidth_mbps,
    }
}

pub fn token_role(role: TokenRoleArg) -> pb::TokenRole {
    match role {
        TokenRoleArg::PlatformAdmin => pb::TokenRole::PlatformAdmin,
        TokenRoleArg::PlatformAuditor => pb::TokenRole::PlatformAuditor,
        TokenRoleArg::Admin => pb::TokenRole::Admin,
        TokenRoleArg::Operator => pb::TokenRole::Operator,
        TokenRoleArg::Viewer => pb::TokenRole::Viewer,
        TokenRoleArg::NodeBootstrap => pb::TokenRole::NodeBootstrap,
    }
}

pub fn job_type(job_type: JobTypeArg) -> &'static str {
    match job_type {
        JobTypeArg::Training => "training",
        JobTypeArg::Inference => "inference",
        JobTypeArg::Notebook => "notebook",
    }
}

/// Job types as the API names them, sorted, without repeats.
pub fn job_types(types: &[JobTypeArg]) -> Vec<String> {
    let mut types = types.to_vec();
    types.sort();
    types.dedup();
    types
        .into_iter()
        .map(|kind| job_type(kind).to_string())
        .collect()
}

pub fn upgrade_mode(mode: UpgradeModeArg) -> &'static str {
    match mode {
        UpgradeModeArg::Secure => "secure",
        UpgradeModeArg::Forcible => "forcible",
    }
}

/// A map from `KEY=VALUE` pairs; a key given twice is a usage error.
pub fn string_map(
    flag: &str,
    pairs: &[(String, String)],
) -> Result<BTreeMap<String, String>, CliError> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(CliError::usage(format!("{flag} {key} is given twice")));
        }
    }
    Ok(map)
}

pub fn driver(gpu: &Option<String>, npu: &Option<String>) -> pb::DriverSpec {
    pb::DriverSpec {
        gpu_driver_version: gpu.clone().unwrap_or_default(),
        npu_driver_version: npu.clone().unwrap_or_default(),
    }
}

pub fn create_pool(args: &PoolCreateArgs) -> Result<pb::CreatePoolRequest, CliError> {
    let billing = match args.billing {
        BillingArg::PayPerUse => {
            if args.period_months.is_some() || args.auto_renew {
                return Err(CliError::usage(
                    "--period-months and --auto-renew apply only to --billing prepaid",
                ));
            }
            pb::Billing {
                mode: "pay-per-use".into(),
                period_months: 0,
                auto_renew: false,
            }
        }
        BillingArg::Prepaid => pb::Billing {
            mode: "prepaid".into(),
            period_months: args
                .period_months
                .ok_or_else(|| CliError::usage("--billing prepaid needs --period-months"))?,
            auto_renew: args.auto_renew,
        },
    };
    Ok(pb::CreatePoolRequest {
        name: args.name.clone(),
        description: args.description.clone(),
        kind: match args.kind {
            PoolKindArg::Dedicated => "dedicated".into(),
            PoolKindArg::Public => "public".into(),
        },
        owner: args.owner.unwrap_or(0),
        flavors: args.flavors.clone(),
        job_types: job_types(&args.job_types),
        network: args.network.unwrap_or(0),
        driver: Some(driver(&args.gpu_driver, &args.npu_driver)),
        billing: Some(billing),
        tags: string_map("--tag", &args.tags)?,
    })
}

/// The spec `corral job submit` sends: from `--file` (with `--name`/`--pool`
/// overriding it) or from the flags.
pub fn job_spec(args: &JobSubmitArgs) -> Result<pb::JobSpec, CliError> {
    let mut spec = match &args.file {
        Some(path) => read_job_spec(path)?,
        None => job_spec_from_flags(args)?,
    };
    if let Some(name) = &args.name {
        spec.name = name.clone();
    }
    if let Some(pool) = args.pool {
        spec.pool = pool;
    }
    if let Some(queue) = &args.queue {
        spec.queue = queue.clone();
    }
    Ok(spec)
}

fn job_spec_from_flags(args: &JobSubmitArgs) -> Result<pb::JobSpec, CliError> {
    let flags = &args.spec;
    let kind = flags.kind.unwrap_or(JobKindArg::Training);
    if flags.retry_limit.is_some() && kind != JobKindArg::Training {
        return Err(CliError::usage(
            "--retry-limit applies only to --kind training",
        ));
    }
    if flags.auto_stop_ms.is_some() && kind != JobKindArg::Notebook {
        return Err(CliError::usage(
            "--auto-stop-ms applies only to --kind notebook",
        ));
    }
    // A replica always needs some CPU and memory; default to one core and 4 GiB.
    let per_replica = pb::Resources {
        cpu_millicores: flags.cpu_millicores.unwrap_or(DEFAULT_CPU_MILLICORES),
        memory_mib: flags.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
        accelerators: flags.accelerators.unwrap_or(0),
        disk_gib: flags.disk_gib.unwrap_or(0),
        bandwidth_mbps: flags.bandwidth_mbps.unwrap_or(0),
    };
    Ok(pb::JobSpec {
        name: String::new(),
        pool: 0,
        kind: match kind {
            JobKindArg::Training => "training",
            JobKindArg::Inference => "inference",
            JobKindArg::Notebook => "notebook",
        }
        .into(),
        replicas: flags.replicas.unwrap_or(1),
        per_replica: Some(per_replica),
        accelerator_type: flags.accelerator_type.clone().unwrap_or_default(),
        priority: flags.priority.unwrap_or(0),
        command: flags.command.clone(),
        environment: string_map("--env", &flags.env)?,
        secret_environment: string_map("--secret-env", &flags.secret_env)?,
        node_selector: string_map("--selector", &flags.selectors)?,
        tolerations: flags.tolerations.clone(),
        max_runtime_ms: flags.max_runtime_ms.unwrap_or(0),
        queue: String::new(),
        retry_limit: flags.retry_limit.unwrap_or(0),
        auto_stop_after_ms: flags.auto_stop_ms.unwrap_or(0),
        steps: Vec::new(),
    })
}

/// A JobSpec from a JSON file, or stdin for `-`.
pub fn read_job_spec(path: &Path) -> Result<pb::JobSpec, CliError> {
    let shown = path.display();
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_SPEC_FILE_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_SPEC_FILE_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|error| CliError::usage(format!("cannot read {shown}: {error}")))?;
    if text.len() as u64 > MAX_SPEC_FILE_BYTES {
        return Err(CliError::usage(format!(
            "{shown} is larger than {} MiB",
            MAX_SPEC_FILE_BYTES / 1024 / 1024
        )));
    }
    parse_job_spec(&text).map_err(|error| CliError::usage(format!("{shown}: {error}")))
}

/// A JobSpec from JSON text; the error names the line and column.
pub fn parse_job_spec(text: &str) -> Result<pb::JobSpec, String> {
    serde_json::from_str(text).map_err(|error| format!("not a valid JobSpec: {error}"))
}

/// `--count` copies of `spec`.
pub fn copies(spec: pb::JobSpec, count: u32) -> Vec<pb::JobSpec> {
    vec![spec; count as usize]
}

/// A drain deadline: absolute, or `grace_ms` after `now_ms`; none if neither is given.
pub fn drain_deadline(deadline_ms: Option<u64>, grace_ms: Option<u64>, now_ms: u64) -> u64 {
    match (deadline_ms, grace_ms) {
        (Some(deadline), _) => deadline,
        (None, Some(grace)) => now_ms.saturating_add(grace),
        (None, None) => 0,
    }
}

/// A queue create or update: what the guarantee leaves out is 0, what the limit leaves
/// out has no bound (the largest value).
pub fn queue_spec(args: &crate::cli::QueueArgs) -> pb::QueueSpec {
    let unbounded = pb::Resources {
        cpu_millicores: u64::MAX,
        memory_mib: u64::MAX,
        accelerators: u32::MAX,
        disk_gib: u64::MAX,
        bandwidth_mbps: u64::MAX,
    };
    pb::QueueSpec {
        pool: args.pool,
        name: args.name.clone(),
        guarantee: Some(args.guarantee.to_proto(&pb::Resources::default())),
        limit: Some(args.limit.to_proto(&unbounded)),
        weight: args.weight,
        members: args.members.clone(),
        is_default: args.default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, JobCommand, PoolCommand};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("corral").chain(args.iter().copied()))
    }

    fn submit_args(args: &[&str]) -> JobSubmitArgs {
        let mut full = vec!["job", "submit"];
        full.extend_from_slice(args);
        match parse(&full)
            .unwrap_or_else(|error| panic!("{error}"))
            .command
        {
            Command::Job(JobCommand::Submit(args)) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn pool_create_args(args: &[&str]) -> PoolCreateArgs {
        let mut full = vec!["pool", "create"];
        full.extend_from_slice(args);
        match parse(&full)
            .unwrap_or_else(|error| panic!("{error}"))
            .command
        {
            Command::Pool(PoolCommand::Create(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn job_submit_flags_build_a_spec() {
        let args = submit_args(&[
            "--name",
            "resnet",
            "--pool",
            "pool-3",
            "--replicas",
            "2",
            "--cpu-millicores",
            "4000",
            "--memory-mib",
            "8192",
            "--accelerators",
            "8",
            "--accelerator-type",
            "nvidia-a100",
            "--priority",
            "2",
            "--retry-limit",
            "3",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--selector",
            "rack=r1",
            "--toleration",
            "gpu",
            "--",
            "python",
            "train.py",
            "--epochs",
            "3",
        ]);
        let spec = job_spec(&args).unwrap();
        assert_eq!(spec.name, "resnet");
        assert_eq!(spec.pool, 3);
        assert_eq!(spec.kind, "training");
        assert_eq!(spec.replicas, 2);
        let per_replica = spec.per_replica.unwrap();
        assert_eq!(
            (
                per_replica.cpu_millicores,
                per_replica.memory_mib,
                per_replica.accelerators
            ),
            (4000, 8192, 8)
        );
        assert_eq!(spec.accelerator_type, "nvidia-a100");
        assert_eq!((spec.priority, spec.retry_limit), (2, 3));
        assert_eq!(spec.environment["B"], "x=y");
        assert_eq!(spec.node_selector["rack"], "r1");
        assert_eq!(
            spec.tolerations,
            vec![pb::Toleration {
                key: "gpu".into(),
                value: String::new()
            }]
        );
        assert_eq!(spec.command, ["python", "train.py", "--epochs", "3"]);
        assert_eq!(args.count, 1);
    }

    #[test]
    fn job_submit_defaults_and_kind_specific_flags() {
        let spec = job_spec(&submit_args(&["--name", "n", "--pool", "1"])).unwrap();
        assert_eq!(
            (
                spec.kind.as_str(),
                spec.replicas,
                spec.priority,
                spec.retry_limit
            ),
            ("training", 1, 0, 0)
        );
        let error = job_spec(&submit_args(&[
            "--name",
            "n",
            "--pool",
            "1",
            "--kind",
            "inference",
            "--retry-limit",
            "2",
        ]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "--retry-limit applies only to --kind training"
        );
        let spec = job_spec(&submit_args(&[
            "--name",
            "n",
            "--pool",
            "1",
            "--kind",
            "notebook",
            "--auto-stop-ms",
            "60000",
        ]))
        .unwrap();
        assert_eq!(spec.auto_stop_after_ms, 60_000);
        let error = job_spec(&submit_args(&[
            "--name", "n", "--pool", "1", "--env", "A=1", "--env", "A=2",
        ]))
        .unwrap_err();
        assert_eq!(error.to_string(), "--env A is given twice");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn job_submit_usage_errors_are_caught_by_the_parser() {
        for bad in [
            &["--pool", "1"][..],                               // no --name
            &["--name", "n"],                                   // no --pool
            &["--name", "n", "--pool", "job-1"],                // wrong id kind
            &["--name", "n", "--pool", "1", "--env", "A"],      // not KEY=VALUE
            &["--name", "n", "--pool", "1", "--priority", "4"], // out of range
            &["--name", "n", "--pool", "1", "--kind", "batch"], // unknown kind
            &["--name", "n", "--pool", "1", "--count", "0"],    // no copies
            &["--file", "spec.json", "--replicas", "2"],        // file and spec flags
        ] {
            let mut full = vec!["job", "submit"];
            full.extend_from_slice(bad);
            let error = parse(&full).expect_err(&format!("{bad:?} should not parse"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn job_specs_come_from_json_files_with_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(
            &path,
            r#"{"name": "flow", "kind": "workflow", "steps": [
                 {"name": "prep", "use_public_pool": true, "spec": {"kind": "training", "command": ["prep"]}},
                 {"name": "train", "depends_on": [0], "spec": {"kind": "training", "pool": 3}}]}"#,
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let spec = job_spec(&submit_args(&["--file", file, "--count", "3"])).unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.kind.as_str(), spec.steps.len()),
            ("flow", "workflow", 2)
        );
        assert_eq!(spec.steps[1].depends_on, [0]);
        assert_eq!(spec.steps[1].spec.as_ref().unwrap().pool, 3);
        let spec = job_spec(&submit_args(&[
            "--file", file, "--name", "other", "--pool", "pool-9",
        ]))
        .unwrap();
        assert_eq!((spec.name.as_str(), spec.pool), ("other", 9));
        assert_eq!(copies(spec, 3).len(), 3);

        let error = parse_job_spec(r#"{"name": "x", "replica": 2}"#).unwrap_err();
        assert!(error.contains("unknown field `replica`"), "{error}");
        assert!(parse_job_spec(r#"{"pool": "pool-3"}"#).is_err());
        let missing = job_spec(&submit_args(&["--file", "/nonexistent/spec.json"])).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read /nonexistent/spec.json:"),
            "{missing}"
        );
        assert_eq!(missing.exit_code(), 2);
    }

    #[test]
    fn pool_create_flags_build_a_request() {
        let request = create_pool(&pool_create_args(&[
            "--name",
            "train-a",
            "--owner",
            "tenant-2",
            "--flavor",
            "gpu8:az1:2",
            "--flavor",
            "cpu:az2:1",
            "--job-types",
            "training,notebook,training",
            "--network",
            "net-4",
            "--billing",
            "prepaid",
            "--period-months",
            "3",
            "--auto-renew",
            "--gpu-driver",
            "535",
            "--tag",
            "team=ml",
        ]))
        .unwrap();
        assert_eq!(request.name, "train-a");
        assert_eq!(request.kind, "dedicated");
        assert_eq!(request.owner, 2);
        assert_eq!(request.flavors.len(), 2);
        assert_eq!(
            request.flavors[0],
            pb::PoolFlavor {
                flavor: "gpu8".into(),
                zone: "az1".into(),
                node_count: 2
            }
        );
        assert_eq!(request.job_types, ["training", "notebook"]);
        assert_eq!(request.network, 4);
        assert_eq!(
            request.billing,
            Some(pb::Billing {
                mode: "prepaid".into(),
                period_months: 3,
                auto_renew: true
            })
        );
        assert_eq!(request.driver.unwrap().gpu_driver_version, "535");
        assert_eq!(request.tags["team"], "ml");

        let defaults = create_pool(&pool_create_args(&["--name", "p"])).unwrap();
        assert_eq!(defaults.job_types, ["training", "inference", "notebook"]);
        assert_eq!(defaults.billing.unwrap().mode, "pay-per-use");

        let error =
            create_pool(&pool_create_args(&["--name", "p", "--period-months", "2"])).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error =
            create_pool(&pool_create_args(&["--name", "p", "--billing", "prepaid"])).unwrap_err();
        assert_eq!(error.to_string(), "--billing prepaid needs --period-months");
        let error = parse(&["pool", "create", "--name", "p", "--flavor", "gpu8:az1"]).unwrap_err();
        assert!(
            error.to_string().contains("is not NAME:ZONE:COUNT"),
            "{error}"
        );
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn global_flags_and_addresses() {
        let cli = parse(&[
            "--addr",
            "a:1,b:2",
            "-o",
            "json",
            "--timeout-ms",
            "500",
            "pool",
            "list",
        ])
        .unwrap();
        assert_eq!(cli.global.addresses, ["a:1", "b:2"]);
        assert_eq!(cli.global.output, crate::cli::OutputFormat::Json);
        assert_eq!(cli.global.timeout_ms, Some(500));
        // Global flags may also follow the subcommand.
        let cli = parse(&["job", "list", "--stale", "-o", "json"]).unwrap();
        assert!(cli.global.stale);
        assert!(parse(&["--timeout-ms", "0", "pool", "list"]).is_err());
        assert!(parse(&["-o", "yaml", "pool", "list"]).is_err());
    }

    #[test]
    fn drain_deadlines() {
        assert_eq!(drain_deadline(Some(5), None, 100), 5);
        assert_eq!(drain_deadline(None, Some(50), 100), 150);
        assert_eq!(drain_deadline(None, None, 100), 0);
    }

    #[test]
    fn resource_flags_default_to_zero() {
        let cli = parse(&[
            "tenant",
            "create",
            "acme",
            "--cpu-millicores",
            "64000",
            "--accelerators",
            "16",
        ])
        .unwrap();
        let Command::Tenant(crate::cli::TenantCommand::Create {
            quota,
            name,
            high_priority,
        }) = cli.command
        else {
            panic!("wrong command")
        };
        assert_eq!((name.as_str(), high_priority), ("acme", false));
        assert_eq!(
            resources(&quota),
            pb::Resources {
                cpu_millicores: 64_000,
                accelerators: 16,
                ..Default::default()
            }
        );
    }
}

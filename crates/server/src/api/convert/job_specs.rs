//! Job specs, both ways, including workflows whose steps are job specs of their own
//! (one level deep: a step cannot be a workflow).
//!
//! Protobuf defaults stand for the model's defaults and absences: kind-specific fields
//! are only accepted on their kind, a training `retry_limit` of 0 is 1, a priority of 0
//! is 1, and 0 or "" mean `None` for `max_runtime_ms`, `auto_stop_after_ms`,
//! `accelerator_type` and a toleration's value. `job_spec_to_proto` is the inverse:
//! `job_spec_from_proto(&job_spec_to_proto(&spec)) == Ok(spec)` for every valid spec.

use super::bounds::{bounded_map, bounded_strings, bounded_text, check_count, echo, optional_text};
use super::ids::required_id;
use super::names::{job_kind_from_name, JobKindName};
use super::resources::{resources_from_proto, resources_to_proto};
use super::status::invalid_argument;
use corral_model::limits::{
    MAX_ARGUMENT_BYTES, MAX_COMMAND_ARGUMENTS, MAX_ENVIRONMENT_VALUE_BYTES,
    MAX_ENVIRONMENT_VARIABLES, MAX_LABEL_BYTES, MAX_NAME_BYTES, MAX_NODE_SELECTOR_LABELS,
    MAX_PRIORITY, MAX_TOLERATIONS_PER_JOB, MAX_WORKFLOW_DEPENDENCIES_PER_STEP, MAX_WORKFLOW_STEPS,
    MIN_PRIORITY, MIN_RETRY_LIMIT,
};
use corral_model::{JobKind, JobSpec, PoolId, Toleration, WorkflowSpec, WorkflowStep};
use corral_wire::pb;
use std::collections::BTreeMap;
use tonic::Status;

/// Where a spec sits: a submitted job, or a workflow step (which may leave its pool 0
/// when it runs in the public pool, and may not be a workflow).
#[derive(Clone, Copy)]
enum Position {
    Job,
    Step { use_public_pool: bool },
}

/// A job spec from the API; error messages name fields relative to the `JobSpec`
/// message (`kind`, `steps[2].spec.priority`, ...).
pub fn job_spec_from_proto(spec: &pb::JobSpec) -> Result<JobSpec, Status> {
    job_spec_from_proto_at("", spec)
}

/// As `job_spec_from_proto`, with `prefix` (e.g. `spec.`) before every field name.
pub(super) fn job_spec_from_proto_at(prefix: &str, spec: &pb::JobSpec) -> Result<JobSpec, Status> {
    spec_from_proto(prefix, spec, Position::Job)
}

fn spec_from_proto(
    prefix: &str,
    spec: &pb::JobSpec,
    position: Position,
) -> Result<JobSpec, Status> {
    let field = |name: &str| format!("{prefix}{name}");
    let kind_name = job_kind_from_name(&field("kind"), &spec.kind)?;
    let kind = kind_from_proto(prefix, spec, kind_name, position)?;
    let pool_may_be_unset = kind_name == JobKindName::Workflow
        || matches!(
            position,
            Position::Step {
                use_public_pool: true
            }
        );
    let pool = if pool_may_be_unset {
        PoolId(spec.pool)
    } else {
        required_id(&field("pool"), spec.pool, PoolId)?
    };
    Ok(JobSpec {
        name: bounded_text(&field("name"), &spec.name, MAX_NAME_BYTES)?,
        pool,
        kind,
        replicas: spec.replicas,
        per_replica: resources_from_proto(spec.per_replica.as_ref()),
        accelerator_type: optional_text(
            &field("accelerator_type"),
            &spec.accelerator_type,
            MAX_LABEL_BYTES,
        )?,
        priority: match spec.priority {
            0 => MIN_PRIORITY,
            priority => priority_from_proto(&field("priority"), priority)?,
        },
        command: bounded_strings(
            &field("command"),
            &spec.command,
            MAX_COMMAND_ARGUMENTS,
            MAX_ARGUMENT_BYTES,
        )?,
        environment: bounded_map(
            &field("environment"),
            &spec.environment,
            MAX_ENVIRONMENT_VARIABLES,
            MAX_LABEL_BYTES,
            MAX_ENVIRONMENT_VALUE_BYTES,
        )?,
        secret_environment: secret_environment_from_proto(&field, spec)?,
        node_selector: bounded_map(
            &field("node_selector"),
            &spec.node_selector,
            MAX_NODE_SELECTOR_LABELS,
            MAX_LABEL_BYTES,
            MAX_LABEL_BYTES,
        )?,
        tolerations: tolerations_from_proto(&field("tolerations"), &spec.tolerations)?,
        max_runtime_ms: (spec.max_runtime_ms != 0).then_some(spec.max_runtime_ms),
        queue: optional_text(&field("queue"), &spec.queue, MAX_NAME_BYTES)?,
    })
}

/// The secret variables, bounded together with the plain ones and named apart from them.
fn secret_environment_from_proto(
    field: &impl Fn(&str) -> String,
    spec: &pb::JobSpec,
) -> Result<BTreeMap<String, String>, Status> {
    let secret = bounded_map(
        &field("secret_environment"),
        &spec.secret_environment,
        MAX_ENVIRONMENT_VARIABLES,
        MAX_LABEL_BYTES,
        MAX_ENVIRONMENT_VALUE_BYTES,
    )?;
    if spec.environment.len() + secret.len() > MAX_ENVIRONMENT_VARIABLES {
        return Err(invalid_argument(
            &field("secret_environment"),
            format!(
                "environment and secret_environment together may have at most {MAX_ENVIRONMENT_VARIABLES} entries"
            ),
        ));
    }
    if let Some(both) = secret
        .keys()
        .find(|key| spec.environment.contains_key(*key))
    {
        return Err(invalid_argument(
            &field("secret_environment"),
            format!("'{}' is also in environment", echo(both)),
        ));
    }
    Ok(secret)
}

/// What a secret environment value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Whether a spec's secret environment values are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    /// As `REDACTED`: every listing, and a GetJob that does not ask for them.
    Redacted,
    /// As they are: a GetJob with `reveal_secrets` by the job's tenant admin or operator.
    Revealed,
}

/// A priority of 1 (low) to 3 (high).
pub(super) fn priority_from_proto(field: &str, priority: u32) -> Result<u8, Status> {
    u8::try_from(priority)
        .ok()
        .filter(|priority| (MIN_PRIORITY..=MAX_PRIORITY).contains(priority))
        .ok_or_else(|| invalid_argument(field, format!("must be {MIN_PRIORITY}..={MAX_PRIORITY}")))
}

fn kind_from_proto(
    prefix: &str,
    spec: &pb::JobSpec,
    kind_name: JobKindName,
    position: Position,
) -> Result<JobKind, Status> {
    let field = |name: &str| format!("{prefix}{name}");
    if kind_name != JobKindName::Training && spec.retry_limit != 0 {
        return Err(invalid_argument(
            &field("retry_limit"),
            "applies only to training jobs",
        ));
    }
    if kind_name != JobKindName::Notebook && spec.auto_stop_after_ms != 0 {
        return Err(invalid_argument(
            &field("auto_stop_after_ms"),
            "applies only to notebooks",
        ));
    }
    if kind_name != JobKindName::Workflow && !spec.steps.is_empty() {
        return Err(invalid_argument(
            &field("steps"),
            "only a workflow has steps",
        ));
    }
    Ok(match kind_name {
        JobKindName::Training => JobKind::Training {
            retry_limit: match spec.retry_limit {
                0 => MIN_RETRY_LIMIT,
                retry_limit => retry_limit,
            },
        },
        JobKindName::Inference => JobKind::Inference,
        JobKindName::Notebook => JobKind::Notebook {
            auto_stop_after_ms: (spec.auto_stop_after_ms != 0).then_some(spec.auto_stop_after_ms),
        },
        JobKindName::Workflow => match position {
            Position::Step { .. } => {
                return Err(invalid_argument(
                    &field("kind"),
                    "a workflow step cannot be a workflow",
                ))
            }
            Position::Job => JobKind::Workflow(workflow_from_proto(prefix, &spec.steps)?),
        },
    })
}

fn workflow_from_proto(prefix: &str, steps: &[pb::WorkflowStep]) -> Result<WorkflowSpec, Status> {
    let field = format!("{prefix}steps");
    if steps.is_empty() {
        return Err(invalid_argument(
            &field,
            "a workflow needs at least one step",
        ));
    }
    check_count(&field, steps.len(), MAX_WORKFLOW_STEPS)?;
    let steps = steps
        .iter()
        .enumerate()
        .map(|(index, step)| step_from_proto(&format!("{field}[{index}]"), step))
        .collect::<Result<_, _>>()?;
    Ok(WorkflowSpec { steps })
}

fn step_from_proto(field: &str, step: &pb::WorkflowStep) -> Result<WorkflowStep, Status> {
    let depends_on_field = format!("{field}.depends_on");
    check_count(
        &depends_on_field,
        step.depends_on.len(),
        MAX_WORKFLOW_DEPENDENCIES_PER_STEP,
    )?;
    let depends_on = step
        .depends_on
        .iter()
        .map(|dependency| {
            usize::try_from(*dependency)
                .map_err(|_| invalid_argument(&depends_on_field, "step index out of range"))
        })
        .collect::<Result<_, _>>()?;
    let spec = step
        .spec
        .as_ref()
        .ok_or_else(|| invalid_argument(&format!("{field}.spec"), "is required"))?;
    let position = Position::Step {
        use_public_pool: step.use_public_pool,
    };
    Ok(WorkflowStep {
        name: bounded_text(&format!("{field}.name"), &step.name, MAX_NAME_BYTES)?,
        depends_on,
        spec: spec_from_proto(&format!("{field}.spec."), spec, position)?,
        use_public_pool: step.use_public_pool,
    })
}

fn tolerations_from_proto(
    field: &str,
    tolerations: &[pb::Toleration],
) -> Result<Vec<Toleration>, Status> {
    check_count(field, tolerations.len(), MAX_TOLERATIONS_PER_JOB)?;
    tolerations
        .iter()
        .enumerate()
        .map(|(index, toleration)| {
            Ok(Toleration {
                key: bounded_text(
                    &format!("{field}[{index}].key"),
                    &toleration.key,
                    MAX_LABEL_BYTES,
                )?,
                value: optional_text(
                    &format!("{field}[{index}].value"),
                    &toleration.value,
                    MAX_LABEL_BYTES,
                )?,
            })
        })
        .collect()
}

/// A spec as listings show it: secret environment values redacted.
pub fn job_spec_to_proto(spec: &JobSpec) -> pb::JobSpec {
    job_spec_to_proto_with(spec, Secrets::Redacted)
}

pub fn job_spec_to_proto_with(spec: &JobSpec, secrets: Secrets) -> pb::JobSpec {
    let (retry_limit, auto_stop_after_ms, steps) = match &spec.kind {
        JobKind::Training { retry_limit } => (*retry_limit, 0, Vec::new()),
        JobKind::Inference => (0, 0, Vec::new()),
        JobKind::Notebook { auto_stop_after_ms } => {
            (0, auto_stop_after_ms.unwrap_or(0), Vec::new())
        }
        JobKind::Workflow(workflow) => (
            0,
            0,
            workflow
                .steps
                .iter()
                .map(|step| step_to_proto(step, secrets))
                .collect(),
        ),
    };
    pb::JobSpec {
        name: spec.name.clone(),
        pool: spec.pool.0,
        kind: spec.kind.label().to_string(),
        replicas: spec.replicas,
        per_replica: Some(resources_to_proto(&spec.per_replica)),
        accelerator_type: spec.accelerator_type.clone().unwrap_or_default(),
        priority: u32::from(spec.priority),
        command: spec.command.clone(),
        environment: spec.environment.clone(),
        secret_environment: match secrets {
            Secrets::Revealed => spec.secret_environment.clone(),
            Secrets::Redacted => spec
                .secret_environment
                .keys()
                .map(|key| (key.clone(), REDACTED.to_string()))
                .collect(),
        },
        node_selector: spec.node_selector.clone(),
        tolerations: spec
            .tolerations
            .iter()
            .map(|toleration| pb::Toleration {
                key: toleration.key.clone(),
                value: toleration.value.clone().unwrap_or_default(),
            })
            .collect(),
        max_runtime_ms: spec.max_runtime_ms.unwrap_or(0),
        queue: spec.queue.clone().unwrap_or_default(),
        retry_limit,
        auto_stop_after_ms,
        steps,
    }
}

fn step_to_proto(step: &WorkflowStep, secrets: Secrets) -> pb::WorkflowStep {
    pb::WorkflowStep {
        name: step.name.clone(),
        depends_on: step
            .depends_on
            .iter()
            .map(|dependency| u32::try_from(*dependency).unwrap_or(u32::MAX))
            .collect(),
        spec: Some(job_spec_to_proto_with(&step.spec, secrets)),
        use_public_pool: step.use_public_pool,
    }
}

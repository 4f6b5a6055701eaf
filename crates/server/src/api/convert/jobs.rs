//! Jobs: submit (one or a batch), terminate, stop, start and priority requests as
//! commands, list filters, and a `JobView` as the API's `Job` with its replicas (device
//! indices, state names) and workflow steps.

use super::bounds::check_count;
use super::ids::{optional_id, required_id};
use super::job_specs::{
    job_spec_from_proto_at, job_spec_to_proto_with, priority_from_proto, Secrets,
};
use super::names::{
    job_state_name, optional_job_kind_label, optional_job_state, replica_state_name,
};
use super::status::invalid_argument;
use corral_model::node::device_indices;
use corral_model::{Command, JobId, PoolId, Replica, ReplicaState, TenantId};
use corral_state::{JobFilter, JobView};
use corral_wire::pb;
use tonic::Status;

/// Specs in one `SubmitJobs` call.
pub const MAX_JOBS_PER_SUBMIT: usize = 1_000;

/// A `JobSubmit` command; field names in errors are relative to the `JobSpec`.
pub fn command_from_job_spec(spec: &pb::JobSpec) -> Result<Command, Status> {
    job_spec_from_proto_at("", spec).map(Command::JobSubmit)
}

/// Error messages name fields under `spec.` (`spec.kind`, ...).
pub fn command_from_submit_job(request: &pb::SubmitJobRequest) -> Result<Command, Status> {
    let spec = request
        .spec
        .as_ref()
        .ok_or_else(|| invalid_argument("spec", "is required"))?;
    job_spec_from_proto_at("spec.", spec).map(Command::JobSubmit)
}

/// One result per spec, in order (field names under `specs[i].`); the outer error is
/// for a batch larger than `MAX_JOBS_PER_SUBMIT`.
pub fn submit_jobs_from_proto(
    request: &pb::SubmitJobsRequest,
) -> Result<Vec<Result<Command, Status>>, Status> {
    check_count("specs", request.specs.len(), MAX_JOBS_PER_SUBMIT)?;
    Ok(request
        .specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            job_spec_from_proto_at(&format!("specs[{index}]."), spec).map(Command::JobSubmit)
        })
        .collect())
}

pub fn command_from_terminate_job(request: &pb::JobRef) -> Result<Command, Status> {
    Ok(Command::JobTerminate {
        job: required_id("job", request.job, JobId)?,
    })
}

pub fn command_from_stop_job(request: &pb::JobRef) -> Result<Command, Status> {
    Ok(Command::JobStop {
        job: required_id("job", request.job, JobId)?,
    })
}

pub fn command_from_start_job(request: &pb::JobRef) -> Result<Command, Status> {
    Ok(Command::JobStart {
        job: required_id("job", request.job, JobId)?,
    })
}

/// The new priority must be 1..=3 (no default here).
pub fn command_from_change_priority(
    request: &pb::ChangePriorityRequest,
) -> Result<Command, Status> {
    Ok(Command::JobChangePriority {
        job: required_id("job", request.job, JobId)?,
        priority: priority_from_proto("priority", request.priority)?,
    })
}

/// Tenant and pool 0 and empty state and kind are no filter.
pub fn job_filter_from_proto(request: &pb::ListJobsRequest) -> Result<JobFilter, Status> {
    Ok(JobFilter {
        tenant: optional_id(request.tenant, TenantId),
        pool: optional_id(request.pool, PoolId),
        state: optional_job_state(&request.state)?,
        kind: optional_job_kind_label(&request.kind)?,
    })
}

/// A job as listings show it: secret environment values redacted.
pub fn job_view_to_proto(view: &JobView) -> pb::Job {
    job_view_to_proto_with(view, Secrets::Redacted)
}

pub fn job_view_to_proto_with(view: &JobView, secrets: Secrets) -> pb::Job {
    let job = &view.job;
    pb::Job {
        id: job.id.0,
        tenant: job.tenant.0,
        spec: Some(job_spec_to_proto_with(&job.spec, secrets)),
        state: job_state_name(job.state).to_string(),
        reason: job.reason.clone(),
        replicas: job.replicas.iter().map(replica_to_proto).collect(),
        retries_used: job.retries_used,
        disruptions: job.disruptions,
        submitted_at_ms: job.submitted_at_ms,
        finished_at_ms: job.finished_at_ms.unwrap_or(0),
        queue_position: view
            .queue_position
            .map_or(-1, |position| i64::try_from(position).unwrap_or(i64::MAX)),
        pending_ms: view.pending_ms,
        running_ms: view.running_ms,
        parent_workflow: job.parent_workflow.map_or(0, |parent| parent.0),
        step_jobs: job
            .workflow
            .as_ref()
            .map(|progress| {
                progress
                    .step_jobs
                    .iter()
                    .map(|step_job| step_job.map_or(0, |step_job| step_job.0))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Node 0 while unplaced; the exit code is 0 unless the replica exited.
pub fn replica_to_proto(replica: &Replica) -> pb::Replica {
    pb::Replica {
        rank: replica.rank,
        node: replica.node.map_or(0, |node| node.0),
        devices: device_indices(replica.device_mask),
        state: replica_state_name(&replica.state).to_string(),
        exit_code: match replica.state {
            ReplicaState::Exited { exit_code } => exit_code,
            _ => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::job_specs::job_spec_to_proto;
    use super::*;
    use corral_model::workflow::WorkflowProgress;
    use corral_model::{Job, JobKind, JobSpec, JobState, NodeId, Resources};
    use std::collections::BTreeMap;
    use tonic::Code;

    fn spec() -> JobSpec {
        JobSpec {
            name: "train".into(),
            pool: PoolId(1),
            kind: JobKind::Training { retry_limit: 2 },
            replicas: 2,
            per_replica: Resources {
                cpu_millicores: 1_000,
                memory_mib: 1_024,
                accelerators: 2,
                ..Resources::ZERO
            },
            accelerator_type: Some("nvidia-a100".into()),
            priority: 2,
            command: vec!["python".into(), "train.py".into()],
            environment: BTreeMap::new(),
            secret_environment: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            max_runtime_ms: None,
            queue: None,
        }
    }

    fn job(spec: JobSpec) -> Job {
        Job {
            id: JobId(9),
            tenant: TenantId(2),
            spec,
            state: JobState::Running,
            replicas: vec![
                Replica {
                    rank: 0,
                    node: Some(NodeId(4)),
                    device_mask: 0b1010,
                    state: ReplicaState::Running,
                    meter: None,
                    assigned_at_ms: Some(5),
                    last_node: Some(NodeId(4)),
                    placed_at_index: 12,
                    master_port: Some(29_500),
                },
                Replica {
                    state: ReplicaState::Exited { exit_code: 137 },
                    ..Replica::unplaced(1)
                },
            ],
            retries_used: 1,
            disruptions: 2,
            not_before_ms: None,
            generation: 3,
            submitted_at_ms: 10,
            queued_at_ms: 10,
            started_at_ms: Some(20),
            finished_at_ms: None,
            reason: "placed".into(),
            parent_workflow: Some(JobId(8)),
            workflow: None,
            shutdown_target: None,
            pending_ms_total: 0,
            running_ms_total: 0,
        }
    }

    #[test]
    fn submit_requests_name_fields_under_their_message() {
        assert!(
            command_from_submit_job(&pb::SubmitJobRequest { spec: None })
                .unwrap_err()
                .message()
                .starts_with("invalid spec:")
        );
        let mut bad = job_spec_to_proto(&spec());
        bad.kind = "batch".into();
        let status = command_from_submit_job(&pb::SubmitJobRequest {
            spec: Some(bad.clone()),
        })
        .unwrap_err();
        assert!(
            status.message().starts_with("invalid spec.kind:"),
            "{}",
            status.message()
        );
        let batch = pb::SubmitJobsRequest {
            specs: vec![job_spec_to_proto(&spec()), bad],
        };
        let results = submit_jobs_from_proto(&batch).unwrap();
        assert_eq!(results[0].as_ref().unwrap(), &Command::JobSubmit(spec()));
        assert!(results[1]
            .as_ref()
            .unwrap_err()
            .message()
            .starts_with("invalid specs[1].kind:"));
        let oversize = pb::SubmitJobsRequest {
            specs: vec![pb::JobSpec::default(); MAX_JOBS_PER_SUBMIT + 1],
        };
        assert_eq!(
            submit_jobs_from_proto(&oversize).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn priority_changes_are_bounded() {
        let request = pb::ChangePriorityRequest {
            job: 3,
            priority: 3,
        };
        assert_eq!(
            command_from_change_priority(&request).unwrap(),
            Command::JobChangePriority {
                job: JobId(3),
                priority: 3
            }
        );
        for priority in [0, 4, 256, u32::MAX] {
            let request = pb::ChangePriorityRequest { job: 3, priority };
            assert!(command_from_change_priority(&request)
                .unwrap_err()
                .message()
                .starts_with("invalid priority:"));
        }
        assert_eq!(
            command_from_stop_job(&pb::JobRef { job: 5 }).unwrap(),
            Command::JobStop { job: JobId(5) }
        );
        assert!(command_from_terminate_job(&pb::JobRef { job: 0 }).is_err());
    }

    #[test]
    fn job_filters() {
        let request = pb::ListJobsRequest {
            pool: 1,
            state: "PENDING".into(),
            kind: "Notebook".into(),
            tenant: 4,
            ..Default::default()
        };
        assert_eq!(
            job_filter_from_proto(&request).unwrap(),
            JobFilter {
                tenant: Some(TenantId(4)),
                pool: Some(PoolId(1)),
                state: Some(JobState::Pending),
                kind: Some("notebook".into())
            }
        );
        assert_eq!(
            job_filter_from_proto(&pb::ListJobsRequest::default()).unwrap(),
            JobFilter::default()
        );
        let bad = pb::ListJobsRequest {
            kind: "batch".into(),
            ..Default::default()
        };
        assert!(job_filter_from_proto(&bad)
            .unwrap_err()
            .message()
            .starts_with("invalid kind:"));
    }

    #[test]
    fn job_views_show_replicas_and_queue_position() {
        let view = JobView {
            job: job(spec()),
            queue_position: None,
            pending_ms: 7,
            running_ms: 8,
        };
        let proto = job_view_to_proto(&view);
        assert_eq!(proto.queue_position, -1);
        assert_eq!(proto.state, "Running");
        assert_eq!(proto.parent_workflow, 8);
        assert_eq!(proto.finished_at_ms, 0);
        assert_eq!((proto.pending_ms, proto.running_ms), (7, 8));
        assert_eq!(
            proto.replicas,
            vec![
                pb::Replica {
                    rank: 0,
                    node: 4,
                    devices: vec![1, 3],
                    state: "Running".into(),
                    exit_code: 0
                },
                pb::Replica {
                    rank: 1,
                    node: 0,
                    devices: vec![],
                    state: "Exited".into(),
                    exit_code: 137
                },
            ]
        );
        let queued = JobView {
            queue_position: Some(0),
            ..view
        };
        assert_eq!(job_view_to_proto(&queued).queue_position, 0);
    }

    #[test]
    fn workflow_views_list_step_jobs() {
        let mut workflow_job = job(spec());
        workflow_job.workflow = Some(WorkflowProgress {
            step_jobs: vec![Some(JobId(10)), None],
        });
        let view = JobView {
            job: workflow_job,
            queue_position: None,
            pending_ms: 0,
            running_ms: 0,
        };
        assert_eq!(job_view_to_proto(&view).step_jobs, vec![10, 0]);
    }
}

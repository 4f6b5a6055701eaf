//! Jobs (a workflow is a job's spec): submission, one at a time or in a batch, queries,
//! the owner's controls, and a replica's output proxied from its node's agent.

use super::{page_limit, read_options, AdminService};
use crate::api::request_ids::slot_request_ids;
use crate::api::{convert, node_runtime};
use corral_model::ids::{JobId, PoolId, TenantId};
use corral_model::{Command, Principal};
use corral_state::{Created, JobFilter, RequestId};
use corral_store::AppliedSummary;
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn job_logs(
    admin: &AdminService,
    request: Request<pb::JobLogsRequest>,
) -> Result<Response<node_runtime::LogStream>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let slot = admin.log_slots.take(
        &principal,
        crate::api::stream_slots::MAX_LOG_STREAMS_PER_PRINCIPAL,
        "JobLogs",
    )?;
    let message = request.into_inner();
    let job = JobId(super::id_or_invalid("job", message.job)?);
    let (node, address) = admin
        .read(&caller, true, |state| {
            node_runtime::replica_location(state, &principal, job, message.rank)
        })
        .await??;
    let stream = node_runtime::proxy_logs(
        &admin.agent_transport,
        &address,
        &admin.authenticator.node_log_key(node),
        pb::ReadLogsRequest {
            node: node.0,
            job: job.0,
            rank: message.rank,
            offset: 0,
            follow: message.follow,
            tail_bytes: message.tail_bytes,
        },
    )
    .await?;
    // The slot goes with the stream and is given back when the client drops it.
    let stream: node_runtime::LogStream = Box::pin(futures::StreamExt::map(stream, move |chunk| {
        let _held = &slot;
        chunk
    }));
    Ok(Response::new(stream))
}

pub(super) async fn submit_job(
    admin: &AdminService,
    request: Request<pb::SubmitJobRequest>,
) -> Result<Response<pb::SubmitJobResponse>, Status> {
    let written = admin
        .write(request, |_, message| {
            let spec = message
                .spec
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("spec is required"))?;
            Ok(Command::JobSubmit(convert::job_spec_from_proto(spec)?))
        })
        .await?;
    let Created::Job(job) = super::created_id(&written.summary)? else {
        return Err(Status::internal("expected a job"));
    };
    Ok(Response::new(pb::SubmitJobResponse {
        job: job.0,
        index: written.index,
    }))
}

/// Not `write`'s shape: several writes, each under its slot's request id.
pub(super) async fn submit_jobs(
    admin: &AdminService,
    request: Request<pb::SubmitJobsRequest>,
) -> Result<Response<pb::SubmitJobsResponse>, Status> {
    let caller = admin.caller(&request).await?;
    super::refuse_read_only(&caller.principal)?;
    // The gate took the call's first submission before decoding; the rest now, before
    // anything is converted or proposed.
    if let Some(tenant) = caller.principal.tenant() {
        let specs = request.get_ref().specs.len() as u64;
        admin.submit_rate.check_call_size(tenant, specs)?;
        if specs > 1 {
            admin.submit_rate.take(tenant, specs - 1)?;
        }
    }
    let request_ids = slot_request_ids(
        request.metadata(),
        request.get_ref().specs.len(),
        &admin.proposer,
    )?;
    let message = request.into_inner();
    // A malformed spec fails only its own slot; the rest are proposed together
    // (`Proposer::propose_requests`: one group, usually one log entry), each under
    // its slot's id, so a retried call is answered with the first outcomes.
    let commands = convert::submit_jobs_from_proto(&message)?;
    let well_formed: Vec<(Command, RequestId)> = commands
        .iter()
        .zip(request_ids)
        .filter_map(|(command, request_id)| Some((command.as_ref().ok()?.clone(), request_id)))
        .collect();
    let mut applied = admin.state_machine.applied_index();
    // A write whose outcome is unknown fails the whole call rather than its slot: a
    // slot's error says the job does not exist, and the retry (same slot ids) is
    // answered with the first outcomes.
    let proposed = admin
        .proposer
        .propose_requests(&caller, well_formed)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Status>>()?;
    // Read-your-writes here, as for a single submit (a follower forwarded them).
    let last_index = proposed
        .iter()
        .map(|outcome| outcome.index)
        .max()
        .unwrap_or(0);
    // Should this replica be slow to apply, the call still answers: the writes are
    // committed, and an error would only invite a retry.
    let _ = admin.proposer.wait_applied(&mut applied, last_index).await;
    let mut proposed = proposed.into_iter();
    let results = commands
        .into_iter()
        .map(|command| {
            let outcome = command.and_then(|_| {
                let outcome = proposed
                    .next()
                    .ok_or_else(|| Status::internal("a proposed write has no outcome"))?;
                outcome
                    .result
                    .map_err(|rejection| convert::rejection_to_status(&rejection))
            });
            match outcome {
                Ok(AppliedSummary {
                    created: Some(Created::Job(job)),
                    ..
                }) => pb::SubmitResult {
                    job: job.0,
                    error: String::new(),
                },
                Ok(_) => pb::SubmitResult {
                    job: 0,
                    error: "the command created no job".to_string(),
                },
                Err(status) => pb::SubmitResult {
                    job: 0,
                    error: status.message().to_string(),
                },
            }
        })
        .collect();
    Ok(Response::new(pb::SubmitJobsResponse { results }))
}

pub(super) async fn get_job(
    admin: &AdminService,
    request: Request<pb::GetJobRequest>,
) -> Result<Response<pb::Job>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let job = JobId(super::id_or_invalid("job", message.job)?);
    let secrets = if message.reveal_secrets {
        convert::Secrets::Revealed
    } else {
        convert::Secrets::Redacted
    };
    let found = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            let view = state
                .get_job(&principal, job)
                .map_err(|error| convert::query_error_to_status(&error))?;
            if secrets == convert::Secrets::Revealed {
                may_reveal_secrets(&principal, view.job.tenant)?;
            }
            Ok::<_, Status>(convert::job_view_to_proto_with(&view, secrets))
        })
        .await??;
    Ok(Response::new(found))
}

/// A job's secret environment values are shown to its own tenant's admin or operators,
/// and only when they ask; to nobody else (the platform admin and auditor included: they
/// manage the platform, not the tenant's credentials).
fn may_reveal_secrets(principal: &Principal, owner: TenantId) -> Result<(), Status> {
    match principal {
        Principal::TenantAdmin(tenant) | Principal::TenantUser(tenant) if *tenant == owner => {
            Ok(())
        }
        _ => Err(Status::permission_denied(format!(
            "only the job's tenant admin or operators may reveal its secret environment, not {}",
            principal.describe()
        ))),
    }
}

pub(super) async fn list_jobs(
    admin: &AdminService,
    request: Request<pb::ListJobsRequest>,
) -> Result<Response<pb::ListJobsResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let filter = JobFilter {
        tenant: (message.tenant != 0).then_some(TenantId(message.tenant)),
        pool: (message.pool != 0).then_some(PoolId(message.pool)),
        state: convert::optional_job_state(&message.state)?,
        kind: convert::optional_job_kind_label(&message.kind)?,
    };
    let limit = page_limit(message.page.as_ref());
    let jobs = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .list_jobs(&principal, &filter, limit)
                .iter()
                .map(convert::job_view_to_proto)
                .collect()
        })
        .await?;
    Ok(Response::new(pb::ListJobsResponse { jobs }))
}

pub(super) async fn terminate_job(
    admin: &AdminService,
    request: Request<pb::JobRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_terminate_job)
        .await
}

pub(super) async fn stop_job(
    admin: &AdminService,
    request: Request<pb::JobRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_stop_job)
        .await
}

pub(super) async fn start_job(
    admin: &AdminService,
    request: Request<pb::JobRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_start_job)
        .await
}

pub(super) async fn change_priority(
    admin: &AdminService,
    request: Request<pb::ChangePriorityRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_change_priority)
        .await
}

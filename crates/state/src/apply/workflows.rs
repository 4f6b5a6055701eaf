//! Workflows: validation of the DAG, starting steps whose dependencies completed, and
//! ending the workflow when a step fails or every step completed. The DAG is driven
//! here, inside the state machine, so every replica starts the same steps at the same
//! log index.

use super::jobs::validate_spec_shape;
use super::Context;
use crate::state::State;
use corral_model::ids::{JobId, TenantId};
use corral_model::limits::{MAX_WORKFLOW_DEPENDENCIES_PER_STEP, MAX_WORKFLOW_STEPS};
use corral_model::names::validate_name;
use corral_model::workflow::WorkflowProgress;
use corral_model::{JobKind, JobSpec, JobState, Principal, Rejection, WorkflowSpec, WorkflowStep};
use std::collections::BTreeSet;

impl State {
    /// The job spec a step runs with: its own pool, or the public pool.
    fn step_spec(&self, step: &WorkflowStep) -> Result<JobSpec, Rejection> {
        let mut spec = step.spec.clone();
        if step.use_public_pool {
            spec.pool = self
                .public_pool
                .ok_or_else(|| Rejection::not_found("pool", "public"))?;
        }
        Ok(spec)
    }

    pub(super) fn validate_workflow(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        spec: &JobSpec,
        workflow: &WorkflowSpec,
    ) -> Result<(), Rejection> {
        validate_name("name", &spec.name)?;
        if workflow.steps.is_empty() {
            return Err(Rejection::invalid(
                "steps",
                "a workflow needs at least one step",
            ));
        }
        if workflow.steps.len() > MAX_WORKFLOW_STEPS {
            return Err(Rejection::limit("workflow steps", MAX_WORKFLOW_STEPS));
        }
        let tenant = self
            .tenants
            .get(&tenant_id)
            .ok_or_else(|| Rejection::not_found("tenant", tenant_id))?;
        let mut names = BTreeSet::new();
        for (index, step) in workflow.steps.iter().enumerate() {
            validate_name("steps.name", &step.name)?;
            if !names.insert(step.name.as_str()) {
                return Err(Rejection::invalid(
                    "steps.name",
                    format!("step '{}' is named twice", step.name),
                ));
            }
            if step.depends_on.len() > MAX_WORKFLOW_DEPENDENCIES_PER_STEP {
                return Err(Rejection::limit(
                    "dependencies per step",
                    MAX_WORKFLOW_DEPENDENCIES_PER_STEP,
                ));
            }
            // Only earlier steps: this makes every accepted workflow acyclic.
            if step
                .depends_on
                .iter()
                .any(|dependency| *dependency >= index)
            {
                return Err(Rejection::invalid(
                    "steps.depends_on",
                    format!("step '{}' may depend only on earlier steps", step.name),
                ));
            }
            // A step must be able to complete for its dependants to start; inference
            // services and notebooks run until stopped, so steps are training jobs.
            if !matches!(step.spec.kind, JobKind::Training { .. }) {
                return Err(Rejection::invalid(
                    "steps.spec",
                    "a workflow step must be a training job",
                ));
            }
            let step_spec = self.step_spec(step)?;
            validate_spec_shape(&step_spec)?;
            self.validate_spec_in_state(principal, tenant, &step_spec)?;
        }
        Ok(())
    }

    pub(super) fn workflow_submit(
        &mut self,
        context: &mut Context,
        tenant: TenantId,
        spec: &JobSpec,
    ) -> JobId {
        let JobKind::Workflow(workflow) = &spec.kind else {
            unreachable!("workflow_submit takes workflows");
        };
        let step_count = workflow.steps.len();
        // The workflow itself runs nothing: keep only its name and steps, so nothing
        // unvalidated is stored. Its pool is the first step's (for listing by pool).
        let mut stored = spec.clone();
        stored.replicas = 0;
        stored.per_replica = corral_model::Resources::ZERO;
        stored.command.clear();
        stored.environment.clear();
        stored.node_selector.clear();
        stored.tolerations.clear();
        stored.accelerator_type = None;
        stored.max_runtime_ms = None;
        stored.priority = corral_model::limits::MIN_PRIORITY;
        if let JobKind::Workflow(workflow) = &spec.kind {
            if let Some(first) = workflow.steps.first() {
                stored.pool = self
                    .step_spec(first)
                    .map_or(first.spec.pool, |step| step.pool);
            }
        }
        let id = self.insert_job(context, tenant, stored, None);
        self.job_mut(id).workflow = Some(WorkflowProgress {
            step_jobs: vec![None; step_count],
        });
        self.start_ready_steps(context, id);
        id
    }

    /// Submit every step whose dependencies all completed and that has not started.
    fn start_ready_steps(&mut self, context: &mut Context, workflow_id: JobId) {
        let workflow_job = &self.jobs[&workflow_id];
        let JobKind::Workflow(workflow) = &workflow_job.spec.kind else {
            return;
        };
        let progress = workflow_job.workflow.clone().unwrap_or_default();
        let tenant = workflow_job.tenant;
        let completed = |index: usize| {
            progress.step_jobs[index]
                .and_then(|job| self.jobs.get(&job))
                .is_some_and(|job| job.state == JobState::Completed)
        };
        let ready: Vec<(usize, WorkflowStep)> = workflow
            .steps
            .iter()
            .enumerate()
            .filter(|(index, step)| {
                progress.step_jobs[*index].is_none()
                    && step
                        .depends_on
                        .iter()
                        .all(|dependency| completed(*dependency))
            })
            .map(|(index, step)| (index, step.clone()))
            .collect();
        for (index, step) in ready {
            // The pool may have changed since the workflow was accepted.
            let principal = Principal::TenantUser(tenant);
            let checked = self.step_spec(&step).and_then(|spec| {
                let tenant_record = self
                    .tenants
                    .get(&tenant)
                    .ok_or_else(|| Rejection::not_found("tenant", tenant))?;
                self.validate_spec_in_state(&principal, tenant_record, &spec)
                    .map(|()| spec)
            });
            match checked {
                Ok(spec) => {
                    let child = self.insert_job(context, tenant, spec, Some(workflow_id));
                    if let Some(progress) = self.job_mut(workflow_id).workflow.as_mut() {
                        progress.step_jobs[index] = Some(child);
                    }
                }
                Err(rejection) => {
                    self.terminate_workflow(
                        context,
                        workflow_id,
                        JobState::Failed,
                        &format!("step '{}' could not start: {rejection}", step.name),
                    );
                    return;
                }
            }
        }
    }

    /// A step reached a terminal state.
    pub(crate) fn workflow_child_finished(
        &mut self,
        context: &mut Context,
        workflow_id: JobId,
        child: JobId,
    ) {
        let Some(workflow_job) = self.jobs.get(&workflow_id) else {
            return;
        };
        if workflow_job.state != JobState::Running {
            return;
        }
        let child_state = self.jobs[&child].state;
        if child_state != JobState::Completed {
            let reason = format!("step job {child} ended {child_state:?}");
            self.terminate_workflow(context, workflow_id, JobState::Failed, &reason);
            return;
        }
        self.start_ready_steps(context, workflow_id);
        let workflow_job = &self.jobs[&workflow_id];
        if workflow_job.state != JobState::Running {
            return;
        }
        let all_completed = workflow_job.workflow.as_ref().is_some_and(|progress| {
            progress.step_jobs.iter().all(|step| {
                step.and_then(|job| self.jobs.get(&job))
                    .is_some_and(|job| job.state == JobState::Completed)
            })
        });
        if all_completed {
            self.transition(
                context,
                workflow_id,
                JobState::Completed,
                "every step completed",
            );
        }
    }

    /// End the workflow first, then terminate its active steps (their own endings then
    /// find the workflow already terminal).
    pub(crate) fn terminate_workflow(
        &mut self,
        context: &mut Context,
        workflow_id: JobId,
        target: JobState,
        reason: &str,
    ) {
        if self.jobs[&workflow_id].state.is_terminal() {
            return;
        }
        self.transition(context, workflow_id, target, reason);
        let children: Vec<JobId> = self.jobs[&workflow_id]
            .workflow
            .as_ref()
            .map(|progress| progress.step_jobs.iter().flatten().copied().collect())
            .unwrap_or_default();
        for child in children {
            let Some(job) = self.jobs.get(&child) else {
                continue;
            };
            if job.state.is_terminal() || job.shutdown_target.is_some() {
                continue;
            }
            self.shut_down(context, child, JobState::Terminated, "its workflow ended");
        }
    }
}

//! Work commands: submit (with full validation), terminate, stop, start, and change
//! priority.

use super::{Context, Created, Handled};
use crate::state::State;
use corral_model::ids::{JobId, TenantId};
use corral_model::limits::{
    MAX_ACTIVE_JOBS, MAX_ARGUMENT_BYTES, MAX_AUTO_STOP_MS, MAX_COMMAND_ARGUMENTS,
    MAX_ENVIRONMENT_VALUE_BYTES, MAX_ENVIRONMENT_VARIABLES, MAX_LABEL_BYTES,
    MAX_NODE_SELECTOR_LABELS, MAX_PRIORITY, MAX_REPLICAS_PER_JOB, MAX_RETRY_LIMIT, MAX_RUNTIME_MS,
    MAX_TOLERATIONS_PER_JOB, MIN_PRIORITY, MIN_RETRY_LIMIT,
};
use corral_model::names::{validate_name, validate_text, validate_token_text};
use corral_model::{Event, Job, JobKind, JobSpec, JobState, Principal, Rejection, Replica, Tenant};

/// Checks of a job spec that need no state: sizes, ranges, names.
pub(crate) fn validate_spec_shape(spec: &JobSpec) -> Result<(), Rejection> {
    validate_name("name", &spec.name)?;
    let (minimum_replicas, maximum_replicas) = match spec.kind {
        JobKind::Training { retry_limit } => {
            if !(MIN_RETRY_LIMIT..=MAX_RETRY_LIMIT).contains(&retry_limit) {
                return Err(Rejection::invalid(
                    "retry_limit",
                    format!("must be {MIN_RETRY_LIMIT}..={MAX_RETRY_LIMIT}"),
                ));
            }
            (1, MAX_REPLICAS_PER_JOB)
        }
        JobKind::Inference => (1, MAX_REPLICAS_PER_JOB),
        JobKind::Notebook { auto_stop_after_ms } => {
            if auto_stop_after_ms.is_some_and(|after| after == 0 || after > MAX_AUTO_STOP_MS) {
                return Err(Rejection::invalid(
                    "auto_stop_after_ms",
                    "must be between 1 ms and 30 days",
                ));
            }
            (1, 1)
        }
        JobKind::Workflow(_) => return Ok(()),
    };
    if spec.replicas < minimum_replicas || spec.replicas > maximum_replicas {
        return Err(Rejection::invalid(
            "replicas",
            format!(
                "must be {minimum_replicas}..={maximum_replicas} for {}",
                spec.kind.label()
            ),
        ));
    }
    if spec.per_replica.cpu_millicores == 0 || spec.per_replica.memory_mib == 0 {
        return Err(Rejection::invalid(
            "per_replica",
            "a replica needs CPU and memory",
        ));
    }
    match (&spec.accelerator_type, spec.per_replica.accelerators) {
        (Some(kind), _) => validate_token_text("accelerator_type", kind, MAX_LABEL_BYTES)?,
        (None, 0) => {}
        (None, _) => {
            return Err(Rejection::invalid(
                "accelerator_type",
                "name the accelerator type to use accelerators",
            ))
        }
    }
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&spec.priority) {
        return Err(Rejection::invalid(
            "priority",
            format!("must be {MIN_PRIORITY}..={MAX_PRIORITY}"),
        ));
    }
    if spec.command.is_empty() {
        return Err(Rejection::invalid("command", "must name a program"));
    }
    if spec.command.len() > MAX_COMMAND_ARGUMENTS {
        return Err(Rejection::limit("command arguments", MAX_COMMAND_ARGUMENTS));
    }
    for argument in &spec.command {
        validate_text("command", argument, MAX_ARGUMENT_BYTES)?;
    }
    if spec.environment.len() + spec.secret_environment.len() > MAX_ENVIRONMENT_VARIABLES {
        return Err(Rejection::limit(
            "environment variables",
            MAX_ENVIRONMENT_VARIABLES,
        ));
    }
    if let Some(both) = spec
        .secret_environment
        .keys()
        .find(|key| spec.environment.contains_key(*key))
    {
        return Err(Rejection::invalid(
            "secret_environment",
            format!(
                "'{}' is also a plain environment variable",
                both.chars().take(40).collect::<String>()
            ),
        ));
    }
    // Secret values are checked like the others, and never echoed.
    for (key, value) in spec.environment.iter().chain(&spec.secret_environment) {
        let valid_key = !key.is_empty()
            && key.len() <= MAX_LABEL_BYTES
            && key
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_')
            && !key.starts_with(|character: char| character.is_ascii_digit());
        if !valid_key {
            return Err(Rejection::invalid(
                "environment",
                format!(
                    "'{}' is not a valid variable name",
                    key.chars().take(40).collect::<String>()
                ),
            ));
        }
        if key.starts_with("CORRAL_") {
            return Err(Rejection::invalid(
                "environment",
                "variables starting with CORRAL_ are set by corral",
            ));
        }
        validate_text("environment", value, MAX_ENVIRONMENT_VALUE_BYTES)?;
    }
    if spec.node_selector.len() > MAX_NODE_SELECTOR_LABELS {
        return Err(Rejection::limit(
            "node selector labels",
            MAX_NODE_SELECTOR_LABELS,
        ));
    }
    super::nodes::validate_labels(&spec.node_selector)?;
    if spec.tolerations.len() > MAX_TOLERATIONS_PER_JOB {
        return Err(Rejection::limit("tolerations", MAX_TOLERATIONS_PER_JOB));
    }
    for toleration in &spec.tolerations {
        validate_token_text("tolerations.key", &toleration.key, MAX_LABEL_BYTES)?;
    }
    if spec
        .max_runtime_ms
        .is_some_and(|runtime| runtime == 0 || runtime > MAX_RUNTIME_MS)
    {
        return Err(Rejection::invalid(
            "max_runtime_ms",
            "must be between 1 ms and 365 days",
        ));
    }
    Ok(())
}

impl State {
    /// Checks of a job spec against the state: the pool, its job types, priority
    /// permission, and that the job could ever fit (node shape and quota).
    pub(crate) fn validate_spec_in_state(
        &self,
        principal: &Principal,
        tenant: &Tenant,
        spec: &JobSpec,
    ) -> Result<(), Rejection> {
        let pool = self.visible_pool(principal, spec.pool)?;
        if !pool.admits_tenant(tenant.id) {
            return Err(Rejection::not_found("pool", spec.pool));
        }
        if !pool.takes_work() {
            return Err(Rejection::state(
                "pool",
                pool.id,
                pool.status,
                "submit work to",
            ));
        }
        let job_type = spec
            .kind
            .job_type()
            .expect("workflow specs are validated step by step");
        if !pool.job_types.contains(&job_type) {
            return Err(Rejection::invalid(
                "pool",
                format!("pool {} does not accept {:?} jobs", pool.id, job_type),
            ));
        }
        if pool.is_public() && spec.priority != MIN_PRIORITY {
            return Err(Rejection::invalid(
                "priority",
                "the public pool has no priorities; use 1",
            ));
        }
        if spec.priority == MAX_PRIORITY && !tenant.may_use_high_priority {
            return Err(Rejection::denied(
                "priority 3 needs the high-priority permission",
            ));
        }
        let fits_some_flavor = pool
            .flavors
            .iter()
            .filter_map(|entry| self.flavors.get(&entry.flavor))
            .any(|flavor| {
                spec.per_replica.fits_within(&flavor.capacity)
                    && (spec.per_replica.accelerators == 0
                        || spec.accelerator_type.is_none()
                        || flavor.accelerator_type == spec.accelerator_type)
            });
        if !fits_some_flavor {
            return Err(Rejection::invalid(
                "per_replica",
                format!("no flavor of pool {} can hold one replica", pool.id),
            ));
        }
        let total = spec
            .per_replica
            .checked_mul(spec.replicas)
            .ok_or_else(|| Rejection::invalid("per_replica", "too large"))?;
        // A tenant's own dedicated pool never counts against its tenant quota.
        if self.counts_against_quota(tenant.id, pool.id) {
            if let Some(dimension) = total.first_exceeding(&tenant.quota) {
                return Err(Rejection::QuotaExceeded {
                    tenant: tenant.id.to_string(),
                    dimension: dimension.to_string(),
                });
            }
        }
        if let Some(queue) = self.queue_for_job(pool, tenant.id, spec.queue.as_deref())? {
            if let Some(dimension) = total.first_exceeding(&queue.limit) {
                return Err(Rejection::invalid(
                    "queue",
                    format!(
                        "the job asks for more {dimension} than queue {}'s limit",
                        queue.name
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn submitting_tenant(&self, principal: &Principal) -> Result<&Tenant, Rejection> {
        let tenant_id = principal
            .tenant()
            .ok_or_else(|| Rejection::denied("work is submitted with a tenant user's token"))?;
        self.tenants
            .get(&tenant_id)
            .ok_or_else(|| Rejection::not_found("tenant", tenant_id))
    }

    pub(super) fn job_submit(&mut self, context: &mut Context, spec: &JobSpec) -> Handled {
        let tenant = self.submitting_tenant(context.principal)?;
        if self.active_jobs >= MAX_ACTIVE_JOBS {
            return Err(Rejection::limit("active jobs", MAX_ACTIVE_JOBS));
        }
        // One tenant cannot fill the cluster's bound alone. Like the global bound it is
        // checked at submission: a workflow's later steps may pass it by their number.
        let bound = tenant.active_jobs_bound();
        if self.tenant_active_job_count(tenant.id) >= bound {
            return Err(Rejection::limit(
                &format!("active jobs of {}", tenant.id),
                bound,
            ));
        }
        if let JobKind::Workflow(workflow) = &spec.kind {
            let tenant_id = tenant.id;
            self.validate_workflow(context.principal, tenant_id, spec, workflow)?;
            let id = self.workflow_submit(context, tenant_id, spec);
            return Ok(Some(Created::Job(id)));
        }
        validate_spec_shape(spec)?;
        self.validate_spec_in_state(context.principal, tenant, spec)?;
        let tenant_id = tenant.id;
        let id = self.insert_job(context, tenant_id, spec.clone(), None);
        Ok(Some(Created::Job(id)))
    }

    /// Create an accepted job and queue it. Also used for workflow steps.
    pub(crate) fn insert_job(
        &mut self,
        context: &mut Context,
        tenant: TenantId,
        spec: JobSpec,
        parent: Option<JobId>,
    ) -> JobId {
        let mut spec = spec;
        if spec.queue.is_none() {
            // A job naming no queue in a pool with queues goes to its default queue.
            spec.queue = self
                .queues_of_pool(spec.pool)
                .find(|queue| queue.default)
                .map(|queue| queue.name.clone());
        }
        self.counters.job += 1;
        let id = JobId(self.counters.job);
        let first_state = match spec.kind {
            JobKind::Inference => JobState::Deploying,
            JobKind::Workflow(_) => JobState::Running,
            _ => JobState::Pending,
        };
        let replicas = (0..spec.replicas).map(Replica::unplaced).collect();
        let pool = spec.pool;
        let job = Job {
            id,
            tenant,
            spec,
            state: JobState::Creating,
            replicas,
            retries_used: 0,
            disruptions: 0,
            not_before_ms: None,
            generation: 0,
            submitted_at_ms: context.at_ms,
            queued_at_ms: context.at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            reason: String::new(),
            parent_workflow: parent,
            workflow: None,
            shutdown_target: None,
            pending_ms_total: 0,
            running_ms_total: 0,
        };
        self.jobs.insert(id, job);
        self.active_jobs += 1;
        *self.active_jobs_per_tenant.entry(tenant).or_default() += 1;
        context.emit(Some(tenant), Event::JobSubmitted { job: id, pool });
        self.transition(context, id, first_state, "submitted");
        id
    }

    /// Find a job the principal may act on; other tenants' jobs are not found.
    fn owned_job(&self, principal: &Principal, job_id: JobId) -> Result<&Job, Rejection> {
        let job = self
            .jobs
            .get(&job_id)
            .ok_or_else(|| Rejection::not_found("job", job_id))?;
        super::require_owner(principal, job.tenant, "job", job_id)?;
        Ok(job)
    }

    pub(super) fn job_terminate(&mut self, context: &mut Context, job_id: JobId) -> Handled {
        let job = self.owned_job(context.principal, job_id)?;
        // ModelArts: only Creating, Pending or Running jobs can be terminated; inference
        // services and notebooks can be terminated from any non-terminal state.
        let allowed = match job.spec.kind {
            JobKind::Training { .. } => matches!(
                job.state,
                JobState::Creating | JobState::Pending | JobState::Running | JobState::Abnormal
            ),
            _ => !job.state.is_terminal() && job.shutdown_target != Some(JobState::Terminated),
        };
        if !allowed {
            return Err(Rejection::state("job", job_id, job.state, "terminate"));
        }
        if job.shutdown_target.is_some() {
            // Already stopping: end Terminated instead of Stopped once the replicas exit.
            self.job_mut(job_id).shutdown_target = Some(JobState::Terminated);
        } else if job.state == JobState::Stopped {
            self.transition(context, job_id, JobState::Terminated, "terminated by user");
        } else {
            self.shut_down(context, job_id, JobState::Terminated, "terminated by user");
        }
        Ok(None)
    }

    pub(super) fn job_stop(&mut self, context: &mut Context, job_id: JobId) -> Handled {
        let job = self.owned_job(context.principal, job_id)?;
        if !matches!(job.spec.kind, JobKind::Inference | JobKind::Notebook { .. }) {
            return Err(Rejection::invalid(
                "job",
                format!(
                    "{} jobs cannot be stopped; terminate them",
                    job.spec.kind.label()
                ),
            ));
        }
        if job.state.holds_nothing() || job.shutdown_target.is_some() {
            return Err(Rejection::state("job", job_id, job.state, "stop"));
        }
        self.shut_down(context, job_id, JobState::Stopped, "stopped by user");
        Ok(None)
    }

    pub(super) fn job_start(&mut self, context: &mut Context, job_id: JobId) -> Handled {
        let job = self.owned_job(context.principal, job_id)?;
        if job.state != JobState::Stopped {
            return Err(Rejection::state("job", job_id, job.state, "start"));
        }
        let pool = self.visible_pool(context.principal, job.spec.pool)?;
        if !pool.takes_work() {
            return Err(Rejection::state(
                "pool",
                pool.id,
                pool.status,
                "start work in",
            ));
        }
        // The pool's job types may have changed while the job was stopped.
        if let Some(job_type) = job.job_type() {
            if !pool.job_types.contains(&job_type) {
                return Err(Rejection::invalid(
                    "pool",
                    format!("pool {} does not accept {job_type:?} jobs", pool.id),
                ));
            }
        }
        let target = match job.spec.kind {
            JobKind::Inference => JobState::Deploying,
            _ => JobState::Pending,
        };
        let job = self.job_mut(job_id);
        for replica in &mut job.replicas {
            *replica = Replica {
                last_node: replica.last_node,
                ..Replica::unplaced(replica.rank)
            };
        }
        self.transition(context, job_id, target, "started by user");
        Ok(None)
    }

    /// Change a queued training job's priority (ModelArts: only while pending, only in
    /// dedicated pools).
    pub(super) fn job_change_priority(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        priority: u8,
    ) -> Handled {
        let job = self.owned_job(context.principal, job_id)?;
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
            return Err(Rejection::invalid(
                "priority",
                format!("must be {MIN_PRIORITY}..={MAX_PRIORITY}"),
            ));
        }
        if !matches!(job.spec.kind, JobKind::Training { .. }) {
            return Err(Rejection::invalid(
                "job",
                "only training jobs have a priority",
            ));
        }
        if job.state != JobState::Pending {
            return Err(Rejection::state(
                "job",
                job_id,
                job.state,
                "change the priority of",
            ));
        }
        if self
            .pools
            .get(&job.spec.pool)
            .is_none_or(|pool| pool.is_public())
        {
            return Err(Rejection::invalid(
                "priority",
                "the public pool has no priorities",
            ));
        }
        if priority == MAX_PRIORITY
            && !self
                .tenants
                .get(&job.tenant)
                .is_some_and(|tenant| tenant.may_use_high_priority)
        {
            return Err(Rejection::denied(
                "priority 3 needs the high-priority permission",
            ));
        }
        if priority == job.spec.priority {
            return Err(Rejection::invalid("priority", "no change"));
        }
        let tenant = job.tenant;
        // Take the job out of the queue under its old key, then put it back.
        let key = super::lifecycle::queue_key(job);
        let pool_id = job.spec.pool;
        if let Some(queue) = self.queues.get_mut(&pool_id) {
            queue.remove(&key);
        }
        let job = self.job_mut(job_id);
        job.spec.priority = priority;
        job.generation += 1;
        self.sync_queue(job_id);
        context.emit(
            Some(tenant),
            Event::JobPriorityChanged {
                job: job_id,
                priority,
            },
        );
        Ok(None)
    }
}

//! Tenants and the flavor catalogue: platform-admin commands.

use super::{require_admin, Context, Created, Handled};
use crate::state::State;
use corral_model::flavor::CPU_ARCHITECTURES;
use corral_model::ids::TenantId;
use corral_model::limits::{
    MAX_ACTIVE_JOBS, MAX_FLAVORS, MAX_LABEL_BYTES, MAX_PRICE_MICROS_PER_HOUR, MAX_TENANTS,
};
use corral_model::names::{validate_name, validate_token_text};
use corral_model::{Event, Flavor, Rejection, Resources, Tenant};

impl State {
    pub(super) fn tenant_create(
        &mut self,
        context: &mut Context,
        name: &str,
        quota: &Resources,
        may_use_high_priority: bool,
        max_active_jobs: Option<u64>,
    ) -> Handled {
        require_admin(context.principal)?;
        validate_name("name", name)?;
        if max_active_jobs.is_some_and(|bound| bound > MAX_ACTIVE_JOBS as u64) {
            return Err(Rejection::invalid(
                "max_active_jobs",
                format!("must be at most {MAX_ACTIVE_JOBS}"),
            ));
        }
        if self.tenant_names.contains_key(name) {
            return Err(Rejection::exists("tenant", name));
        }
        if self.tenants.len() >= MAX_TENANTS {
            return Err(Rejection::limit("tenants", MAX_TENANTS));
        }
        self.counters.tenant += 1;
        let id = TenantId(self.counters.tenant);
        let tenant = Tenant {
            id,
            name: name.to_string(),
            quota: *quota,
            used: Resources::ZERO,
            may_use_high_priority,
            created_at_ms: context.at_ms,
            max_active_jobs,
        };
        self.tenants.insert(id, tenant);
        self.tenant_names.insert(name.to_string(), id);
        context.emit(Some(id), Event::TenantCreated { tenant: id });
        Ok(Some(Created::Tenant(id)))
    }

    pub(super) fn tenant_set_quota(
        &mut self,
        context: &mut Context,
        tenant_id: TenantId,
        quota: &Resources,
    ) -> Handled {
        require_admin(context.principal)?;
        let tenant = self
            .tenants
            .get_mut(&tenant_id)
            .ok_or_else(|| Rejection::not_found("tenant", tenant_id))?;
        if let Some(dimension) = tenant.used.first_exceeding(quota) {
            return Err(Rejection::invalid(
                "quota",
                format!(
                    "{dimension} is below what the tenant's running work holds; stop work first"
                ),
            ));
        }
        tenant.quota = *quota;
        context.emit(
            Some(tenant_id),
            Event::TenantQuotaChanged { tenant: tenant_id },
        );
        Ok(None)
    }

    pub(super) fn tenant_delete(&mut self, context: &mut Context, tenant_id: TenantId) -> Handled {
        require_admin(context.principal)?;
        let tenant = self
            .tenants
            .get(&tenant_id)
            .ok_or_else(|| Rejection::not_found("tenant", tenant_id))?;
        if let Some(pool) = self
            .pools
            .values()
            .find(|pool| pool.owner() == Some(tenant_id))
        {
            return Err(Rejection::in_use(
                "tenant",
                tenant_id,
                format!("pool {}", pool.id),
            ));
        }
        if let Some(network) = self
            .networks
            .values()
            .find(|network| network.tenant == tenant_id)
        {
            return Err(Rejection::in_use(
                "tenant",
                tenant_id,
                format!("network {}", network.id),
            ));
        }
        if let Some(job) = self
            .jobs
            .values()
            .find(|job| job.tenant == tenant_id && !job.state.is_terminal())
        {
            return Err(Rejection::in_use(
                "tenant",
                tenant_id,
                format!("job {}", job.id),
            ));
        }
        let name = tenant.name.clone();
        for queues in self.pool_queues.values_mut() {
            for queue in queues.values_mut() {
                queue.members.remove(&tenant_id);
            }
        }
        self.tenants.remove(&tenant_id);
        self.tenant_names.remove(&name);
        let revoked: Vec<String> = self
            .tokens
            .values()
            .filter(|token| token.tenant() == Some(tenant_id))
            .map(|token| token.name.clone())
            .collect();
        for token_name in revoked {
            self.remove_token(context, &token_name);
        }
        context.emit(Some(tenant_id), Event::TenantDeleted { tenant: tenant_id });
        Ok(None)
    }

    pub(super) fn flavor_define(&mut self, context: &mut Context, flavor: &Flavor) -> Handled {
        require_admin(context.principal)?;
        validate_flavor(flavor)?;
        if self.flavors.contains_key(&flavor.name) {
            return Err(Rejection::exists("flavor", flavor.name.clone()));
        }
        if self.flavors.len() >= MAX_FLAVORS {
            return Err(Rejection::limit("flavors", MAX_FLAVORS));
        }
        self.flavors.insert(flavor.name.clone(), flavor.clone());
        context.emit(
            None,
            Event::FlavorDefined {
                name: flavor.name.clone(),
            },
        );
        Ok(None)
    }
}

fn validate_flavor(flavor: &Flavor) -> Result<(), Rejection> {
    validate_name("name", &flavor.name)?;
    let capacity = &flavor.capacity;
    if capacity.cpu_millicores == 0 || capacity.memory_mib == 0 {
        return Err(Rejection::invalid(
            "capacity",
            "a flavor needs CPU and memory",
        ));
    }
    if capacity.accelerators > corral_model::limits::MAX_ACCELERATORS_PER_NODE {
        return Err(Rejection::invalid(
            "capacity.accelerators",
            "at most 64 accelerators per node",
        ));
    }
    match (&flavor.accelerator_type, capacity.accelerators) {
        (Some(kind), count) if count > 0 => {
            validate_token_text("accelerator_type", kind, MAX_LABEL_BYTES)?
        }
        (None, 0) => {}
        _ => {
            return Err(Rejection::invalid(
                "accelerator_type",
                "must be set exactly when the flavor has accelerators",
            ))
        }
    }
    if flavor.price_micros_per_hour > MAX_PRICE_MICROS_PER_HOUR {
        return Err(Rejection::invalid(
            "price_micros_per_hour",
            format!("must be at most {MAX_PRICE_MICROS_PER_HOUR}"),
        ));
    }
    if !CPU_ARCHITECTURES.contains(&flavor.cpu_architecture.as_str()) {
        return Err(Rejection::invalid(
            "cpu_architecture",
            "must be x86_64 or aarch64",
        ));
    }
    Ok(())
}

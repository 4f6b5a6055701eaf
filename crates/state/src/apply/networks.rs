//! Tenant networks: create with a validated, non-overlapping CIDR; attach storage
//! endpoints; delete when unused.

use super::{require_owner, Context, Created, Handled};
use crate::state::State;
use corral_model::ids::{NetworkId, TenantId};
use corral_model::limits::{
    MAX_NETWORKS_PER_TENANT, MAX_STORAGE_ENDPOINTS, MAX_STORAGE_ENDPOINT_BYTES,
};
use corral_model::names::{validate_name, validate_token_text};
use corral_model::{Cidr, Event, Network, Rejection};
use std::collections::BTreeMap;

impl State {
    pub(super) fn network_create(
        &mut self,
        context: &mut Context,
        tenant: TenantId,
        name: &str,
        cidr_text: &str,
    ) -> Handled {
        require_owner(context.principal, tenant, "tenant", tenant)?;
        if !self.tenants.contains_key(&tenant) {
            return Err(Rejection::not_found("tenant", tenant));
        }
        validate_name("name", name)?;
        let cidr = Cidr::parse(cidr_text)?;
        cidr.validate_for_tenant()?;
        let owned: Vec<&Network> = self
            .networks
            .values()
            .filter(|network| network.tenant == tenant)
            .collect();
        if owned.iter().any(|network| network.name == name) {
            return Err(Rejection::exists("network", name));
        }
        if owned.len() >= MAX_NETWORKS_PER_TENANT {
            return Err(Rejection::limit(
                "networks per tenant",
                MAX_NETWORKS_PER_TENANT,
            ));
        }
        if let Some(other) = owned.iter().find(|network| network.cidr.overlaps(&cidr)) {
            return Err(Rejection::Overlap {
                cidr: cidr.to_string(),
                other: format!("network {} ({})", other.name, other.cidr),
            });
        }
        self.counters.network += 1;
        let id = NetworkId(self.counters.network);
        let network = Network {
            id,
            tenant,
            name: name.to_string(),
            cidr,
            addresses: BTreeMap::new(),
            created_at_ms: context.at_ms,
            storage_endpoints: Vec::new(),
        };
        self.networks.insert(id, network);
        context.emit(Some(tenant), Event::NetworkCreated { network: id });
        Ok(Some(Created::Network(id)))
    }

    pub(super) fn network_set_storage(
        &mut self,
        context: &mut Context,
        network_id: NetworkId,
        endpoints: &[String],
    ) -> Handled {
        let network = self
            .networks
            .get(&network_id)
            .ok_or_else(|| Rejection::not_found("network", network_id))?;
        require_owner(context.principal, network.tenant, "network", network_id)?;
        if endpoints.len() > MAX_STORAGE_ENDPOINTS {
            return Err(Rejection::limit("storage endpoints", MAX_STORAGE_ENDPOINTS));
        }
        for endpoint in endpoints {
            // Printable, no spaces or commas: the agent joins them with commas.
            validate_token_text("endpoints", endpoint, MAX_STORAGE_ENDPOINT_BYTES)?;
            if endpoint.contains(',') {
                return Err(Rejection::invalid(
                    "endpoints",
                    "an endpoint may not contain ','",
                ));
            }
        }
        let tenant = network.tenant;
        if let Some(network) = self.networks.get_mut(&network_id) {
            network.storage_endpoints = endpoints.to_vec();
        }
        context.emit(
            Some(tenant),
            Event::NetworkStorageChanged {
                network: network_id,
            },
        );
        Ok(None)
    }

    pub(super) fn network_delete(
        &mut self,
        context: &mut Context,
        network_id: NetworkId,
    ) -> Handled {
        let network = self
            .networks
            .get(&network_id)
            .ok_or_else(|| Rejection::not_found("network", network_id))?;
        require_owner(context.principal, network.tenant, "network", network_id)?;
        if let Some(pool) = self
            .pools
            .values()
            .find(|pool| pool.network == Some(network_id))
        {
            return Err(Rejection::in_use(
                "network",
                network_id,
                format!("pool {}", pool.id),
            ));
        }
        let tenant = network.tenant;
        self.networks.remove(&network_id);
        context.emit(
            Some(tenant),
            Event::NetworkDeleted {
                network: network_id,
            },
        );
        Ok(None)
    }
}

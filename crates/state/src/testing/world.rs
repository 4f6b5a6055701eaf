//! The standard world most state tests start from.

use crate::testing::{quota, Fx, CPU, GPU, NPU, ZONE};
use corral_model::ids::{NetworkId, NodeId, PoolId, TenantId};
use corral_model::{BillingMode, Node, Principal};

/// The standard world most tests start from:
/// - flavors GPU (8 A100, x86_64), CPU (x86_64), NPU (aarch64);
/// - tenants alpha (may use priority 3, 64 accelerators) and beta (32 accelerators);
/// - ten GPU nodes, four CPU nodes and two NPU nodes in zone-a, registered by agents;
/// - networks alpha-net 192.168.0.0/24 and beta-net 172.16.0.0/16;
/// - the public pool with 2 GPU + 1 CPU nodes; alpha's pay-per-use pool with 2 GPU +
///   1 CPU nodes. Six GPU, two CPU and both NPU nodes stay free.
pub struct World {
    pub fx: Fx,
    pub alpha: TenantId,
    pub beta: TenantId,
    pub alpha_net: NetworkId,
    pub beta_net: NetworkId,
    pub public: PoolId,
    pub alpha_pool: PoolId,
    pub public_gpus: Vec<NodeId>,
    pub public_cpu: NodeId,
    pub alpha_gpus: Vec<NodeId>,
    pub alpha_cpu: NodeId,
}

impl World {
    pub fn new() -> World {
        let mut fx = Fx::new();
        fx.define_catalog();
        let alpha = fx.create_tenant("alpha", quota(64), true);
        let beta = fx.create_tenant("beta", quota(32), false);
        fx.register_nodes("gpu", GPU, ZONE, 10);
        fx.register_nodes("cpu", CPU, ZONE, 4);
        fx.register_nodes("npu", NPU, ZONE, 2);
        let alpha_net = fx.create_network(alpha, "alpha-net", "192.168.0.0/24");
        let beta_net = fx.create_network(beta, "beta-net", "172.16.0.0/16");
        let public = fx.create_public_pool(&[(GPU, 2), (CPU, 1)]);
        let alpha_pool = fx.create_dedicated_pool(
            alpha,
            "alpha-pool",
            alpha_net,
            &[(GPU, 2), (CPU, 1)],
            BillingMode::PayPerUse,
        );
        let split = |fx: &Fx, pool: PoolId| {
            let nodes: Vec<&Node> = fx.state.pool_nodes(pool).collect();
            let gpus = nodes
                .iter()
                .filter(|node| node.flavor == GPU)
                .map(|node| node.id)
                .collect::<Vec<_>>();
            let cpu = nodes
                .iter()
                .find(|node| node.flavor == CPU)
                .map(|node| node.id)
                .expect("a CPU node");
            (gpus, cpu)
        };
        let (public_gpus, public_cpu) = split(&fx, public);
        let (alpha_gpus, alpha_cpu) = split(&fx, alpha_pool);
        World {
            fx,
            alpha,
            beta,
            alpha_net,
            beta_net,
            public,
            alpha_pool,
            public_gpus,
            public_cpu,
            alpha_gpus,
            alpha_cpu,
        }
    }

    pub fn alpha_user(&self) -> Principal {
        Principal::TenantUser(self.alpha)
    }

    pub fn beta_user(&self) -> Principal {
        Principal::TenantUser(self.beta)
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl std::ops::Deref for World {
    type Target = Fx;
    fn deref(&self) -> &Fx {
        &self.fx
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut Fx {
        &mut self.fx
    }
}

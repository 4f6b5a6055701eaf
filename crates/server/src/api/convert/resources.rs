//! Resource vectors: the protobuf `Resources` message and `corral_model::Resources`
//! have the same fields and units.

use corral_model::Resources;
use corral_wire::pb;

/// A missing message is the zero vector.
pub fn resources_from_proto(resources: Option<&pb::Resources>) -> Resources {
    match resources {
        None => Resources::ZERO,
        Some(resources) => Resources {
            cpu_millicores: resources.cpu_millicores,
            memory_mib: resources.memory_mib,
            accelerators: resources.accelerators,
            disk_gib: resources.disk_gib,
            bandwidth_mbps: resources.bandwidth_mbps,
        },
    }
}

pub fn resources_to_proto(resources: &Resources) -> pb::Resources {
    pb::Resources {
        cpu_millicores: resources.cpu_millicores,
        memory_mib: resources.memory_mib,
        accelerators: resources.accelerators,
        disk_gib: resources.disk_gib,
        bandwidth_mbps: resources.bandwidth_mbps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_is_zero() {
        let resources = Resources {
            cpu_millicores: 1,
            memory_mib: 2,
            accelerators: 3,
            disk_gib: 4,
            bandwidth_mbps: 5,
        };
        assert_eq!(
            resources_from_proto(Some(&resources_to_proto(&resources))),
            resources
        );
        assert_eq!(resources_from_proto(None), Resources::ZERO);
    }
}

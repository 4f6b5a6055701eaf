//! Flavors: the catalogue entry the platform admin defines, both ways.

use super::bounds::{bounded_text, optional_text};
use super::resources::{resources_from_proto, resources_to_proto};
use corral_model::limits::{MAX_LABEL_BYTES, MAX_NAME_BYTES};
use corral_model::{Command, Flavor};
use corral_wire::pb;
use tonic::Status;

/// An empty accelerator type means a CPU-only flavor.
pub fn flavor_from_proto(flavor: &pb::Flavor) -> Result<Flavor, Status> {
    Ok(Flavor {
        name: bounded_text("name", &flavor.name, MAX_NAME_BYTES)?,
        capacity: resources_from_proto(flavor.capacity.as_ref()),
        accelerator_type: optional_text(
            "accelerator_type",
            &flavor.accelerator_type,
            MAX_LABEL_BYTES,
        )?,
        cpu_architecture: bounded_text(
            "cpu_architecture",
            &flavor.cpu_architecture,
            MAX_LABEL_BYTES,
        )?,
        price_micros_per_hour: flavor.price_micros_per_hour,
    })
}

pub fn command_from_define_flavor(flavor: &pb::Flavor) -> Result<Command, Status> {
    flavor_from_proto(flavor).map(Command::FlavorDefine)
}

pub fn flavor_to_proto(flavor: &Flavor) -> pb::Flavor {
    pb::Flavor {
        name: flavor.name.clone(),
        capacity: Some(resources_to_proto(&flavor.capacity)),
        accelerator_type: flavor.accelerator_type.clone().unwrap_or_default(),
        cpu_architecture: flavor.cpu_architecture.clone(),
        price_micros_per_hour: flavor.price_micros_per_hour,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::Resources;

    fn gpu_flavor() -> Flavor {
        Flavor {
            name: "gpu-a100-8".into(),
            capacity: Resources {
                cpu_millicores: 64_000,
                memory_mib: 512 * 1024,
                accelerators: 8,
                disk_gib: 2_000,
                bandwidth_mbps: 25_000,
            },
            accelerator_type: Some("nvidia-a100".into()),
            cpu_architecture: "x86_64".into(),
            price_micros_per_hour: 8_000_000,
        }
    }

    #[test]
    fn flavors_round_trip() {
        let gpu = gpu_flavor();
        assert_eq!(flavor_from_proto(&flavor_to_proto(&gpu)).unwrap(), gpu);
        let cpu = Flavor {
            accelerator_type: None,
            ..gpu_flavor()
        };
        assert_eq!(flavor_to_proto(&cpu).accelerator_type, "");
        assert_eq!(flavor_from_proto(&flavor_to_proto(&cpu)).unwrap(), cpu);
        assert_eq!(
            command_from_define_flavor(&flavor_to_proto(&cpu)).unwrap(),
            Command::FlavorDefine(cpu)
        );
    }

    #[test]
    fn oversize_fields_are_refused() {
        let mut proto = flavor_to_proto(&gpu_flavor());
        proto.accelerator_type = "a".repeat(MAX_LABEL_BYTES + 1);
        assert!(flavor_from_proto(&proto)
            .unwrap_err()
            .message()
            .starts_with("invalid accelerator_type:"));
    }
}

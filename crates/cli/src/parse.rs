//! Parsers for argument values: prefixed ids, `NAME:ZONE:COUNT`, `KEY=VALUE`, taints
//! and tolerations. Each returns a one-line message clap shows as a usage error.

use corral_client::pb;

/// An id written as `<prefix>-<n>` or `<n>`; 0 is not an id.
fn prefixed_id(text: &str, prefix: &str, what: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or(text);
    match digits.parse::<u64>() {
        Ok(0) => Err(format!("'{text}' is not a {what} id (ids start at 1)")),
        Ok(id) => Ok(id),
        Err(_) => Err(format!(
            "'{text}' is not a {what} id (expected {prefix}-N or N)"
        )),
    }
}

pub fn job_id(text: &str) -> Result<u64, String> {
    prefixed_id(text, "job", "job")
}

pub fn pool_id(text: &str) -> Result<u64, String> {
    prefixed_id(text, "pool", "pool")
}

pub fn node_id(text: &str) -> Result<u64, String> {
    prefixed_id(text, "node", "node")
}

pub fn tenant_id(text: &str) -> Result<u64, String> {
    prefixed_id(text, "tenant", "tenant")
}

pub fn network_id(text: &str) -> Result<u64, String> {
    let text = text.trim();
    match text.strip_prefix("network-") {
        Some(rest) => prefixed_id(rest, "net", "network"),
        None => prefixed_id(text, "net", "network"),
    }
}

/// A duration as `<n>s`, `<n>m`, `<n>h` or `<n>d` (or bare seconds), in seconds.
pub fn duration_seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit_seconds) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3_600),
        Some((at, 'd')) => (&text[..at], 86_400),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(unit_seconds))
        .ok_or_else(|| format!("'{text}' is not a duration (e.g. 30s, 15m, 12h, 90d)"))
}

/// A point in time (RFC 3339, or a time ago such as `2h`), in ms since the epoch.
pub fn time_ms(text: &str) -> Result<u64, String> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    crate::times::parse_time_ms(text, now_ms)
}

/// `corral dev --replicas`: 1 or 3.
pub fn dev_replicas(text: &str) -> Result<u8, String> {
    match text.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        other => Err(format!("'{other}' replicas: dev mode runs 1 or 3")),
    }
}

/// `NAME:ZONE:COUNT`, e.g. `gpu-8x-a100:az1:4`.
pub fn pool_flavor(text: &str) -> Result<pb::PoolFlavor, String> {
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    let [flavor, zone, count] = parts.as_slice() else {
        return Err(format!(
            "'{text}' is not NAME:ZONE:COUNT (e.g. gpu-8x-a100:az1:4)"
        ));
    };
    if flavor.is_empty() {
        return Err(format!("'{text}': the flavor name is empty"));
    }
    if zone.is_empty() {
        return Err(format!("'{text}': the zone is empty"));
    }
    let node_count = count
        .parse::<u32>()
        .map_err(|_| format!("'{text}': the node count '{count}' is not a whole number"))?;
    Ok(pb::PoolFlavor {
        flavor: flavor.to_string(),
        zone: zone.to_string(),
        node_count,
    })
}

/// `KEY=VALUE` (the value may be empty and may contain `=`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("'{text}' is not KEY=VALUE"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("'{text}': the key is empty"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A secret variable: `KEY=VALUE`, or `KEY` with the value of this process's own
/// environment variable `KEY` (out of sight of `ps`).
pub fn secret_env(text: &str) -> Result<(String, String), String> {
    if text.contains('=') {
        return key_value(text);
    }
    let key = text.trim();
    if key.is_empty() {
        return Err("the secret variable's name is empty".to_string());
    }
    match std::env::var(key) {
        Ok(value) => Ok((key.to_string(), value)),
        Err(_) => Err(format!(
            "'{key}': give KEY=VALUE, or set {key} in this command's environment"
        )),
    }
}

/// `KEY` or `KEY=VALUE`.
pub fn toleration(text: &str) -> Result<pb::Toleration, String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("'{text}': the toleration key is empty"));
    }
    Ok(pb::Toleration {
        key: key.to_string(),
        value: value.to_string(),
    })
}

pub const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `KEY[=VALUE][:EFFECT]`; EFFECT (any case) defaults to NoSchedule.
pub fn taint(text: &str) -> Result<pb::Taint, String> {
    let (rest, effect) = match text.rsplit_once(':') {
        Some((rest, effect)) => {
            let effect = TAINT_EFFECTS
                .iter()
                .find(|known| known.eq_ignore_ascii_case(effect.trim()))
                .ok_or_else(|| {
                    format!(
                        "'{text}': unknown taint effect '{effect}' (expected {})",
                        TAINT_EFFECTS.join(", ")
                    )
                })?;
            (rest, *effect)
        }
        None => (text, TAINT_EFFECTS[0]),
    };
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("'{text}': the taint key is empty"));
    }
    Ok(pb::Taint {
        key: key.to_string(),
        value: value.to_string(),
        effect: effect.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_take_an_optional_prefix() {
        assert_eq!(job_id("job-42"), Ok(42));
        assert_eq!(job_id("42"), Ok(42));
        assert_eq!(network_id("net-3"), Ok(3));
        assert_eq!(network_id("network-3"), Ok(3));
        assert_eq!(tenant_id("tenant-1"), Ok(1));
        assert_eq!(
            job_id("pool-42").unwrap_err(),
            "'pool-42' is not a job id (expected job-N or N)"
        );
        assert_eq!(
            node_id("0").unwrap_err(),
            "'0' is not a node id (ids start at 1)"
        );
        assert!(pool_id("").is_err());
        assert!(pool_id("pool-").is_err());
        assert!(pool_id("-3").is_err());
    }

    #[test]
    fn pool_flavors_are_name_zone_count() {
        assert_eq!(
            pool_flavor("gpu-8x:az1:3"),
            Ok(pb::PoolFlavor {
                flavor: "gpu-8x".into(),
                zone: "az1".into(),
                node_count: 3
            })
        );
        assert_eq!(
            pool_flavor("a:b").unwrap_err(),
            "'a:b' is not NAME:ZONE:COUNT (e.g. gpu-8x-a100:az1:4)"
        );
        assert_eq!(
            pool_flavor("a:b:c:4").unwrap_err(),
            "'a:b:c:4' is not NAME:ZONE:COUNT (e.g. gpu-8x-a100:az1:4)"
        );
        assert_eq!(
            pool_flavor("a:b:x").unwrap_err(),
            "'a:b:x': the node count 'x' is not a whole number"
        );
        assert_eq!(
            pool_flavor("a:b:-1").unwrap_err(),
            "'a:b:-1': the node count '-1' is not a whole number"
        );
        assert_eq!(
            pool_flavor(":b:1").unwrap_err(),
            "'\u{3a}b:1': the flavor name is empty"
        );
        assert_eq!(
            pool_flavor("a::1").unwrap_err(),
            "'a::1': the zone is empty"
        );
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(key_value("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(key_value("A="), Ok(("A".into(), String::new())));
        assert_eq!(key_value("A").unwrap_err(), "'A' is not KEY=VALUE");
        assert_eq!(key_value("=1").unwrap_err(), "'=1': the key is empty");
    }

    #[test]
    fn tolerations_and_taints() {
        assert_eq!(
            toleration("gpu"),
            Ok(pb::Toleration {
                key: "gpu".into(),
                value: String::new()
            })
        );
        assert_eq!(
            toleration("gpu=a100"),
            Ok(pb::Toleration {
                key: "gpu".into(),
                value: "a100".into()
            })
        );
        assert!(toleration("=x").is_err());
        let taint_of = |key: &str, value: &str, effect: &str| pb::Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        };
        assert_eq!(taint("gpu"), Ok(taint_of("gpu", "", "NoSchedule")));
        assert_eq!(
            taint("gpu=a:noexecute"),
            Ok(taint_of("gpu", "a", "NoExecute"))
        );
        assert_eq!(
            taint("gpu:PreferNoSchedule"),
            Ok(taint_of("gpu", "", "PreferNoSchedule"))
        );
        assert!(taint("gpu:Sometimes")
            .unwrap_err()
            .contains("unknown taint effect 'Sometimes'"));
        assert!(taint(":NoSchedule").is_err());
    }

    #[test]
    fn dev_runs_one_or_three_replicas() {
        assert_eq!(dev_replicas("3"), Ok(3));
        assert!(dev_replicas("2").is_err());
    }
}

/// A queue's resources as `corral queue` takes them: `cpu=MILLICORES,memory=MIB,gpu=N,
/// disk=GIB,bandwidth=MBPS`, each at most once; which dimensions were named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueResources {
    pub named: Vec<(QueueDimension, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueDimension {
    Cpu,
    Memory,
    Accelerators,
    Disk,
    Bandwidth,
}

impl QueueResources {
    /// The resources, with `unnamed` for every dimension not named.
    pub fn to_proto(&self, unnamed: &pb::Resources) -> pb::Resources {
        let mut resources = *unnamed;
        for (dimension, value) in &self.named {
            match dimension {
                QueueDimension::Cpu => resources.cpu_millicores = *value,
                QueueDimension::Memory => resources.memory_mib = *value,
                QueueDimension::Accelerators => {
                    resources.accelerators = u32::try_from(*value).unwrap_or(u32::MAX)
                }
                QueueDimension::Disk => resources.disk_gib = *value,
                QueueDimension::Bandwidth => resources.bandwidth_mbps = *value,
            }
        }
        resources
    }
}

pub fn queue_resources(text: &str) -> Result<QueueResources, String> {
    let mut named: Vec<(QueueDimension, u64)> = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not KEY=VALUE"))?;
        let dimension = match key.trim() {
            "cpu" => QueueDimension::Cpu,
            "memory" | "mem" => QueueDimension::Memory,
            "gpu" | "accelerators" => QueueDimension::Accelerators,
            "disk" => QueueDimension::Disk,
            "bandwidth" => QueueDimension::Bandwidth,
            other if other.starts_with("gpu:") => {
                return Err(format!(
                    "'{other}': queues count accelerators without a type (use gpu=N)"
                ))
            }
            other => {
                return Err(format!(
                    "'{other}' is not one of cpu, memory, gpu, disk, bandwidth"
                ))
            }
        };
        let value: u64 = value
            .trim()
            .parse()
            .map_err(|_| format!("'{item}': the value is not a whole number"))?;
        if dimension == QueueDimension::Accelerators && value > u64::from(u32::MAX) {
            return Err(format!("'{item}': too many accelerators"));
        }
        if named.iter().any(|(seen, _)| *seen == dimension) {
            return Err(format!("'{key}' is named twice"));
        }
        named.push((dimension, value));
    }
    Ok(QueueResources { named })
}

#[cfg(test)]
mod queue_resource_tests {
    use super::*;

    #[test]
    fn queue_resources_name_dimensions_and_leave_the_rest() {
        let parsed = queue_resources("cpu=4000, memory=8192,gpu=2").unwrap();
        let unbounded = pb::Resources {
            cpu_millicores: u64::MAX,
            memory_mib: u64::MAX,
            accelerators: u32::MAX,
            disk_gib: u64::MAX,
            bandwidth_mbps: u64::MAX,
        };
        let resources = parsed.to_proto(&unbounded);
        assert_eq!(resources.cpu_millicores, 4000);
        assert_eq!(resources.memory_mib, 8192);
        assert_eq!(resources.accelerators, 2);
        assert_eq!(resources.disk_gib, u64::MAX);
        assert!(queue_resources("cpu=1,cpu=2").is_err());
        assert!(queue_resources("gpu:a100=2").is_err());
        assert!(queue_resources("tpu=1").is_err());
        assert!(queue_resources("cpu").is_err());
        assert_eq!(queue_resources("").unwrap(), QueueResources::default());
    }
}

//! A vector of the resources a node offers and a replica asks for. Integer units only,
//! named in the field, so nothing that decides placement uses floating point.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Resources {
    pub cpu_millicores: u64,
    pub memory_mib: u64,
    pub accelerators: u32,
    pub disk_gib: u64,
    pub bandwidth_mbps: u64,
}

/// Names of the resource dimensions, in the order `Resources::dimensions` returns them.
pub const DIMENSION_NAMES: [&str; 5] = [
    "cpu_millicores",
    "memory_mib",
    "accelerators",
    "disk_gib",
    "bandwidth_mbps",
];

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millicores: 0,
        memory_mib: 0,
        accelerators: 0,
        disk_gib: 0,
        bandwidth_mbps: 0,
    };

    pub fn dimensions(&self) -> [u64; 5] {
        [
            self.cpu_millicores,
            self.memory_mib,
            u64::from(self.accelerators),
            self.disk_gib,
            self.bandwidth_mbps,
        ]
    }

    pub fn is_zero(&self) -> bool {
        self.dimensions().iter().all(|value| *value == 0)
    }

    /// True when every dimension of `self` is at most the same dimension of `other`.
    pub fn fits_within(&self, other: &Resources) -> bool {
        self.dimensions()
            .iter()
            .zip(other.dimensions().iter())
            .all(|(need, have)| need <= have)
    }

    /// The first dimension where `self` exceeds `other`, for error messages.
    pub fn first_exceeding(&self, other: &Resources) -> Option<&'static str> {
        self.dimensions()
            .iter()
            .zip(other.dimensions().iter())
            .position(|(need, have)| need > have)
            .map(|index| DIMENSION_NAMES[index])
    }

    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millicores: self.cpu_millicores.checked_add(other.cpu_millicores)?,
            memory_mib: self.memory_mib.checked_add(other.memory_mib)?,
            accelerators: self.accelerators.checked_add(other.accelerators)?,
            disk_gib: self.disk_gib.checked_add(other.disk_gib)?,
            bandwidth_mbps: self.bandwidth_mbps.checked_add(other.bandwidth_mbps)?,
        })
    }

    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millicores: self.cpu_millicores.checked_sub(other.cpu_millicores)?,
            memory_mib: self.memory_mib.checked_sub(other.memory_mib)?,
            accelerators: self.accelerators.checked_sub(other.accelerators)?,
            disk_gib: self.disk_gib.checked_sub(other.disk_gib)?,
            bandwidth_mbps: self.bandwidth_mbps.checked_sub(other.bandwidth_mbps)?,
        })
    }

    /// Addition that saturates; for totals in reports, never for accounting.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millicores: self.cpu_millicores.saturating_add(other.cpu_millicores),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            accelerators: self.accelerators.saturating_add(other.accelerators),
            disk_gib: self.disk_gib.saturating_add(other.disk_gib),
            bandwidth_mbps: self.bandwidth_mbps.saturating_add(other.bandwidth_mbps),
        }
    }

    pub fn checked_mul(&self, factor: u32) -> Option<Resources> {
        let factor_wide = u64::from(factor);
        Some(Resources {
            cpu_millicores: self.cpu_millicores.checked_mul(factor_wide)?,
            memory_mib: self.memory_mib.checked_mul(factor_wide)?,
            accelerators: self.accelerators.checked_mul(factor)?,
            disk_gib: self.disk_gib.checked_mul(factor_wide)?,
            bandwidth_mbps: self.bandwidth_mbps.checked_mul(factor_wide)?,
        })
    }

    /// The largest share, in parts per million, that `self` takes of `total` over all
    /// dimensions `total` offers. This is the dominant share of dominant-resource
    /// fairness, in integers so that every replica computes the same value.
    pub fn dominant_share_ppm(&self, total: &Resources) -> u64 {
        self.dimensions()
            .iter()
            .zip(total.dimensions().iter())
            .filter(|(_, have)| **have > 0)
            .map(|(used, have)| {
                let share = u128::from(*used) * 1_000_000 / u128::from(*have);
                u64::try_from(share).unwrap_or(u64::MAX)
            })
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "cpu={}m mem={}MiB acc={} disk={}GiB bw={}Mbps",
            self.cpu_millicores,
            self.memory_mib,
            self.accelerators,
            self.disk_gib,
            self.bandwidth_mbps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(cpu: u64, accelerators: u32) -> Resources {
        Resources {
            cpu_millicores: cpu,
            memory_mib: 1024,
            accelerators,
            disk_gib: 10,
            bandwidth_mbps: 100,
        }
    }

    #[test]
    fn fits_within_checks_every_dimension() {
        assert!(resources(1000, 1).fits_within(&resources(2000, 1)));
        assert!(!resources(1000, 2).fits_within(&resources(2000, 1)));
        assert_eq!(
            resources(1000, 2).first_exceeding(&resources(2000, 1)),
            Some("accelerators")
        );
    }

    #[test]
    fn subtraction_below_zero_is_refused() {
        assert!(resources(1000, 1)
            .checked_sub(&resources(2000, 1))
            .is_none());
        assert_eq!(
            resources(3000, 2).checked_sub(&resources(1000, 1)),
            Some(Resources {
                cpu_millicores: 2000,
                memory_mib: 0,
                accelerators: 1,
                disk_gib: 0,
                bandwidth_mbps: 0
            })
        );
    }

    #[test]
    fn dominant_share_is_the_largest_dimension_share() {
        let total = resources(10_000, 8);
        let used = Resources {
            cpu_millicores: 1000,
            accelerators: 4,
            ..Resources::ZERO
        };
        assert_eq!(used.dominant_share_ppm(&total), 500_000);
        assert_eq!(Resources::ZERO.dominant_share_ppm(&Resources::ZERO), 0);
    }
}

//! Tenant networks: a CIDR in one of the allowed private ranges, never overlapping the
//! tenant's other networks or the platform's own range, and the addresses handed to
//! nodes of pools attached to it.

use crate::ids::{NetworkId, NodeId, TenantId};
use crate::rejection::Rejection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub base: u32,
    pub prefix_length: u8,
}

/// The ranges a network may come from, with the shortest and longest prefix allowed
/// (ModelArts: 172.16.0.0/12 down to /24, or 192.168.0.0/16 down to /24).
const ALLOWED_RANGES: [(u32, u8, u8); 2] = [
    (0xAC10_0000, 12, 24), // 172.16.0.0/12
    (0xC0A8_0000, 16, 24), // 192.168.0.0/16
];

/// The platform's own range; no tenant network may overlap it.
pub const PLATFORM_RANGE: Cidr = Cidr {
    base: 0xAC1F_0000,
    prefix_length: 16,
}; // 172.31.0.0/16

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, Rejection> {
        let invalid = |reason: &str| {
            Rejection::invalid(
                "cidr",
                format!("'{}': {reason}", text.chars().take(40).collect::<String>()),
            )
        };
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| invalid("expected a.b.c.d/n"))?;
        let prefix_length: u8 = prefix
            .parse()
            .map_err(|_| invalid("prefix length is not a number"))?;
        if prefix_length > 32 {
            return Err(invalid("prefix length is above 32"));
        }
        let octets: Vec<&str> = address.split('.').collect();
        if octets.len() != 4 {
            return Err(invalid("expected four octets"));
        }
        let mut base = 0u32;
        for octet in octets {
            let value: u8 = octet
                .parse()
                .map_err(|_| invalid("an octet is not 0-255"))?;
            base = (base << 8) | u32::from(value);
        }
        let cidr = Cidr {
            base,
            prefix_length,
        };
        if base & !cidr.mask() != 0 {
            return Err(invalid("host bits are set"));
        }
        Ok(cidr)
    }

    pub fn mask(&self) -> u32 {
        if self.prefix_length == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_length))
        }
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_length))
    }

    pub fn contains(&self, address: u32) -> bool {
        address & self.mask() == self.base
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix_length.min(other.prefix_length);
        let mask = Cidr {
            base: 0,
            prefix_length: shorter,
        }
        .mask();
        self.base & mask == other.base & mask
    }

    /// Checks the allowed ranges and prefix lengths and the platform range.
    pub fn validate_for_tenant(&self) -> Result<(), Rejection> {
        let allowed = ALLOWED_RANGES
            .iter()
            .any(|(range_base, range_prefix, longest)| {
                let range = Cidr {
                    base: *range_base,
                    prefix_length: *range_prefix,
                };
                self.prefix_length >= *range_prefix
                    && self.prefix_length <= *longest
                    && range.contains(self.base)
            });
        if !allowed {
            return Err(Rejection::invalid(
                "cidr",
                format!("{self} must lie in 172.16.0.0/12 (prefix /12 to /24) or 192.168.0.0/16 (prefix /16 to /24)"),
            ));
        }
        if self.overlaps(&PLATFORM_RANGE) {
            return Err(Rejection::Overlap {
                cidr: self.to_string(),
                other: format!("the platform range {PLATFORM_RANGE}"),
            });
        }
        Ok(())
    }

    /// Usable host addresses: skip the network address, the gateway (.1) and broadcast.
    pub fn first_host(&self) -> u32 {
        self.base + 2
    }

    pub fn last_host(&self) -> u32 {
        // size >= 256 for allowed prefixes, so this cannot underflow.
        self.base + (self.size() as u32) - 2
    }
}

pub fn format_ipv4(address: u32) -> String {
    let octets = address.to_be_bytes();
    format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3])
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}",
            format_ipv4(self.base),
            self.prefix_length
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub tenant: TenantId,
    pub name: String,
    pub cidr: Cidr,
    /// Addresses handed out, to which node.
    pub addresses: BTreeMap<u32, NodeId>,
    pub created_at_ms: u64,
    /// Storage reachable from this network (e.g. an SFS Turbo mount target or an OBS
    /// endpoint, `host:port` or a URL); handed to every replica of its pools as
    /// CORRAL_STORAGE_ENDPOINTS.
    pub storage_endpoints: Vec<String>,
}

impl Network {
    /// A free host address: the one after the highest in use when there is one (cheap,
    /// the common case while a range fills), otherwise the lowest gap.
    pub fn next_free_address(&self) -> Option<u32> {
        let after_highest = match self.addresses.keys().next_back() {
            Some(highest) => highest.checked_add(1),
            None => Some(self.cidr.first_host()),
        };
        if let Some(address) = after_highest.filter(|address| *address <= self.cidr.last_host()) {
            return Some(address);
        }
        let mut expected = self.cidr.first_host();
        for address in self.addresses.keys() {
            if *address != expected {
                break;
            }
            expected += 1;
        }
        (expected <= self.cidr.last_host()).then_some(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cidr = Cidr::parse("192.168.1.0/24").unwrap();
        assert_eq!(cidr.to_string(), "192.168.1.0/24");
        assert!(Cidr::parse("192.168.1.1/24").is_err(), "host bits");
        assert!(Cidr::parse("192.168.1/24").is_err());
        assert!(Cidr::parse("192.168.1.0/33").is_err());
        assert!(Cidr::parse("300.1.1.0/24").is_err());
    }

    #[test]
    fn allowed_ranges_and_prefixes() {
        assert!(Cidr::parse("192.168.0.0/16")
            .unwrap()
            .validate_for_tenant()
            .is_ok());
        assert!(Cidr::parse("172.16.0.0/16")
            .unwrap()
            .validate_for_tenant()
            .is_ok());
        assert!(Cidr::parse("10.0.0.0/16")
            .unwrap()
            .validate_for_tenant()
            .is_err());
        assert!(Cidr::parse("192.168.0.0/25")
            .unwrap()
            .validate_for_tenant()
            .is_err());
        assert!(Cidr::parse("192.0.0.0/8")
            .unwrap()
            .validate_for_tenant()
            .is_err());
        assert!(matches!(
            Cidr::parse("172.31.4.0/24").unwrap().validate_for_tenant(),
            Err(Rejection::Overlap { .. })
        ));
    }

    #[test]
    fn free_addresses_fill_the_range_then_reuse_gaps() {
        let mut network = Network {
            id: NetworkId(1),
            tenant: TenantId(1),
            name: "net".into(),
            cidr: Cidr::parse("192.168.0.0/24").unwrap(),
            addresses: BTreeMap::new(),
            created_at_ms: 0,
            storage_endpoints: Vec::new(),
        };
        let mut handed_out = Vec::new();
        while let Some(address) = network.next_free_address() {
            network
                .addresses
                .insert(address, NodeId(u64::from(address)));
            handed_out.push(address);
        }
        assert_eq!(
            handed_out.len(),
            253,
            "256 minus network, gateway and broadcast"
        );
        assert_eq!(format_ipv4(handed_out[0]), "192.168.0.2");
        network.addresses.remove(&handed_out[10]);
        assert_eq!(network.next_free_address(), Some(handed_out[10]));
    }

    #[test]
    fn overlap_is_symmetric() {
        let wide = Cidr::parse("172.16.0.0/12").unwrap();
        let narrow = Cidr::parse("172.20.1.0/24").unwrap();
        let apart = Cidr::parse("192.168.0.0/24").unwrap();
        assert!(wide.overlaps(&narrow) && narrow.overlaps(&wide));
        assert!(!wide.overlaps(&apart) && !apart.overlaps(&wide));
    }
}

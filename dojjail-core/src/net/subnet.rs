//! IPv4 subnets and address allocation.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet such as `10.0.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a subnet string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetError(pub(crate) String);

impl fmt::Display for SubnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(cidr: &str) -> Result<Self, SubnetError> {
        let (address, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| SubnetError("it has no /prefix; write it like 10.0.0.0/24".into()))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| SubnetError(format!("{address:?} is not an IPv4 address")))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| {
            SubnetError(format!("{prefix:?} is not a prefix length from 0 to 32"))
        })?;
        if prefix > 30 {
            return Err(SubnetError(format!(
                "a /{prefix} has no room for two hosts; use /30 or shorter"
            )));
        }
        let subnet = Subnet {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        };
        if subnet.network != address {
            return Err(SubnetError(format!(
                "{address} has host bits set for a /{prefix}; did you mean {subnet}?"
            )));
        }
        Ok(subnet)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl Subnet {
    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `address` lies in this subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == u32::from(self.network)
    }

    /// Usable host addresses, lowest first: never the network or broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network) + 1..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_allocates_from_the_first_usable_address() {
        let subnet: Subnet = "10.0.0.0/24".parse().unwrap();
        let mut hosts = subnet.hosts();
        assert_eq!(hosts.next(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(subnet.hosts().last(), Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(subnet.broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        assert_eq!(
            "192.168.7.0/30".parse::<Subnet>().unwrap().hosts().count(),
            2
        );
    }

    #[test]
    fn rejects_malformed_subnets_with_a_reason() {
        for (cidr, words) in [
            ("10.0.0.0", "no /prefix"),
            ("10.0.0/24", "not an IPv4 address"),
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.0/31", "no room"),
            ("10.0.0.5/24", "did you mean 10.0.0.0/24"),
        ] {
            let error = cidr.parse::<Subnet>().unwrap_err();
            assert!(error.0.contains(words), "{cidr}: {error}");
        }
    }
}

//! A target's identity, its group and address: the key that health checks, the backend
//! lifecycle, the installer and the metrics share. A leaf module (it uses nothing else in
//! the crate), so the health checker does not depend on the data plane through it.

use std::{fmt, net::IpAddr};

/// A target: its group and address.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetKey {
    pub group: String,
    pub address: IpAddr,
}

impl TargetKey {
    pub fn new(group: &str, address: IpAddr) -> Self {
        Self {
            group: group.to_owned(),
            address,
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.address)
    }
}

//! Host settings the data plane depends on: bpffs mounted where pins go, and IP
//! forwarding enabled on the interface (`bpf_fib_lookup` answers only for forwarding
//! interfaces).

use std::path::PathBuf;

use tracing::{info, warn};

use super::DataplaneError;

/// Where bpffs is expected; mounted by [`ensure_bpffs`] when it is not.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Enables IPv4 and IPv6 forwarding on `iface`: `bpf_fib_lookup` answers only for
/// interfaces that forward, so without it every VIP packet would count as `fib_failed`.
/// Logs each value it changes.
pub fn enable_forwarding(iface: &str) -> Result<(), DataplaneError> {
    for family in ["ipv4", "ipv6"] {
        let path = PathBuf::from(format!("/proc/sys/net/{family}/conf/{iface}/forwarding"));
        let current = std::fs::read_to_string(&path).map_err(|source| DataplaneError::Fs {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        if current.trim() != "1" {
            std::fs::write(&path, "1").map_err(|source| DataplaneError::Fs {
                what: "writing",
                path: path.clone(),
                source,
            })?;
            info!(
                iface,
                family, "enabled forwarding (bpf_fib_lookup needs it)"
            );
        }
    }
    Ok(())
}

/// Mounts bpffs at [`BPFFS`] unless it already is (it is not mounted at boot on every
/// distribution).
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|source| DataplaneError::Fs {
        what: "reading",
        path: "/proc/mounts".into(),
        source,
    })?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next();
        f.next() == Some(BPFFS) && f.next() == Some("bpf")
    });
    if !mounted {
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(DataplaneError::MountBpffs)?;
        warn!(
            path = BPFFS,
            "mounted bpffs: pins outlive the agent only if this mount is in the host's mount \
             namespace (under `ip netns exec` it is private and vanishes at exit; use \
             `nsenter --net=/run/netns/<name>` there)"
        );
    }
    Ok(())
}

//! The agent's file descriptor budget. Every health probe holds a socket (an exec probe
//! its pipes) until it ends, which for a target that never answers is its timeout, so
//! 10,000 such targets want thousands at once; the agent also needs descriptors for its
//! maps, rings being swapped, the admin socket and its clients, and the state file. A
//! service manager's default soft limit (systemd: 1,024) is far below that, so the agent
//! raises the soft limit to the hard one at start, and lets probes use at most half of
//! what is left after a reserve for everything else.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{info, warn};

use crate::health::MAX_IN_FLIGHT;

/// Descriptors kept for everything but health probes.
pub const RESERVED: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard one; returns the soft limit in force and
/// how many probes may run at once under it.
pub fn raise() -> (u64, usize) {
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                warn!(soft, hard, "could not raise the open file limit: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            warn!("reading the open file limit: {e}");
            1024
        }
    };
    let probes = probes_in_flight(soft);
    info!(
        open_files = soft,
        probes_in_flight = probes,
        "file descriptor budget"
    );
    (soft, probes)
}

/// Probes in flight at most under a limit of `open_files` descriptors.
pub fn probes_in_flight(open_files: u64) -> usize {
    let budget = open_files.saturating_sub(RESERVED) / 2;
    usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .clamp(16, MAX_IN_FLIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_fit_the_limit() {
        assert_eq!(probes_in_flight(1024), 384);
        assert_eq!(probes_in_flight(20_000), MAX_IN_FLIGHT);
        assert_eq!(probes_in_flight(100), 16);
        assert!(probes_in_flight(4096) as u64 * 2 + RESERVED <= 4096);
    }
}

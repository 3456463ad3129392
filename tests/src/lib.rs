//! lb's integration-test harness: the packet builder, the `BPF_PROG_TEST_RUN` fixture
//! runner and the network-namespace topology builder. The tests themselves live in
//! `tests/tests/`; the demo binary in `src/bin/`.

pub mod agentnet;
pub mod bench;
pub mod faults;
pub mod fixture;
pub mod fleet;
pub mod lbnet;
pub mod netns;
pub mod packet;
pub mod scenario;
pub mod workload;

use anyhow::Context as _;
use lb_agent::dataplane::{Dataplane, LoadOptions};

/// Flow-table size for tests: small, because every test loads its own data plane and the
/// table's memory is preallocated.
pub const TEST_FLOW_ENTRIES: u32 = 65536;

/// Loads the production eBPF object (the one embedded in the agent) through the agent's
/// own `Dataplane`, without attaching it anywhere. Fails with the reason when this process
/// may not load BPF programs, so a privileged test never passes silently.
pub fn production_dataplane() -> anyhow::Result<Dataplane> {
    netns::require_root()?;
    let object = lb_agent::object::load_bytes(None)?;
    Dataplane::load_with(
        &object,
        &LoadOptions {
            flow_entries: TEST_FLOW_ENTRIES,
        },
    )
    .context("loading the production eBPF object")
}

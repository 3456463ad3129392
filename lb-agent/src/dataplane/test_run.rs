//! `BPF_PROG_TEST_RUN` of the XDP program: the fixture suite and the benchmarks run the
//! production program through this, with the maps configured by the agent's own code.

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::programs;

use super::{Dataplane, DataplaneError};

/// The result of one `BPF_PROG_TEST_RUN` of the XDP program.
#[derive(Debug)]
pub struct TestRunOutcome {
    /// The raw return value; [`lb_common::Verdict::from_u32`] decodes it.
    pub return_value: u32,
    /// The frame as the program left it.
    pub output: Vec<u8>,
    /// The kernel's average time per repetition.
    pub duration: std::time::Duration,
}

impl Dataplane {
    /// Runs `lb_xdp`; see [`run_xdp`].
    pub fn test_run(
        &self,
        input: &[u8],
        repeat: u32,
        headroom: usize,
        ingress_ifindex: Option<u32>,
    ) -> Result<TestRunOutcome, DataplaneError> {
        run_xdp(
            &self.ebpf,
            programs::LB_XDP,
            input,
            repeat,
            headroom,
            ingress_ifindex,
        )
    }
}

impl Dataplane {
    /// Runs the no-op baseline program (`lb_noop`), loading it on first use, so that
    /// benchmarks can subtract the cost of the test-run machinery itself.
    pub fn test_run_noop(
        &mut self,
        input: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(programs::LB_NOOP)
            .ok_or(DataplaneError::MissingProgram(programs::LB_NOOP))?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                action: "finding lb_noop",
                source,
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| DataplaneError::Program {
                action: "loading lb_noop",
                source,
            })?;
        }
        run_xdp(&self.ebpf, programs::LB_NOOP, input, repeat, 0, None)
    }
}

/// Runs XDP program `name` of `ebpf` `repeat` times on `input`.
///
/// `headroom` is how many bytes the output
/// may grow by (encapsulation). With `ingress_ifindex`, the run behaves as if the frame
/// arrived on that interface of the calling thread's network namespace (FIB lookups
/// then see that namespace's routes and neighbours); the interface must have XDP
/// receive-queue info registered (a veth with an XDP program attached does).
pub(super) fn run_xdp(
    ebpf: &aya::Ebpf,
    name: &'static str,
    input: &[u8],
    repeat: u32,
    headroom: usize,
    ingress_ifindex: Option<u32>,
) -> Result<TestRunOutcome, DataplaneError> {
    let prog: &Xdp = ebpf
        .program(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            action: "finding the XDP program",
            source,
        })?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex (u32 each). The kernel reads `data` as the metadata length (0
    // here) and requires `data_end` to equal the input length and `data_meta` to be 0.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
    if let Some(ifindex) = ingress_ifindex {
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    }
    let mut output = vec![0u8; input.len() + headroom];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut output),
            ctx_in: ingress_ifindex.map(|_| &ctx[..]),
            repeat,
            ..Default::default()
        })
        .map_err(|source| DataplaneError::Program {
            action: "BPF_PROG_TEST_RUN",
            source,
        })?;
    output.truncate(result.data_size_out as usize);
    Ok(TestRunOutcome {
        return_value: result.return_value,
        output,
        duration: result.duration,
    })
}

//! `lb-agent decap`, the backend side: strips lb's tunnels (IPIP, IP6IP6, 4in6, 6in4, GUE)
//! in XDP for hosts whose kernel has no ipip / fou modules, until SIGINT/SIGTERM. The
//! program and its maps are `crate::dataplane::decap`'s; this is the command around it.

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::{agent::options::Mode, dataplane::decap::DecapPlane, object};

/// Options of `lb-agent decap`.
#[derive(clap::Args, Clone, Debug)]
pub struct DecapOptions {
    /// The backend's interface facing the load balancer.
    #[arg(long)]
    pub iface: String,
    /// Outer destination addresses to decapsulate for (this host's addresses that
    /// lb tunnels to). Repeat for several.
    #[arg(long = "address", required = true)]
    pub addresses: Vec<IpAddr>,
    /// Accept GUE on this UDP port.
    #[arg(long)]
    pub gue_port: Option<u16>,
    #[arg(long, value_enum, default_value_t = Mode::Native)]
    pub xdp_mode: Mode,
    /// Load this eBPF object instead of the one embedded at build time.
    #[arg(long)]
    pub bpf_object: Option<PathBuf>,
}

/// Loads and attaches lb_decap, then waits for a signal; it detaches on the way out.
pub fn run(opts: DecapOptions) -> anyhow::Result<()> {
    let DecapOptions {
        iface,
        addresses,
        gue_port,
        xdp_mode,
        bpf_object,
    } = opts;
    let iface = iface.as_str();
    let bytes = object::load_bytes(bpf_object.as_deref())?;
    let mut plane = DecapPlane::load(&bytes).context("loading lb_decap")?;
    for a in &addresses {
        plane.add_address(*a)?;
    }
    if let Some(port) = gue_port {
        plane.set_gue_port(port)?;
    }
    plane
        .attach(iface, xdp_mode.into())
        .with_context(|| format!("attaching lb_decap to {iface}"))?;
    let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    info!(iface, addresses = list.join(","), gue_port, "decapsulating");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let signal_name = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        anyhow::Ok(tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        })
    })?;
    let c = plane.counters()?;
    let counts: Vec<String> = lb_common::decap::DecapEvent::ALL
        .iter()
        .map(|e| format!("{}={}", e.name(), c[*e as usize].packets))
        .collect();
    info!(
        signal = signal_name,
        counters = counts.join(" "),
        "stopping; lb_decap detaches"
    );
    Ok(())
}

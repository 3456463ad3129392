//! `lb-agent`: loads lb's XDP data plane onto an interface and owns it while it runs.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use lb_agent::{
    dataplane::{self, AttachMode, Counters, Dataplane},
    object,
};
use lb_common::{TrafficClass, Verdict};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

/// lb's agent: loads and owns the XDP load-balancer data plane.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the data plane, attach it to an interface, and run until SIGINT/SIGTERM.
    ///
    /// Without --persist, stopping the agent detaches the program and leaves nothing
    /// behind. With --persist, the program stays attached and its maps stay pinned under
    /// /sys/fs/bpf/lb/<iface> after the agent exits; `lb-agent down` removes them.
    Run {
        /// Interface to attach to (the load balancer's ingress).
        #[arg(long)]
        iface: String,
        /// XDP attach mode. Native runs in the driver; generic is slow and for testing.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
        /// Keep the program attached and its maps pinned after the agent exits.
        #[arg(long)]
        persist: bool,
        /// Load this eBPF object instead of the one embedded at build time.
        #[arg(long)]
        bpf_object: Option<PathBuf>,
        /// Seconds between counter summaries in the log (0 turns them off).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
    },
    /// Remove persisted state for an interface: detach the program and unpin its maps.
    Down {
        #[arg(long)]
        iface: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Native,
    Generic,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            iface,
            xdp_mode,
            persist,
            bpf_object,
            stats_interval,
        } => run(&iface, xdp_mode, persist, bpf_object, stats_interval),
        Command::Down { iface } => down(&iface),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    iface: &str,
    mode: Mode,
    persist: bool,
    bpf_object: Option<PathBuf>,
    stats_interval: u64,
) -> anyhow::Result<()> {
    let bytes = object::load_bytes(bpf_object.as_deref())?;
    let mut dp = Dataplane::load(&bytes).context("loading the data plane")?;
    let mode = match mode {
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    dataplane::enable_forwarding(iface)?;
    dp.attach(iface, mode)
        .with_context(|| format!("attaching to {iface}"))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let signal_name = rt.block_on(wait_for_stop(&dp, stats_interval))?;
    info!(signal = signal_name, "stopping");
    log_counters(&dp.counters()?);
    if persist {
        dp.persist().context("pinning the data plane")?;
    } else {
        dp.detach().context("detaching")?;
    }
    Ok(())
}

/// Logs counters every `stats_interval` seconds until SIGINT or SIGTERM arrives.
async fn wait_for_stop(dp: &Dataplane, stats_interval: u64) -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let period = Duration::from_secs(stats_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = ticker.tick(), if stats_interval > 0 => log_counters(&dp.counters()?),
        }
    }
}

fn log_counters(c: &Counters) {
    let verdicts: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| format!("{}={}", v.name(), c.verdict(*v).packets))
        .collect();
    let traffic: Vec<String> = TrafficClass::ALL
        .iter()
        .filter(|t| c.traffic(**t).packets > 0)
        .map(|t| format!("{}={}", t.name(), c.traffic(*t).packets))
        .collect();
    info!(
        verdicts = verdicts.join(" "),
        traffic = traffic.join(" "),
        "packet counters"
    );
}

fn down(iface: &str) -> anyhow::Result<()> {
    if dataplane::down(iface)? {
        println!("lb: removed persisted data plane on {iface}");
    } else {
        println!("lb: nothing persisted for {iface}");
    }
    Ok(())
}

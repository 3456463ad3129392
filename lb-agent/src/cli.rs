//! The `lb-agent` command line (the binary's `main.rs` dispatches it): in the library so
//! that completions cover every subcommand and tests can check the definition.

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

/// lb's agent: loads and owns the XDP load-balancer data plane.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the data plane, attach it to an interface, and run until SIGINT/SIGTERM.
    ///
    /// The program, its maps (flow table and counters included) and its link are pinned
    /// under /sys/fs/bpf/lb/<iface>: stopping or killing the agent never stops forwarding,
    /// and the next `run` adopts them (replacing the program atomically, which is also
    /// how an upgrade to a new object happens). `lb-agent down` removes it all.
    /// With --ephemeral nothing is pinned and stopping the agent detaches the program.
    Run {
        /// Interface to attach to (the load balancer's ingress).
        #[arg(long)]
        iface: String,
        /// XDP attach mode. Native runs in the driver; generic is slow and for testing.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
        /// Pin nothing; detach when the agent stops (for trying things out).
        #[arg(long)]
        ephemeral: bool,
        /// Start from scratch: detach and unpin whatever a previous agent left on this
        /// interface (its flow table, counters and runtime edits) before loading. Flows
        /// in progress re-hash; use it when the pinned state is not wanted any more.
        #[arg(long, conflicts_with = "ephemeral")]
        reset: bool,
        /// Load this eBPF object instead of the one embedded at build time.
        #[arg(long)]
        bpf_object: Option<PathBuf>,
        /// Seconds between counter summaries in the log (0 turns them off).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
        /// Configuration file (VIPs, target groups; see examples/lb.toml). Applied at
        /// start; SIGHUP re-reads it, and an invalid file leaves the running one in place.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Admin socket for `lb-agent ctl` [default: /run/lb/admin.sock, or
        /// /run/lb/netns-<name>/admin.sock in a named network namespace].
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
        /// Let this group use the admin socket too (mode 0660 instead of 0600).
        #[arg(long, value_name = "GROUP")]
        admin_group: Option<String>,
    },
    /// Talk to the running agent through its admin socket (status, VIPs, backends,
    /// "which backend for this flow?", apply with --dry-run, counters, down).
    Ctl(crate::admin::ctl::CtlArgs),
    /// Print a shell completion script for the whole `lb-agent` command line, e.g.
    /// `lb-agent completions bash > /etc/bash_completion.d/lb-agent`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Backend side: strip lb's tunnels (IPIP, IP6IP6, 4in6, 6in4, GUE) addressed to this
    /// host, for kernels without the ipip / fou modules. Runs until SIGINT/SIGTERM.
    ///
    /// Also gives a veth backend the XDP receive path that frames redirected by lb need.
    Decap {
        /// The backend's interface facing the load balancer.
        #[arg(long)]
        iface: String,
        /// Outer destination addresses to decapsulate for (this host's addresses that
        /// lb tunnels to). Repeat for several.
        #[arg(long = "address", required = true)]
        addresses: Vec<std::net::IpAddr>,
        /// Accept GUE on this UDP port.
        #[arg(long)]
        gue_port: Option<u16>,
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
        /// Load this eBPF object instead of the one embedded at build time.
        #[arg(long)]
        bpf_object: Option<PathBuf>,
    },
    /// Remove persisted state for an interface: detach the program and unpin its maps.
    Down {
        #[arg(long)]
        iface: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Native,
    Generic,
}

/// Writes a completion script for the whole `lb-agent` command line to `out`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "lb-agent", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_cover_every_subcommand() {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let shell: clap_complete::Shell = shell.parse().expect("shell");
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            let s = String::from_utf8(out).expect("utf8");
            for word in [
                "run",
                "decap",
                "down",
                "ctl",
                "set-weight",
                "reset",
                "bpf-object",
            ] {
                assert!(s.contains(word), "{shell}: {word} missing");
            }
        }
    }

    #[test]
    fn reset_and_ephemeral_conflict() {
        let e = Cli::try_parse_from(["lb-agent", "run", "--iface", "x", "--reset", "--ephemeral"])
            .expect_err("conflict");
        assert!(e.to_string().contains("cannot be used with"), "{e}");
        let c = Cli::try_parse_from(["lb-agent", "run", "--iface", "x", "--reset"]).expect("parse");
        assert!(matches!(c.command, Command::Run { reset: true, .. }));
    }
}

//! The `lb-agent` command line (the binary's `main.rs` dispatches it): in the library so
//! that completions cover every subcommand and tests can check the definition.

use clap::{CommandFactory as _, Parser, Subcommand};

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
    Run(crate::agent::RunOptions),
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
    Decap(crate::decap::DecapOptions),
    /// Take a host out after its agent stopped: withdraw its VIP routes, keep forwarding
    /// for the grace period, then detach the program and unpin its maps. (With the agent
    /// running, use `lb-agent ctl down`.)
    Down {
        #[arg(long)]
        iface: String,
        /// Seconds to keep forwarding after withdrawing [default: the saved
        /// configuration's [announce] down_grace_secs; none when nothing was announced].
        #[arg(long)]
        grace_secs: Option<u64>,
    },
}

pub use crate::agent::options::Mode;

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
        assert!(matches!(
            c.command,
            Command::Run(crate::agent::RunOptions { reset: true, .. })
        ));
    }
}

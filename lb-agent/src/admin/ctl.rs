//! `lb-agent ctl`: the admin command line. Sends one command to the running agent over
//! its admin socket and prints the answer as a table (or as JSON with `--json`).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use super::{
    client::{self, ClientError},
    protocol::{Command, MetricsFormat, Proto, VipSpec},
    table,
};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lb/admin.sock";

/// Talk to a running lb-agent through its admin socket.
///
/// Every command prints a table for people; add --json to get the agent's JSON result
/// instead (for scripts; errors then also go to stdout as
/// {"ok":false,"error":{"code":…,"message":…}}). The socket is root-only unless the
/// agent was given an admin group. The protocol is described in docs/admin-protocol.md.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(after_help = "Examples:
  lb-agent ctl status
  lb-agent ctl vip list
  lb-agent ctl backend drain web 10.0.0.7
  lb-agent ctl flow tcp 198.18.10.2 40000 198.18.200.1 80
  lb-agent ctl apply /etc/lb/lb.toml --dry-run
  lb-agent ctl --json stats | jq .drops")]
pub struct CtlArgs {
    /// The agent's admin socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the agent's JSON result instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the agent's answer.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum CtlCommand {
    /// The agent's state: version, interface, configuration, how many VIPs and backends.
    Status,
    /// List, inspect, add or remove VIPs.
    #[command(subcommand)]
    Vip(VipCommand),
    /// List backends, or change one: add, remove, re-weight, drain.
    ///
    /// Backends belong to target groups; a VIP sends its flows to its group's backends,
    /// so a change to a group's backend affects every VIP using that group.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Which backend a flow goes to, answered from the data plane's own ring and flow
    /// table: an established flow keeps its backend (flow table), a new one is hashed
    /// onto the VIP's ring.
    Flow {
        /// tcp or udp.
        proto: Proto,
        /// Client address.
        src: IpAddr,
        /// Client port.
        sport: u16,
        /// VIP address.
        dst: IpAddr,
        /// VIP port.
        dport: u16,
    },
    /// Load a configuration file and apply it. Before committing, see what moves with
    /// --dry-run: per VIP, how many ring slots change backend (forced by removed or
    /// re-weighted backends, versus collateral) and how many live flows that touches.
    ///
    /// The agent reads the file itself, so the path is made absolute here.
    Apply {
        /// The configuration file (see examples/lb.toml).
        file: PathBuf,
        /// Only report what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Data-plane counters: verdicts, traffic classes, drop reasons, events.
    Stats,
    /// The last completed metrics period (CloudWatch NLB metric names, units and
    /// dimensions), or with `--format prom` the Prometheus page of the current counters.
    Metrics {
        /// emf (Embedded Metric Format lines), datum (PutMetricData requests), json, prom.
        #[arg(long, value_enum, default_value = "json")]
        format: MetricsFormat,
    },
    /// A live view, refreshed every second, of packets/s, bytes/s, new flows/s, active
    /// flows and health per VIP and per target, as `top` shows processes. Ctrl-C quits.
    Top {
        /// Stop after this many refreshes (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print the running configuration as TOML: the file plus every runtime edit
    /// (`vip add`, `backend set-weight`, …). Save it to keep the edits: the next
    /// `apply` or SIGHUP replaces the running configuration with the file.
    Config,
    /// Withdraw every VIP from the routing daemon (their routes leave the announce
    /// table) while this host keeps forwarding: the upstream router moves the flows to
    /// the other hosts, which send them to the same targets. Kept across agent restarts
    /// until `announce`.
    Withdraw,
    /// Undo `withdraw`: VIPs are announced again as their policies say.
    Announce,
    /// Take the host out gracefully and stop the agent: withdraw every VIP, keep
    /// forwarding for the grace period so the router moves the flows elsewhere, then
    /// detach the data plane (traffic reaching this host is no longer load-balanced).
    Down {
        /// Seconds to keep forwarding after withdrawing [default: [announce]
        /// down_grace_secs; none when nothing was announced].
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Print a shell completion script for the whole `lb-agent` command line (the same
    /// as `lb-agent completions`), e.g.
    /// `lb-agent ctl completions bash > /etc/bash_completion.d/lb-agent`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum VipCommand {
    /// Every VIP: address, port (* = all ports), protocol, mode, backends, ring
    /// fingerprint.
    List,
    /// One VIP in detail, with its target group's backends.
    Show {
        /// The VIP's name (as in the configuration).
        name: String,
    },
    /// Add a VIP sending to an existing target group.
    Add(VipSpec),
    /// Remove a VIP: its packets are passed to the host unchanged from then on.
    Remove { name: String },
}

#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum BackendCommand {
    /// Backends with weight, state and live flows; all groups or one.
    List {
        /// Only this target group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Add a backend to a target group.
    Add {
        group: String,
        address: IpAddr,
        /// Relative share of new flows.
        #[arg(long, default_value_t = 1)]
        weight: u16,
    },
    /// Remove a backend: its ring slots move to the others, and its established flows
    /// re-hash.
    Remove { group: String, address: IpAddr },
    /// Change a backend's weight. 0 quiesces it: no new flows, established ones continue.
    SetWeight {
        group: String,
        address: IpAddr,
        weight: u16,
    },
    /// Stop sending new flows to a backend; established flows continue.
    Drain { group: String, address: IpAddr },
    /// Let a drained backend take new flows again.
    Undrain { group: String, address: IpAddr },
}

/// For parsing `ctl` arguments on their own (tests, completions).
#[derive(Parser, Debug)]
#[command(name = "ctl")]
pub struct CtlCli {
    #[command(flatten)]
    pub args: CtlArgs,
}

impl CtlCommand {
    /// The protocol command, or `None` for commands answered locally.
    pub fn to_request(&self) -> anyhow::Result<Option<Command>> {
        Ok(Some(match self.clone() {
            CtlCommand::Status => Command::Status,
            CtlCommand::Vip(VipCommand::List) => Command::VipList,
            CtlCommand::Vip(VipCommand::Show { name }) => Command::VipShow { name },
            CtlCommand::Vip(VipCommand::Add(vip)) => Command::VipAdd(vip),
            CtlCommand::Vip(VipCommand::Remove { name }) => Command::VipRemove { name },
            CtlCommand::Backend(b) => match b {
                BackendCommand::List { group } => Command::BackendList { group },
                BackendCommand::Add {
                    group,
                    address,
                    weight,
                } => Command::BackendAdd {
                    group,
                    address,
                    weight,
                },
                BackendCommand::Remove { group, address } => {
                    Command::BackendRemove { group, address }
                }
                BackendCommand::SetWeight {
                    group,
                    address,
                    weight,
                } => Command::BackendSetWeight {
                    group,
                    address,
                    weight,
                },
                BackendCommand::Drain { group, address } => {
                    Command::BackendDrain { group, address }
                }
                BackendCommand::Undrain { group, address } => {
                    Command::BackendUndrain { group, address }
                }
            },
            CtlCommand::Flow {
                proto,
                src,
                sport,
                dst,
                dport,
            } => Command::Flow {
                proto,
                src,
                sport,
                dst,
                dport,
            },
            CtlCommand::Apply { file, dry_run } => {
                let abs =
                    std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
                Command::Apply {
                    path: abs.to_string_lossy().into_owned(),
                    dry_run,
                }
            }
            CtlCommand::Stats => Command::Stats,
            CtlCommand::Config => Command::ConfigShow,
            CtlCommand::Metrics { format } => Command::Metrics { format },
            CtlCommand::Top { .. } => Command::Top,
            CtlCommand::Withdraw => Command::Withdraw,
            CtlCommand::Announce => Command::Announce,
            CtlCommand::Down { grace_secs } => Command::Down { grace_secs },
            CtlCommand::Completions { .. } => return Ok(None),
        }))
    }
}

/// Renders `result` of `cmd` for people (each renderer reads the result into its
/// protocol type; see [`table`]).
pub fn render(cmd: &CtlCommand, result: &Value) -> String {
    match cmd {
        CtlCommand::Status => table::status(result),
        CtlCommand::Vip(VipCommand::List) => table::vip_list(result),
        CtlCommand::Vip(VipCommand::Show { .. }) => table::vip_show(result),
        CtlCommand::Vip(VipCommand::Add(_) | VipCommand::Remove { .. }) => table::edit(result),
        CtlCommand::Backend(BackendCommand::List { .. }) => table::backend_list(result),
        CtlCommand::Backend(
            BackendCommand::Add { .. }
            | BackendCommand::Remove { .. }
            | BackendCommand::SetWeight { .. },
        ) => table::edit(result),
        CtlCommand::Backend(BackendCommand::Drain { .. } | BackendCommand::Undrain { .. }) => {
            table::drain(result)
        }
        CtlCommand::Flow {
            proto,
            src,
            sport,
            dst,
            dport,
        } => table::flow(
            proto.as_str(),
            &src.to_string(),
            *sport,
            &dst.to_string(),
            *dport,
            result,
        ),
        CtlCommand::Apply { .. } => table::apply(result),
        CtlCommand::Stats => table::stats(result),
        CtlCommand::Config => table::config(result),
        CtlCommand::Metrics { format } => table::metrics(*format, result),
        CtlCommand::Top { .. } => table::top(result),
        CtlCommand::Withdraw | CtlCommand::Announce => table::withdraw(result),
        CtlCommand::Down { .. } => table::down(result),
        // Answered locally; nothing comes back to render.
        CtlCommand::Completions { .. } => table::done(result),
    }
}

/// Runs one `ctl` command: prints the result to stdout, returns an error (already
/// worded for people) when the agent could not be reached or refused the command.
pub fn run_ctl(args: CtlArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_ctl_to(&args, &mut out)
}

/// [`run_ctl`] writing to `out`.
pub fn run_ctl_to(args: &CtlArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    if let CtlCommand::Completions { shell } = &args.command {
        crate::cli::write_completions(*shell, out);
        return Ok(());
    }
    if let CtlCommand::Top { count } = &args.command {
        return top(args, *count, out);
    }
    let Some(request) = args.command.to_request()? else {
        return Ok(());
    };
    match call(
        &args.socket,
        request,
        Duration::from_secs(args.timeout.max(1)),
    ) {
        Ok(result) => {
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
            } else {
                out.write_all(render(&args.command, &result).as_bytes())?;
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                let body = match &e {
                    ClientError::Server(b) => serde_json::json!(b),
                    other => serde_json::json!({"code": "client", "message": other.to_string()}),
                };
                writeln!(out, "{}", serde_json::json!({"ok": false, "error": body}))?;
            }
            Err(anyhow::Error::new(e))
        }
    }
}

/// `ctl top`: one refresh a second, the screen cleared in between when it is a terminal.
fn top(args: &CtlArgs, count: Option<u64>, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let result = call(
            &args.socket,
            Command::Top,
            Duration::from_secs(args.timeout.max(1)),
        )?;
        if tty {
            // Home and clear, as top does.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&result)?)?;
        } else {
            out.write_all(table::top(&result).as_bytes())?;
        }
        out.flush()?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn call(path: &Path, cmd: Command, timeout: Duration) -> Result<Value, ClientError> {
    client::call(path, cmd, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{
        protocol::ErrorCode,
        tests::{Running, TempDir},
    };
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let mut v = vec!["ctl"];
        v.extend_from_slice(args);
        CtlCli::try_parse_from(v).map(|c| c.args)
    }

    fn request(args: &[&str]) -> Command {
        parse(args)
            .expect("parses")
            .command
            .to_request()
            .expect("request")
            .expect("remote command")
    }

    #[test]
    fn cli_definition_is_valid() {
        CtlCli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_maps_to_its_request() {
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let g = || "web".to_owned();
        assert_eq!(request(&["status"]), Command::Status);
        assert_eq!(request(&["vip", "list"]), Command::VipList);
        assert_eq!(
            request(&["vip", "show", "web"]),
            Command::VipShow { name: g() }
        );
        assert_eq!(
            request(&[
                "vip",
                "add",
                "web",
                "--address",
                "198.18.200.1",
                "--port",
                "80",
                "--target-group",
                "web"
            ]),
            Command::VipAdd(VipSpec {
                name: g(),
                address: "198.18.200.1".parse().expect("ip"),
                port: 80,
                proto: Proto::Tcp,
                target_group: g(),
                mode: None,
                gue_port: None,
                hash: None,
                ring_size: None,
                announce: None,
                announce_min_healthy: None,
            })
        );
        assert_eq!(
            request(&["vip", "remove", "web"]),
            Command::VipRemove { name: g() }
        );
        assert_eq!(
            request(&["backend", "list"]),
            Command::BackendList { group: None }
        );
        assert_eq!(
            request(&["backend", "list", "--group", "web"]),
            Command::BackendList { group: Some(g()) }
        );
        assert_eq!(
            request(&["backend", "add", "web", "10.0.0.1"]),
            Command::BackendAdd {
                group: g(),
                address: a,
                weight: 1
            }
        );
        assert_eq!(
            request(&["backend", "remove", "web", "10.0.0.1"]),
            Command::BackendRemove {
                group: g(),
                address: a
            }
        );
        assert_eq!(
            request(&["backend", "set-weight", "web", "10.0.0.1", "0"]),
            Command::BackendSetWeight {
                group: g(),
                address: a,
                weight: 0
            }
        );
        assert_eq!(
            request(&["backend", "drain", "web", "10.0.0.1"]),
            Command::BackendDrain {
                group: g(),
                address: a
            }
        );
        assert_eq!(
            request(&["backend", "undrain", "web", "10.0.0.1"]),
            Command::BackendUndrain {
                group: g(),
                address: a
            }
        );
        assert_eq!(
            request(&["flow", "udp", "2001:db8::1", "5353", "2001:db8::100", "53"]),
            Command::Flow {
                proto: Proto::Udp,
                src: "2001:db8::1".parse().expect("ip"),
                sport: 5353,
                dst: "2001:db8::100".parse().expect("ip"),
                dport: 53
            }
        );
        assert_eq!(request(&["stats"]), Command::Stats);
        assert_eq!(request(&["down"]), Command::Down { grace_secs: None });
        assert_eq!(
            request(&["down", "--grace-secs", "0"]),
            Command::Down {
                grace_secs: Some(0)
            }
        );
        assert_eq!(request(&["withdraw"]), Command::Withdraw);
        assert_eq!(request(&["announce"]), Command::Announce);
        // apply: the path is made absolute for the agent.
        let dir = TempDir::new();
        let file = dir.0.join("lb.toml");
        std::fs::write(&file, "").expect("write");
        let rel = pathdiff(&file);
        assert_eq!(
            request(&["apply", &rel, "--dry-run"]),
            Command::Apply {
                path: std::fs::canonicalize(&file)
                    .expect("canon")
                    .to_string_lossy()
                    .into_owned(),
                dry_run: true
            }
        );
        let missing = parse(&["apply", "/nonexistent/lb.toml"]).expect("parses");
        assert!(missing.command.to_request().is_err());
    }

    /// `path` relative to the current directory, via enough `..`.
    fn pathdiff(path: &Path) -> String {
        let cwd = std::env::current_dir().expect("cwd");
        let ups = cwd.components().count().saturating_sub(1);
        format!("{}{}", "../".repeat(ups), path.display()).replace("//", "/")
    }

    #[test]
    fn bad_arguments_are_refused_with_help() {
        for args in [
            &["flow", "icmp", "1.1.1.1", "1", "2.2.2.2", "2"][..],
            &["flow", "tcp", "1.1.1.1", "70000", "2.2.2.2", "2"],
            &["flow", "tcp", "not-an-ip", "1", "2.2.2.2", "2"],
            &["backend", "set-weight", "web", "10.0.0.1", "-1"],
            &["backend", "drain", "web"],
            &["vip", "frobnicate"],
            &["nope"],
            &[],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        let help = parse(&["--help"]).expect_err("help").to_string();
        assert!(
            help.contains("--json") && help.contains("Examples:"),
            "{help}"
        );
        let help = parse(&["backend", "set-weight", "--help"])
            .expect_err("help")
            .to_string();
        assert!(help.contains("0 quiesces"), "{help}");
    }

    #[test]
    fn global_flags_anywhere() {
        let a = parse(&["vip", "list", "--json", "--socket", "/tmp/x.sock"]).expect("parse");
        assert!(a.json);
        assert_eq!(a.socket, PathBuf::from("/tmp/x.sock"));
        let a = parse(&["status"]).expect("parse");
        assert!(!a.json);
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn completions_for_every_shell() {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let args = parse(&["completions", shell]).expect("parse");
            let mut out = Vec::new();
            run_ctl_to(&args, &mut out).expect("completions");
            let s = String::from_utf8(out).expect("utf8");
            assert!(s.contains("set-weight"), "{shell}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(feature = "privileged-tests"),
        ignore = "needs root: `cargo xtask test` runs it"
    )]
    async fn run_against_a_server() {
        let srv = Running::start().await;
        let sock = srv.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let run = |args: &[&str]| {
                let mut v = vec!["--socket", sock.as_str()];
                v.extend_from_slice(args);
                let a = parse(&v).expect("parse");
                let mut out = Vec::new();
                let r = run_ctl_to(&a, &mut out);
                (r, String::from_utf8(out).expect("utf8"))
            };
            // --json prints the result as JSON.
            let (r, out) = run(&["--json", "backend", "drain", "web", "10.0.0.1"]);
            r.expect("ok");
            let v: Value = serde_json::from_str(&out).expect("json");
            assert_eq!(v["echo"]["cmd"], "backend_drain");
            // Tables by default (the fake handler's echo renders generically).
            let (r, out) = run(&["down"]);
            r.expect("ok");
            assert!(out.contains("echo:"), "{out}");
            let (r, out) = run(&["vip", "list"]);
            r.expect("ok");
            assert!(out.starts_with("NAME  ADDRESS"), "{out}");
            // Errors: worded, and as JSON with --json.
            let (r, out) = run(&["vip", "show", "missing"]);
            let e = r.expect_err("not found");
            assert!(out.is_empty());
            assert!(e.to_string().contains("no VIP"), "{e}");
            let (r, out) = run(&["--json", "vip", "show", "missing"]);
            assert!(r.is_err());
            let v: Value = serde_json::from_str(&out).expect("json");
            assert_eq!(v["error"]["code"], "not_found");
            let (r, _) = run(&[
                "vip",
                "add",
                "x",
                "--address",
                "1.2.3.4",
                "--port",
                "1",
                "--target-group",
                "g",
            ]);
            let e = r.expect_err("unsupported");
            let ce = e.downcast_ref::<ClientError>().expect("client error");
            assert_eq!(ce.code(), Some(ErrorCode::Unsupported));
        })
        .await
        .expect("join");
        srv.stop().await;
    }

    #[test]
    fn agent_not_running() {
        let dir = TempDir::new();
        let sock = dir.0.join("admin.sock");
        let a = parse(&["--socket", &sock.display().to_string(), "status"]).expect("parse");
        let mut out = Vec::new();
        let e = run_ctl_to(&a, &mut out).expect_err("not running");
        assert!(e.to_string().contains("lb-agent is not running"), "{e}");
    }
}

//! `lb-agent`: parses the command line and hands each subcommand to the library, which
//! holds everything the binary does (so the integration tests drive the same code).

use std::process::ExitCode;

use clap::Parser as _;
use lb_agent::{
    admin, agent,
    cli::{self, Cli, Command},
    decap,
};
use tracing::error;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Run(opts) => agent::run(opts),
        Command::Ctl(args) => admin::ctl::run_ctl(args),
        Command::Completions { shell } => {
            cli::write_completions(shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Decap(opts) => decap::run(opts),
        Command::Down { iface, grace_secs } => agent::down(&iface, grace_secs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

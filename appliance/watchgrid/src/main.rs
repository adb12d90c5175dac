//! `watchgrid`: the Watchgrid appliance in one binary.

mod allocator;
mod cli;
mod control;
mod dataplane;

use clap::{Parser, Subcommand};
use cli::{admin, agent, serve, update, wg};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "watchgrid",
    version,
    about = "Self-hosted WireGuard hub and tools in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a userspace WireGuard interface, configured with wg(8) over
    /// /var/run/wireguard/IFNAME.sock (a drop-in for `wireguard-go IFNAME`).
    Wg(wg::WgArgs),
    /// Run the appliance daemon: WireGuard hub and HTTPS control plane.
    Serve(Box<serve::ServeArgs>),
    /// Local maintenance on a data dir (the daemon must be stopped).
    Admin(admin::AdminArgs),
    /// Run as a managed machine's agent: enroll with a hub, then keep a tunnel to it,
    /// heartbeat and run the operator's commands.
    Agent(agent::AgentArgs),
    /// Update the appliance image: signed bundles, installed into the inactive root slot
    /// and kept only once the new version boots healthy.
    Update(update::UpdateArgs),
}

fn main() -> ExitCode {
    allocator::limit_arenas();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wg(args) => wg::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Admin(args) => admin::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Update(args) => update::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchgrid: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to journald when systemd connected our output to the journal (it sets
/// JOURNAL_STREAM), to stderr otherwise. `RUST_LOG` (or `LOG_LEVEL`) sets the level,
/// `info` by default.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("LOG_LEVEL"))
        .unwrap_or_else(|_| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::new(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(journald)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("watchgrid: journald unavailable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A current-thread runtime: the dataplane is one task by design.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enrollment tokens are URL-safe base64, so one in 32 begins with '-'; clap must take
    /// it as the value of --token, not as an unknown option.
    #[test]
    fn an_enrollment_token_may_begin_with_a_hyphen() {
        for token in ["-K7abc", "--x", "-1"] {
            let parsed = Cli::try_parse_from([
                "watchgrid",
                "agent",
                "enroll",
                "--server",
                "https://hub",
                "--token",
                token,
            ]);
            assert!(parsed.is_ok(), "--token {token}: {:?}", parsed.err());
        }
    }
}

//! `watchgrid wg IFNAME`: a standalone userspace WireGuard interface.

use crate::dataplane::tun::{open_tun, validate_ifname};
use crate::dataplane::uapi::server::UapiSocket;
use crate::dataplane::Dataplane;
use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::process::Stdio;
use tokio::sync::mpsc;

/// Tells the background child to report readiness on stdout.
const READY_ENV: &str = "WATCHGRID_REPORT_READY";

#[derive(clap::Args)]
pub struct WgArgs {
    /// Stay in the foreground instead of detaching once the interface is up.
    #[arg(short, long)]
    foreground: bool,
    /// MTU of the TUN device (wireguard-go's default).
    #[arg(long, default_value_t = 1420)]
    mtu: u16,
    /// Interface name (at most 15 characters).
    ifname: String,
}

pub fn run(args: WgArgs) -> anyhow::Result<()> {
    validate_ifname(&args.ifname)?;
    if !args.foreground {
        return detach(&args);
    }
    crate::init_logging();
    let rt = crate::runtime()?;
    rt.block_on(async {
        let tun = open_tun(&args.ifname, args.mtu, None)?;
        let dataplane = Dataplane::new(tun, 0)?;
        let socket = UapiSocket::bind(&args.ifname)?;
        tracing::info!(interface = %args.ifname, port = dataplane.listen_port(), "interface up; configure it with wg(8)");
        if std::env::var_os(READY_ENV).is_some() {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready").and_then(|_| out.flush());
        }
        let (tx, rx) = mpsc::channel(16);
        let uapi = tokio::spawn(socket.serve(tx));
        let result = dataplane.run(rx, crate::shutdown_signal()).await.map(drop);
        // Dropping the server removes the socket file.
        uapi.abort();
        let _ = uapi.await;
        result
    })
}

/// Re-runs this binary in the foreground as a detached child and returns once the
/// child reports the interface ready (or fails), like `wireguard-go IFNAME`.
fn detach(args: &WgArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut child = std::process::Command::new(exe)
        .args([
            "wg",
            "--foreground",
            "--mtu",
            &args.mtu.to_string(),
            &args.ifname,
        ])
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the background process")?;
    let Some(stdout) = child.stdout.take() else {
        bail!("background process has no stdout");
    };
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .context("waiting for the background process")?;
    if line.trim() == "ready" {
        return Ok(());
    }
    let status = child.wait().context("waiting for the background process")?;
    bail!("the background process exited before the interface was ready ({status})")
}

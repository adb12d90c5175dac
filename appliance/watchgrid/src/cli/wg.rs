//! `watchgrid wg IFNAME`: a standalone userspace WireGuard interface.

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

pub fn validate_ifname(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("interface name {name:?} must be 1 to 15 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name == "."
        || name == ".."
    {
        bail!("interface name {name:?} may contain only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Creates the TUN device. With `addresses`, assigns them and brings the link up;
/// without, leaves it down for the operator (wireguard-go does the same).
pub fn open_tun(
    ifname: &str,
    mtu: u16,
    addresses: Option<&[(std::net::IpAddr, u8)]>,
) -> anyhow::Result<tun_rs::AsyncDevice> {
    let mut builder = tun_rs::DeviceBuilder::new().name(ifname).mtu(mtu);
    match addresses {
        Some(addrs) => {
            for (addr, len) in addrs {
                builder = match addr {
                    std::net::IpAddr::V4(v4) => builder.ipv4(*v4, *len, None),
                    std::net::IpAddr::V6(v6) => builder.ipv6(*v6, *len),
                };
            }
            builder = builder.enable(true);
        }
        None => builder = builder.enable(false),
    }
    builder.build_async().with_context(|| {
        format!("creating TUN interface {ifname} (needs CAP_NET_ADMIN and /dev/net/tun)")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(validate_ifname("wg0").is_ok());
        assert!(validate_ifname("a-b_c.d").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("../etc").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("wg 0").is_err());
    }
}

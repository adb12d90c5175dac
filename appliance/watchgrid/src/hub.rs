//! `watchgrid serve`: the appliance daemon. For now it runs the WireGuard hub: the
//! engine on a TUN device with the hub's addresses, its peers from the data dir, and
//! the UAPI socket so `wg show` works on the appliance.

use crate::dataplane::{Command, Dataplane};
use crate::uapi::protocol::SetRequest;
use crate::uapi::server::UapiSocket;
use crate::wgconf;
use anyhow::{bail, Context};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use watchgrid_core::{IpPrefix, Secret};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory (mode 0700): hub key and peer list.
    #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
    data_dir: PathBuf,
    /// WireGuard interface name.
    #[arg(long, env = "WATCHGRID_WG_INTERFACE", default_value = "wg0")]
    wg_interface: String,
    /// WireGuard UDP port.
    #[arg(long, env = "WATCHGRID_WG_PORT", default_value_t = 51820)]
    wg_port: u16,
    /// Hub addresses on the VPN, comma separated.
    #[arg(
        long,
        env = "WATCHGRID_HUB_ADDRESS",
        default_value = "10.100.0.1/16",
        value_delimiter = ','
    )]
    hub_address: Vec<String>,
    /// nftables rules owned by the daemon. Not available yet: only `off` is accepted.
    #[arg(long, env = "WATCHGRID_FIREWALL", default_value = "off")]
    firewall: String,
    /// MTU of the WireGuard interface.
    #[arg(long, env = "WATCHGRID_WG_MTU", default_value_t = 1420)]
    wg_mtu: u16,
}

/// The hub's private key, generated on first start.
const KEY_FILE: &str = "wg-private.key";
/// Peers in wg(8) setconf format ([Peer] sections).
const PEERS_FILE: &str = "peers.conf";

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging();
    crate::device::validate_ifname(&args.wg_interface)?;
    if args.firewall != "off" {
        bail!(
            "--firewall {}: the firewall is not available in this build; pass --firewall off",
            args.firewall
        );
    }
    let addresses = args
        .hub_address
        .iter()
        .map(|s| s.parse::<HostAddress>().map(|h| (h.0, h.1)))
        .collect::<anyhow::Result<Vec<(IpAddr, u8)>>>()
        .context("--hub-address")?;
    prepare_data_dir(&args.data_dir)?;
    let key = load_or_create_key(&args.data_dir.join(KEY_FILE))?;
    let mut config = read_peers(&args.data_dir.join(PEERS_FILE))?;
    config.private_key = Some(Some(key.clone()));
    config.listen_port = None;

    let rt = crate::runtime()?;
    rt.block_on(async {
        let tun = crate::device::open_tun(&args.wg_interface, args.wg_mtu, Some(&addresses))?;
        let mut dataplane = Dataplane::new(tun, args.wg_port)?;
        let peers = config.peers.len();
        dataplane
            .apply(config)
            .map_err(|e| anyhow::anyhow!("applying {PEERS_FILE}: {}", e.message))?;
        let socket = UapiSocket::bind(&args.wg_interface)?;
        tracing::info!(
            interface = %args.wg_interface,
            port = dataplane.listen_port(),
            public_key = %wgconf::encode_key(&key.public_key().0),
            peers,
            "WireGuard hub ready"
        );
        let (tx, rx) = mpsc::channel::<Command>(16);
        let uapi = tokio::spawn(socket.serve(tx));
        let result = dataplane.run(rx, crate::shutdown_signal()).await;
        uapi.abort();
        let _ = uapi.await;
        result
    })
}

/// An interface address with its prefix length, e.g. `10.100.0.1/16` (host bits kept).
struct HostAddress(IpAddr, u8);

impl std::str::FromStr for HostAddress {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (addr, len) = s
            .split_once('/')
            .with_context(|| format!("{s:?}: expected ADDRESS/PREFIX, e.g. 10.100.0.1/16"))?;
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .with_context(|| format!("{s:?}: bad address"))?;
        let len: u8 = len
            .trim()
            .parse()
            .with_context(|| format!("{s:?}: bad prefix length"))?;
        // Validate the length, but keep the host part: it is the hub's own address.
        IpPrefix::new(addr, len).with_context(|| format!("{s:?}"))?;
        Ok(HostAddress(addr, len))
    }
}

/// Creates the data dir 0700, or refuses one that others can read (SPEC §2).
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting permissions of {}", dir.display()))?;
    }
    check_private(dir)
}

fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible to group or others (mode {:o}); run `chmod go-rwx {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

fn load_or_create_key(path: &Path) -> anyhow::Result<Secret> {
    if path.exists() {
        check_private(path)?;
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let key = wgconf::decode_key(&text).with_context(|| format!("{}", path.display()))?;
        return Ok(Secret(key));
    }
    let key = Secret::generate_private();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", wgconf::encode_key(&key.0))
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(key)
}

fn read_peers(path: &Path) -> anyhow::Result<SetRequest> {
    if !path.exists() {
        return Ok(SetRequest {
            replace_peers: true,
            ..SetRequest::default()
        });
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    wgconf::parse(&text).with_context(|| format!("{}", path.display()))
}

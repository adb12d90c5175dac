//! The device-mode contract: `watchgrid wg --foreground IFNAME` behaves like
//! `wireguard-go -f IFNAME` from the outside.

use anyhow::{ensure, Result};
use watchgrid_netns_tests::{scenario, uapi_socket, unique_name, Impl, KeyPair, Netns, WgDevice};

#[test]
fn device_lifecycle_ours() -> Result<()> {
    scenario(device_lifecycle)
}

fn device_lifecycle() -> Result<()> {
    eprintln!("device = {}", Impl::Ours.describe());
    let ns = Netns::new("dev")?;
    let ifname = unique_name("wg");
    let mut dev = WgDevice::spawn_bare(&ns, Impl::Ours, &ifname)?;

    // A TUN interface of MTU 1420, down, with nothing configured.
    let link = ns.exec(&["ip", "-o", "link", "show", "dev", &ifname])?;
    eprintln!("{}", link.trim());
    ensure!(link.contains("mtu 1420"), "MTU is not 1420: {link}");
    let flags = link
        .split('<')
        .nth(1)
        .and_then(|f| f.split('>').next())
        .unwrap_or("");
    ensure!(
        !flags.split(',').any(|f| f == "UP"),
        "interface should start down: {link}"
    );
    let details = ns.exec(&["ip", "-d", "-o", "link", "show", "dev", &ifname])?;
    ensure!(details.contains("tun"), "not a TUN device: {details}");
    ensure!(uapi_socket(&ifname).exists(), "no UAPI socket");
    let dump = dev.dump()?;
    ensure!(
        dump.interface.private_key.is_none(),
        "fresh device has a key: {dump:?}"
    );
    ensure!(dump.peers.is_empty(), "fresh device has peers: {dump:?}");

    // Configuration through the UAPI round-trips, and the listen port is really bound.
    let keys = KeyPair::generate()?;
    dev.set_private_key(&keys)?;
    dev.set_listen_port(51999)?;
    ensure!(
        dev.show("public-key")?.trim() == keys.public,
        "public key not derived"
    );
    ensure!(
        dev.show("listen-port")?.trim() == "51999",
        "listen port not set"
    );
    let udp = ns.exec(&["ss", "-Hlun", "sport = :51999"])?;
    ensure!(
        !udp.trim().is_empty(),
        "nothing listens on UDP 51999 in the namespace"
    );

    // SIGTERM: exits, removing the socket and the interface.
    let status = dev.stop()?;
    eprintln!("exited with {status} on SIGTERM");
    ensure!(status.success(), "exit status on SIGTERM: {status}");
    ensure!(!uapi_socket(&ifname).exists(), "UAPI socket left behind");
    let links = ns.exec(&["ip", "-o", "link", "show"])?;
    ensure!(
        !links.contains(&format!(" {ifname}:")),
        "{ifname} still exists: {links}"
    );
    Ok(())
}

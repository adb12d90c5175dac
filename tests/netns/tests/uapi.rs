//! The UAPI socket spoken to directly, byte for byte, the way a client other than
//! `wg(8)` would: malformed or failing `set=1` requests answer `errno=` and change
//! nothing (the `wg` tool validates most input itself, so it cannot exercise this).

use anyhow::{ensure, Result};
use watchgrid_netns_tests::{
    scenario, uapi_socket, unique_name, Impl, KeyPair, Netns, PeerConfig, WgDevice,
};

/// Sends one request to a UAPI socket and prints the whole reply.
const UAPI_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
reply = b""
while not reply.endswith(b"\n\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
sys.stdout.write(reply.decode())
"#;

fn request(ns: &Netns, ifname: &str, body: &str) -> Result<String> {
    let path = uapi_socket(ifname);
    let path = path.to_string_lossy();
    ns.run_python(UAPI_CLIENT, &[&path, body])
}

fn hex_key(base64_key: &str) -> String {
    // wg(8) prints base64; UAPI speaks hex.
    let table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for c in base64_key.trim_end_matches('=').chars() {
        let v = table.find(c).unwrap_or(0) as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push_str(&format!("{:02x}", (bits >> n) & 0xff));
        }
    }
    out
}

#[test]
fn malformed_set_answers_errno_and_changes_nothing_ours() -> Result<()> {
    scenario(malformed_set)
}

fn malformed_set() -> Result<()> {
    let ns = Netns::new("uapi")?;
    let ifname = unique_name("wg");
    let mut dev = WgDevice::spawn_bare(&ns, Impl::Ours, &ifname)?;
    let keys = KeyPair::generate()?;
    let peer = KeyPair::generate()?;
    dev.set_private_key(&keys)?;
    dev.set_listen_port(51777)?;
    dev.add_peer(&PeerConfig::new(&peer.public).allowed(&["10.1.0.2/32"]))?;
    let before = dev.show("dump")?;

    let other = KeyPair::generate()?;
    let bad_requests = [
        // A valid peer followed by a malformed allowed IP: the peer must not be added.
        format!(
            "set=1\npublic_key={}\nallowed_ip=10.2.0.0/24\nallowed_ip=10.2.0.0/33\n\n",
            hex_key(&other.public)
        ),
        // A good listen port, then an unknown key.
        "set=1\nlisten_port=51778\nno_such_key=1\n\n".to_string(),
        // Replace all peers, then a bad key length.
        "set=1\nreplace_peers=true\npublic_key=abcd\n\n".to_string(),
        // The interface's own public key as a peer.
        format!("set=1\npublic_key={}\n\n", hex_key(&keys.public)),
    ];
    for req in &bad_requests {
        let reply = request(&ns, &ifname, req)?;
        eprintln!("{:?} -> {:?}", req, reply);
        ensure!(
            reply == "errno=-22\n\n",
            "expected EINVAL for {req:?}, got {reply:?}"
        );
        let now = dev.show("dump")?;
        ensure!(
            now == before,
            "state changed after {req:?}:\n{before}\n---\n{now}"
        );
    }

    // A port another socket holds: EADDRINUSE, and the device keeps its own port.
    let _blocker = ns.spawn_python(
        "blocker",
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',51779))\nprint('bound',flush=True)\ntime.sleep(60)",
        &[],
    )?;
    watchgrid_netns_tests::wait_until(std::time::Duration::from_secs(5), "blocker bound", || {
        ns.exec(&["ss", "-Hlun", "sport = :51779"])
            .is_ok_and(|out| !out.trim().is_empty())
    })?;
    let reply = request(&ns, &ifname, "set=1\nlisten_port=51779\n\n")?;
    ensure!(
        reply == "errno=-98\n\n",
        "expected EADDRINUSE, got {reply:?}"
    );
    ensure!(
        dev.show("dump")? == before,
        "state changed after a failed port change"
    );

    // A well-formed request still works, and get=1 speaks the protocol.
    let reply = request(&ns, &ifname, "set=1\nlisten_port=51780\n\n")?;
    ensure!(reply == "errno=0\n\n", "valid set refused: {reply:?}");
    let get = request(&ns, &ifname, "get=1\n\n")?;
    ensure!(get.contains("listen_port=51780\n"), "{get}");
    ensure!(get.contains("protocol_version=1\n"), "{get}");
    ensure!(get.ends_with("errno=0\n\n"), "{get}");
    dev.stop()?;
    Ok(())
}

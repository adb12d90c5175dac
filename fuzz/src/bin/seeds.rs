//! Writes the seed corpora under fuzz/corpus/TARGET/: real inputs of each kind (a UAPI set
//! request as wg(8) sends one, a real handshake initiation from the engine's peer, the
//! API's JSON bodies as agents and admins send them). Run it again after a format change:
//! `cargo run --manifest-path fuzz/Cargo.toml --bin seeds`.

use std::net::SocketAddr;
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let k1 = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    let k2 = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
    let k3 = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";
    // The example on the cross-platform protocol page.
    let example = format!(
        "set=1\nprivate_key={k1}\nlisten_port=12912\nfwmark=0\nreplace_peers=true\n\
         public_key={k2}\npreshared_key={k1}\nreplace_allowed_ips=true\n\
         allowed_ip=192.168.4.4/32\npersistent_keepalive_interval=111\n\
         endpoint=[abcd:23::33%2]:51820\n\
         public_key={k1}\nendpoint=182.122.22.19:3233\nallowed_ip=192.168.4.6/32\n\
         public_key={k3}\nupdate_only=true\nremove=true\n\n"
    );
    write("uapi_set", "protocol-page-example", example.as_bytes())?;
    // What `wg set wg0 peer K allowed-ips ...` sends.
    let wg_set = format!(
        "set=1\npublic_key={k2}\nprotocol_version=1\nreplace_allowed_ips=true\n\
         allowed_ip=10.100.0.2/32\nallowed_ip=fd12:3456:789a:1::2/128\n\
         persistent_keepalive_interval=25\n\n"
    );
    write("uapi_set", "wg-set-peer", wg_set.as_bytes())?;
    let clear = format!(
        "set=1\nprivate_key={}\nlisten_port=0\nfwmark=0\n\n",
        "0".repeat(64)
    );
    write("uapi_set", "clear-key", clear.as_bytes())?;

    // Datagrams: the initiation, the same initiation again from elsewhere (a replay), and a
    // transport packet addressed to the session the responder opens for it.
    let init = watchgrid_fuzz::initiation();
    let a: SocketAddr = "198.51.100.7:40000"
        .parse()
        .map_err(std::io::Error::other)?;
    let b: SocketAddr = "[2001:db8::7]:40001"
        .parse()
        .map_err(std::io::Error::other)?;
    write("datagram", "initiation", &watchgrid_fuzz::record(a, &init))?;
    let mut replay = watchgrid_fuzz::record(a, &init);
    replay.extend(watchgrid_fuzz::record(b, &init));
    write("datagram", "initiation-replayed", &replay)?;
    let now = std::time::Instant::now();
    let mut responder = watchgrid_fuzz::responder(now);
    let mut out = watchgrid_fuzz::Collect::default();
    responder.handle_datagram(now, a, &init, &mut out);
    let response = out.sent.first().map(|(_, d)| d.clone()).unwrap_or_default();
    let mut data = vec![4, 0, 0, 0];
    // The responder's own index (bytes 4..8 of its response) is the receiver of data to it.
    data.extend_from_slice(response.get(4..8).unwrap_or(&[0; 4]));
    data.extend_from_slice(&[0; 8]);
    data.extend_from_slice(&[0x5a; 32]);
    let mut session = watchgrid_fuzz::record(a, &init);
    session.extend(watchgrid_fuzz::record(a, &data));
    write("datagram", "initiation-then-data", &session)?;

    // JSON bodies, each after its type byte (see watchgrid_fuzz::json_bodies).
    let bodies: [(&str, u8, &str); 9] = [
        (
            "heartbeat",
            0,
            r#"{"agent_version":"1.0","hostname":"db1","os":"Debian 12","kernel":"6.1.0","uptime_s":42,"load":[0.1,0.2,0.3],"memory_total_bytes":1024,"tunnel_rx_bytes":5}"#,
        ),
        (
            "login-batch",
            1,
            r#"{"events":[{"seq":1,"ts_us":1700000000000000,"outcome":"failed","user":"root","source_ip":"203.0.113.9","source_port":5122,"method":"password","service":"sshd","raw":"Failed password for root from 203.0.113.9 port 5122 ssh2"}]}"#,
        ),
        (
            "log-batch",
            2,
            r#"{"lines":[{"seq":7,"ts_us":1700000000000001,"source":"journal","unit":"sshd.service","priority":6,"message":"Accepted publickey for admin","truncated":false}]}"#,
        ),
        (
            "command-report",
            3,
            r#"{"id":"cmd-1","exit_code":0,"error":null,"stdout":"Linux\n","stderr":"","stdout_truncated":false,"stderr_truncated":false,"started_at":1700000000,"duration_ms":12}"#,
        ),
        (
            "command-orders",
            4,
            r#"{"commands":[{"id":"cmd-1","argv":["uname","-a"],"timeout_s":60}]}"#,
        ),
        (
            "agent-config",
            5,
            r#"{"device_id":"dev-1","address":"10.100.0.2/16","address_v6":"fd12:3456:789a:1::2/64","hub_public_key":"HR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0=","endpoint":"vpn.example.com:51820","allowed_ips":["10.100.0.0/16","fd12:3456:789a:1::/64"],"persistent_keepalive":25}"#,
        ),
        (
            "registration",
            6,
            r#"{"agent_key":"wgak_0123456789abcdef","device_id":"dev-1","address":"10.100.0.2/16","address_v6":null,"hub_public_key":"HR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0=","endpoint":"192.0.2.1:51820","allowed_ips":["10.100.0.0/16"],"persistent_keepalive":25}"#,
        ),
        (
            "firewall-rules",
            9,
            r#"[{"from_group":"laptops","to_group":"servers","protocol":"tcp","ports":["22","9000-9100"]},{"from_group":"servers","to_cidr":"192.168.60.0/24","protocol":"any"}]"#,
        ),
        (
            "setup",
            10,
            r#"{"setup_token":"setup-token","admin_username":"admin","admin_password":"correct horse battery","endpoint":"vpn.example.com:51820","vpn_subnet":"10.100.0.0/16","tls_mode":"internal"}"#,
        ),
    ];
    for (name, kind, body) in bodies {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(body.as_bytes());
        write("json_bodies", name, &bytes)?;
    }
    Ok(())
}

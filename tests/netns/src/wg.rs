//! WireGuard devices of either implementation, configured and inspected with wg(8).

use crate::{fatal, retry_until, run, run_with_input, unique_name, Netns, Proc, UAPI_DIR};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// Which WireGuard implementation plays a side of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// The implementation under test: `$WATCHGRID_BIN` (or wireguard-go when
    /// `WATCHGRID_NETNS_OURS=wireguard-go`, to validate the harness).
    Ours,
    /// The reference userspace implementation, `wireguard-go -f IFNAME`.
    WireguardGo,
    /// Ours with the kernel refusing TUN offload and UDP GSO/GRO (`scripts/without-offload`),
    /// as on an older kernel or in a sandbox.
    OursWithoutOffload,
}

/// Runs a program with the dataplane offloads refused by a seccomp filter.
const WITHOUT_OFFLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/without-offload");

enum Program {
    Watchgrid(String),
    WireguardGo,
}

impl Impl {
    /// The watchgrid binary when this side really runs ours (not the wireguard-go stand-in).
    pub fn watchgrid_binary(self) -> Option<String> {
        match self.program() {
            Ok(Program::Watchgrid(bin)) => Some(bin),
            _ => None,
        }
    }

    /// The watchgrid binary, or an error for scenarios that only make sense with ours
    /// (the control plane has no wireguard-go stand-in).
    pub fn required_watchgrid_binary() -> Result<String> {
        match Impl::Ours.program()? {
            Program::Watchgrid(bin) => Ok(bin),
            Program::WireguardGo => Err(anyhow!(
                "this scenario needs the watchgrid binary (it has no wireguard-go stand-in)"
            )),
        }
    }

    fn program(self) -> Result<Program> {
        match self {
            Impl::WireguardGo => Ok(Program::WireguardGo),
            Impl::Ours | Impl::OursWithoutOffload if ours_substituted() => Ok(Program::WireguardGo),
            Impl::Ours | Impl::OursWithoutOffload => {
                let bin = watchgrid_bin();
                if !Path::new(&bin).is_file() {
                    bail!(
                        "the watchgrid binary is not at {bin}: build it (cargo build --release -p \
                         watchgrid) or point WATCHGRID_BIN at it; to validate the harness alone \
                         set WATCHGRID_NETNS_OURS=wireguard-go"
                    );
                }
                Ok(Program::Watchgrid(bin))
            }
        }
    }

    /// Human-readable description including any substitution.
    pub fn describe(self) -> String {
        match self {
            Impl::WireguardGo => "wireguard-go".to_owned(),
            Impl::Ours | Impl::OursWithoutOffload if ours_substituted() => {
                "ours (substituted by wireguard-go: WATCHGRID_NETNS_OURS=wireguard-go)".to_owned()
            }
            Impl::Ours => format!("ours ({})", watchgrid_bin()),
            Impl::OursWithoutOffload => {
                format!("ours without offloads ({})", watchgrid_bin())
            }
        }
    }

    fn short(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::WireguardGo => "wggo",
            Impl::OursWithoutOffload => "plain",
        }
    }
}

fn ours_substituted() -> bool {
    std::env::var("WATCHGRID_NETNS_OURS").is_ok_and(|v| v == "wireguard-go")
}

fn watchgrid_bin() -> String {
    std::env::var("WATCHGRID_BIN").unwrap_or_else(|_| crate::DEFAULT_WATCHGRID_BIN.to_owned())
}

/// A Curve25519 key pair in wg(8)'s base64 form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    pub private: String,
    pub public: String,
}

impl KeyPair {
    /// `wg genkey | wg pubkey`.
    pub fn generate() -> Result<KeyPair> {
        let private = run(&["wg", "genkey"])?.trim().to_owned();
        KeyPair::from_private(&private)
    }

    pub fn from_private(private: &str) -> Result<KeyPair> {
        let private = private.trim().to_owned();
        let public = run_with_input(&["wg", "pubkey"], format!("{private}\n").as_bytes())?
            .trim()
            .to_owned();
        Ok(KeyPair { private, public })
    }
}

/// `wg genpsk`.
pub fn genpsk() -> Result<String> {
    Ok(run(&["wg", "genpsk"])?.trim().to_owned())
}

/// A `[Peer]` as given to `wg set` or written to a setconf file.
#[derive(Clone, Debug, Default)]
pub struct PeerConfig {
    pub public_key: String,
    pub allowed_ips: Vec<String>,
    pub endpoint: Option<String>,
    pub persistent_keepalive: Option<u16>,
    pub preshared_key: Option<String>,
}

impl PeerConfig {
    pub fn new(public_key: &str) -> PeerConfig {
        PeerConfig {
            public_key: public_key.to_owned(),
            ..PeerConfig::default()
        }
    }

    pub fn allowed(mut self, ips: &[&str]) -> PeerConfig {
        self.allowed_ips = ips.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn endpoint(mut self, endpoint: &str) -> PeerConfig {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    pub fn keepalive(mut self, seconds: u16) -> PeerConfig {
        self.persistent_keepalive = Some(seconds);
        self
    }

    pub fn psk(mut self, psk: &str) -> PeerConfig {
        self.preshared_key = Some(psk.to_owned());
        self
    }

    /// The section in wg(8) setconf format.
    pub fn to_conf(&self) -> String {
        let mut s = format!("[Peer]\nPublicKey = {}\n", self.public_key);
        if let Some(psk) = &self.preshared_key {
            s += &format!("PresharedKey = {psk}\n");
        }
        if !self.allowed_ips.is_empty() {
            s += &format!("AllowedIPs = {}\n", self.allowed_ips.join(", "));
        }
        if let Some(ep) = &self.endpoint {
            s += &format!("Endpoint = {ep}\n");
        }
        if let Some(k) = self.persistent_keepalive {
            s += &format!("PersistentKeepalive = {k}\n");
        }
        s
    }
}

/// The interface line of `wg show IFNAME dump`.
#[derive(Clone, Debug)]
pub struct InterfaceDump {
    pub private_key: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<String>,
}

/// A peer line of `wg show IFNAME dump`.
#[derive(Clone, Debug)]
pub struct PeerDump {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the epoch, 0 for never.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

/// Parsed `wg show IFNAME dump`.
#[derive(Clone, Debug)]
pub struct Dump {
    pub interface: InterfaceDump,
    pub peers: Vec<PeerDump>,
}

fn opt(field: &str, none: &str) -> Option<String> {
    (field != none).then(|| field.to_owned())
}

impl Dump {
    pub fn parse(text: &str) -> Result<Dump> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let first = lines.next().ok_or_else(|| anyhow!("empty wg dump"))?;
        let f: Vec<&str> = first.split('\t').collect();
        if f.len() != 4 {
            bail!(
                "interface line of wg dump has {} fields: {first:?}",
                f.len()
            );
        }
        let interface = InterfaceDump {
            private_key: opt(f[0], "(none)"),
            public_key: opt(f[1], "(none)"),
            listen_port: f[2]
                .parse()
                .with_context(|| format!("listen port in {first:?}"))?,
            fwmark: opt(f[3], "off"),
        };
        let mut peers = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 8 {
                bail!("peer line of wg dump has {} fields: {line:?}", f.len());
            }
            let num = |i: usize| -> Result<u64> {
                f[i].parse()
                    .with_context(|| format!("field {i} of wg dump line {line:?}"))
            };
            peers.push(PeerDump {
                public_key: f[0].to_owned(),
                preshared_key: opt(f[1], "(none)"),
                endpoint: opt(f[2], "(none)"),
                allowed_ips: if f[3] == "(none)" {
                    Vec::new()
                } else {
                    f[3].split(',').map(|s| s.trim().to_owned()).collect()
                },
                latest_handshake: num(4)?,
                rx_bytes: num(5)?,
                tx_bytes: num(6)?,
                persistent_keepalive: if f[7] == "off" {
                    None
                } else {
                    Some(
                        f[7].parse()
                            .with_context(|| format!("keepalive in {line:?}"))?,
                    )
                },
            });
        }
        Ok(Dump { interface, peers })
    }

    pub fn peer(&self, public_key: &str) -> Result<&PeerDump> {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .ok_or_else(|| anyhow!("no peer {public_key} in wg dump {self:?}"))
    }
}

/// A running WireGuard device (either implementation, either mode) in a namespace.
///
/// Dropping it stops the process (SIGTERM), which removes the TUN interface and UAPI socket.
pub struct WgDevice {
    // Declared first so it is dropped (stopped) first.
    proc: Proc,
    pub imp: Impl,
    pub ifname: String,
    pub keys: KeyPair,
    pub listen_port: u16,
    ns: String,
    dir: PathBuf,
}

/// Path of the UAPI socket of `ifname`.
pub fn uapi_socket(ifname: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{ifname}.sock"))
}

fn remove_stale_socket(ifname: &str) {
    // Interface names embed our pid, so an existing socket is left over from a dead process
    // that had the same pid; a live owner is impossible.
    let sock = uapi_socket(ifname);
    if sock.exists() {
        let _ = std::fs::remove_file(&sock);
    }
}

impl WgDevice {
    /// Starts `imp` as a plain device (`watchgrid wg --foreground` or `wireguard-go -f`) with a
    /// unique interface name, waits for its UAPI socket, and gives it a fresh private key and
    /// `listen_port`. The interface has no address and is down.
    pub fn start(ns: &Netns, imp: Impl, listen_port: u16) -> Result<WgDevice> {
        let mut dev = WgDevice::spawn_bare(ns, imp, &unique_name("wg"))?;
        let keys = KeyPair::generate()?;
        dev.set_private_key(&keys)?;
        dev.set_listen_port(listen_port)?;
        Ok(dev)
    }

    /// Starts `imp` in device mode without configuring anything; waits for the UAPI.
    pub fn spawn_bare(ns: &Netns, imp: Impl, ifname: &str) -> Result<WgDevice> {
        if ifname.len() > 15 {
            bail!("interface name {ifname} longer than 15 characters");
        }
        remove_stale_socket(ifname);
        let mut argv: Vec<String> = match imp.program()? {
            Program::Watchgrid(bin) => vec![bin, "wg".into(), "--foreground".into(), ifname.into()],
            Program::WireguardGo => vec!["wireguard-go".into(), "-f".into(), ifname.into()],
        };
        if imp == Impl::OursWithoutOffload && imp.watchgrid_binary().is_some() {
            argv.splice(0..0, ["python3".to_owned(), WITHOUT_OFFLOAD.to_owned()]);
        }
        let proc = ns.spawn(&format!("{ifname}-{}", imp.short()), &argv)?;
        let mut dev = WgDevice {
            proc,
            imp,
            ifname: ifname.to_owned(),
            keys: KeyPair {
                private: String::new(),
                public: String::new(),
            },
            listen_port: 0,
            ns: ns.name().to_owned(),
            dir: ns.dir().to_owned(),
        };
        dev.wait_uapi(Duration::from_secs(10))?;
        Ok(dev)
    }

    /// Starts a hub: `watchgrid serve` for [`Impl::Ours`]; for wireguard-go an emulation doing
    /// what serve is specified to do (key in `DATA_DIR/wg-private.key` generated if missing,
    /// peers from `DATA_DIR/peers.conf`, addresses assigned, link up).
    ///
    /// Returns once the UAPI answers with the hub's public key and the interface is up with
    /// all `addresses`; `keys` holds the key pair read back from the data directory.
    pub fn start_hub(
        ns: &Netns,
        imp: Impl,
        ifname: &str,
        data_dir: &Path,
        listen_port: u16,
        addresses: &[&str],
    ) -> Result<WgDevice> {
        let key_file = data_dir.join("wg-private.key");
        let peers_conf = data_dir.join("peers.conf");
        let mut dev = match imp.program()? {
            Program::Watchgrid(bin) => {
                remove_stale_socket(ifname);
                let port = listen_port.to_string();
                let addrs = addresses.join(",");
                let data = data_dir.to_string_lossy().into_owned();
                // The runtime dir (setup token) is per test: /run is shared by namespaces.
                let runtime = ns.dir().join("run").to_string_lossy().into_owned();
                let argv = [
                    bin.as_str(),
                    "serve",
                    "--data-dir",
                    &data,
                    "--runtime-dir",
                    &runtime,
                    "--wg-interface",
                    ifname,
                    "--wg-port",
                    &port,
                    "--hub-address",
                    &addrs,
                    "--firewall",
                    "off",
                ];
                let proc = ns.spawn(&format!("{ifname}-serve"), &argv)?;
                let mut dev = WgDevice {
                    proc,
                    imp,
                    ifname: ifname.to_owned(),
                    keys: KeyPair {
                        private: String::new(),
                        public: String::new(),
                    },
                    listen_port,
                    ns: ns.name().to_owned(),
                    dir: ns.dir().to_owned(),
                };
                dev.wait_uapi(Duration::from_secs(10))?;
                dev
            }
            Program::WireguardGo => {
                if !key_file.exists() {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let private = run(&["wg", "genkey"])?;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&key_file)
                        .and_then(|mut f| f.write_all(private.as_bytes()))
                        .with_context(|| format!("writing {}", key_file.display()))?;
                }
                let mut dev = WgDevice::spawn_bare(ns, imp, ifname)?;
                let key_path = key_file.to_string_lossy().into_owned();
                dev.set(&["private-key", &key_path])?;
                dev.set_listen_port(listen_port)?;
                if peers_conf.exists() {
                    dev.wg(&["addconf", ifname, &peers_conf.to_string_lossy()])?;
                }
                for a in addresses {
                    ns.add_addr(ifname, a)?;
                }
                ns.link_up(ifname)?;
                dev
            }
        };
        // The public key served over the UAPI must belong to the private key on disk.
        let public = retry_until(Duration::from_secs(10), "the hub's public key", || {
            dev.proc.ensure_running().map_err(fatal)?;
            let key = dev.wg(&["show", ifname, "public-key"])?.trim().to_owned();
            if key.len() != 44 {
                bail!("`wg show {ifname} public-key` says {key:?}");
            }
            Ok(key)
        })?;
        let private = std::fs::read_to_string(&key_file)
            .with_context(|| format!("reading the hub key {}", key_file.display()))?;
        let keys = KeyPair::from_private(&private)
            .with_context(|| format!("{} is not a wg(8) private key", key_file.display()))?;
        if keys.public != public {
            bail!(
                "hub public key from UAPI {public} does not match {} (public {})",
                key_file.display(),
                keys.public
            );
        }
        dev.keys = keys;
        // serve assigns the addresses and brings the link up itself.
        let ns_name = ns.name().to_owned();
        retry_until(
            Duration::from_secs(10),
            "hub interface up with its addresses",
            || {
                dev.proc.ensure_running().map_err(fatal)?;
                let link = run(&["ip", "-n", &ns_name, "-o", "link", "show", "dev", ifname])?;
                let flags = link
                    .split('<')
                    .nth(1)
                    .unwrap_or("")
                    .split('>')
                    .next()
                    .unwrap_or("");
                if !flags.split(',').any(|f| f == "UP") {
                    bail!("link not up: {}", link.trim());
                }
                let addrs = run(&["ip", "-n", &ns_name, "-o", "addr", "show", "dev", ifname])?;
                for a in addresses {
                    if !addrs.split_whitespace().any(|w| w == *a) {
                        bail!("address {a} missing on {ifname}: {}", addrs.trim());
                    }
                }
                Ok(())
            },
        )?;
        Ok(dev)
    }

    fn wait_uapi(&mut self, timeout: Duration) -> Result<()> {
        let ifname = self.ifname.clone();
        retry_until(timeout, &format!("the UAPI socket of {ifname}"), || {
            self.proc.ensure_running().map_err(fatal)?;
            if !uapi_socket(&ifname).exists() {
                bail!("{} does not exist yet", uapi_socket(&ifname).display());
            }
            self.wg(&["show", &ifname]).map(drop)
        })
    }

    pub fn ns_name(&self) -> &str {
        &self.ns
    }

    pub fn public_key(&self) -> &str {
        &self.keys.public
    }

    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Fails with the implementation's log if it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.proc.ensure_running()
    }

    /// Stops the implementation with SIGTERM and waits for its exit (at most 5 s).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.proc.terminate(Duration::from_secs(5))
    }

    /// Runs `wg ARGS...` inside the device's namespace.
    pub fn wg(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "netns", "exec", &self.ns, "wg"];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// `wg set IFNAME ARGS...`.
    pub fn set(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec!["set", self.ifname.as_str()];
        argv.extend_from_slice(args);
        self.wg(&argv).map(drop)
    }

    fn key_file(&self, contents: &str) -> Result<String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(format!("{}.key", unique_name("k")));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(format!("{contents}\n").as_bytes())?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// `wg set IFNAME private-key FILE`.
    pub fn set_private_key(&mut self, keys: &KeyPair) -> Result<()> {
        let file = self.key_file(&keys.private)?;
        self.set(&["private-key", &file])?;
        self.keys = keys.clone();
        Ok(())
    }

    /// `wg set IFNAME listen-port PORT`.
    pub fn set_listen_port(&mut self, port: u16) -> Result<()> {
        self.set(&["listen-port", &port.to_string()])?;
        self.listen_port = port;
        Ok(())
    }

    /// `wg set IFNAME peer PUB allowed-ips ... [endpoint ...] [persistent-keepalive N]
    /// [preshared-key FILE]`.
    pub fn add_peer(&self, peer: &PeerConfig) -> Result<()> {
        let allowed = peer.allowed_ips.join(",");
        let keepalive = peer.persistent_keepalive.map(|k| k.to_string());
        let psk_file = match &peer.preshared_key {
            Some(psk) => Some(self.key_file(psk)?),
            None => None,
        };
        let mut args = vec!["peer", peer.public_key.as_str(), "allowed-ips", &allowed];
        if let Some(ep) = &peer.endpoint {
            args.extend(["endpoint", ep.as_str()]);
        }
        if let Some(k) = &keepalive {
            args.extend(["persistent-keepalive", k.as_str()]);
        }
        if let Some(f) = &psk_file {
            args.extend(["preshared-key", f.as_str()]);
        }
        self.set(&args)
    }

    /// `wg set IFNAME peer PUB remove`.
    pub fn remove_peer(&self, public_key: &str) -> Result<()> {
        self.set(&["peer", public_key, "remove"])
    }

    /// `wg show IFNAME WHAT`.
    pub fn show(&self, what: &str) -> Result<String> {
        self.wg(&["show", &self.ifname, what])
    }

    /// Parsed `wg show IFNAME dump`.
    pub fn dump(&self) -> Result<Dump> {
        Dump::parse(&self.show("dump")?)
    }

    /// The dump line of one peer.
    pub fn peer(&self, public_key: &str) -> Result<PeerDump> {
        Ok(self.dump()?.peer(public_key)?.clone())
    }

    /// The peer's endpoint according to `wg show IFNAME endpoints`.
    pub fn endpoint(&self, public_key: &str) -> Result<Option<String>> {
        let out = self.show("endpoints")?;
        for line in out.lines() {
            let mut f = line.split('\t');
            if f.next() == Some(public_key) {
                return Ok(f.next().and_then(|e| opt(e.trim(), "(none)")));
            }
        }
        bail!(
            "peer {public_key} not listed by `wg show {} endpoints`: {out:?}",
            self.ifname
        )
    }

    /// Adds an address to the TUN interface (`nodad` for IPv6).
    pub fn add_addr(&self, cidr: &str) -> Result<()> {
        let mut argv = vec![
            "ip",
            "-n",
            &self.ns,
            "addr",
            "add",
            cidr,
            "dev",
            &self.ifname,
        ];
        if cidr.contains(':') {
            argv.push("nodad");
        }
        run(&argv).map(drop)
    }

    pub fn up(&self) -> Result<()> {
        run(&["ip", "-n", &self.ns, "link", "set", &self.ifname, "up"]).map(drop)
    }
}

//! `watchgrid serve`: the appliance daemon. The WireGuard hub (the engine on a TUN
//! device with the hub's addresses, its UAPI socket so `wg show` works) plus the HTTPS
//! control plane, which reaches the hub through the dataplane's command channel.
//! The hub is rebuilt from the store (enrolled devices) and `peers.conf` at start.

mod args;
mod certificate;
mod data_dir;
mod first_boot;
mod host_addrs;
pub mod secret_files;
mod settings;

pub use args::ServeArgs;

use crate::control::connections::{Caps, ConnectionLimits};
use crate::control::firewall::{FirewallHandle, NftFirewall};
use crate::control::hub::DataplaneHub;
use crate::control::listeners::{metrics_router, redirect_router, serve_https, serve_plain};
use crate::control::maintenance::{self, Renewal};
use crate::control::tls::TlsMaterial;
use crate::control::tls_switch::{self, ListenerTls, LiveTls};
use crate::dataplane::tun::{open_tun, validate_ifname};
use crate::dataplane::uapi::server::UapiSocket;
use crate::dataplane::{Command, Dataplane, PeerChange};
use anyhow::Context;
use args::FirewallMode;
use certificate::CertSource;
use data_dir::{load_or_create_key, prepare_data_dir, read_peers};
use first_boot::{first_boot, print_banner, Banner, Provisioning};
use settings::Settings;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use watchgrid_api::AppState;
use watchgrid_core::{IpPrefix, PeerUpdate, PublicKey};
use watchgrid_store::Store;

/// The hub's private key, generated on first start.
const KEY_FILE: &str = "wg-private.key";
/// Static peers in wg(8) setconf format ([Peer] sections), besides enrolled devices.
const PEERS_FILE: &str = "peers.conf";

/// The daemon from flags to shutdown, phase by phase.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging();
    validate_ifname(&args.wg_interface)?;
    let provisioning = args.provisioning.validated()?;
    secret_files::private_umask();
    prepare_data_dir(&args.data_dir)?;
    if crate::control::backup::apply_pending_restore(&args.data_dir)? {
        tracing::warn!(data_dir = %args.data_dir.display(), "the data dir is restored from a backup");
    }
    secret_files::check_secret_files(&args.data_dir, args.tls_key.as_deref())?;
    let store = Arc::new(
        Store::open_on_trial(&args.data_dir, update_trial(&args.data_dir))
            .context("opening the store")?,
    );
    if store.held_migrations() > 0 {
        tracing::info!(
            held = store.held_migrations(),
            "this version is on trial after an update: migrations an older version could not read wait until it is marked good"
        );
    }
    // A stored forward rule that does not parse stops the start, naming the rule: a
    // firewall silently missing a rule is worse than one that does not start.
    store
        .firewall_policy()
        .context("reading the stored firewall policy")?;
    let settings = settings::resolve(&args, &provisioning, &store)?;
    let cert = certificate::choose_tls(&args, &provisioning, &store, &settings.tls_names)?;
    let restart = Arc::new(crate::control::backup::Restart::default());
    let daemon = Daemon {
        args,
        provisioning,
        store,
        settings,
        restart: restart.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(daemon.serve(cert))?;
    if restart.was_asked() {
        // Everything the daemon held (the store's lock, the TUN device, the sockets)
        // closes with the runtime, before the same binary starts again in this process.
        drop(rt);
        return Err(reexec());
    }
    Ok(())
}

/// Replaces this process with a fresh start of the same command line.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "watchgrid".into());
    tracing::warn!("restarting to apply the restored backup");
    let e = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
    anyhow::anyhow!("restarting after the restore: {e}; start watchgrid again")
}

/// Everything resolved before the runtime starts.
struct Daemon {
    args: ServeArgs,
    provisioning: Provisioning,
    store: Arc<Store>,
    settings: Settings,
    restart: Arc<crate::control::backup::Restart>,
}

/// The hub before its task starts: the dataplane and its command channel.
struct Hub {
    dataplane: Dataplane,
    commands: mpsc::Sender<Command>,
    inbox: mpsc::Receiver<Command>,
    public_key: PublicKey,
    peers: usize,
}

impl Daemon {
    async fn serve(self, cert: CertSource) -> anyhow::Result<()> {
        let shown_names = cert.shown_names(&self.settings.tls_names);
        let tls = cert.start(&self.args, &self.settings.tls_names)?;
        let (hub, uapi) = self.start_dataplane()?;
        let (state, setup_token) = self.control_state(&hub, &tls).await?;
        let firewall = self.start_firewall(&state).await?;
        let live_tls = self.install_tls_switch(&state, &tls);
        self.install_backups(&state)?;
        self.install_updates(&state);
        self.spawn_listeners(&state, live_tls, &shown_names).await?;
        maintenance::spawn(&state, self.renewal(&tls));
        tokio::spawn(watchgrid_api::alerts::webhook::run(state.clone()));
        let uapi = tokio::spawn(uapi.serve(hub.commands.clone()));
        self.announce(&hub, setup_token.as_deref(), &tls, &shown_names);
        let mut dataplane = hub.dataplane;
        dataplane.initiate_handshakes();
        let stop = async {
            tokio::select! {
                _ = crate::shutdown_signal() => {}
                _ = self.restart.asked() => {}
            }
        };
        let result = dataplane.run(hub.inbox, stop).await;
        let result = result.map(|endpoints| save_endpoints(&self.store, &endpoints));
        if let (Some(fw), true) = (&firewall, self.args.firewall_cleanup) {
            fw.remove();
        }
        uapi.abort();
        let _ = uapi.await;
        result
    }

    /// The TUN device with the hub's addresses, its key and its peers (`peers.conf`
    /// and the enrolled devices), and the UAPI socket.
    fn start_dataplane(&self) -> anyhow::Result<(Hub, UapiSocket)> {
        let args = &self.args;
        let key = load_or_create_key(&args.data_dir.join(KEY_FILE))?;
        let public_key = key.public_key();
        let mut config = read_peers(&args.data_dir.join(PEERS_FILE))?;
        config.private_key = Some(Some(key));
        config.listen_port = None;
        config.peers.extend(device_peers(&self.store)?);
        let peers = config.peers.len();
        let addresses = &self.settings.addresses;
        let tun = open_tun(&args.wg_interface, args.wg_mtu, Some(addresses))?;
        let mut dataplane = Dataplane::new(tun, args.wg_port)?;
        dataplane
            .configure(config)
            .context("configuring the hub's peers")?;
        let uapi = UapiSocket::bind(&args.wg_interface)?;
        let (commands, inbox) = mpsc::channel::<Command>(64);
        let hub = Hub {
            dataplane,
            commands,
            inbox,
            public_key,
            peers,
        };
        Ok((hub, uapi))
    }

    /// First boot (headless setup or the setup token), then the API's state and its
    /// admin fence: --admin-cidrs, else the stored policy, else the default.
    async fn control_state(
        &self,
        hub: &Hub,
        tls: &TlsMaterial,
    ) -> anyhow::Result<(AppState, Option<String>)> {
        let (args, config) = (&self.args, &self.settings.api);
        let setup_token =
            first_boot(&self.store, &self.provisioning, &args.runtime_dir, config).await?;
        let handle = Arc::new(DataplaneHub {
            commands: hub.commands.clone(),
            public_key: hub.public_key,
            peers: hub.dataplane.peer_gauge(),
        });
        let state = AppState::new(
            self.store.clone(),
            handle,
            config.clone(),
            setup_token.clone(),
            tls.ca_pem.clone(),
        );
        watchgrid_api::routes::firewall::refresh_fence(&state)
            .map_err(|e| anyhow::anyhow!("the admin fence: {e}"))?;
        let ssh_dir = args.data_dir.join("ssh");
        let ssh_ca =
            watchgrid_sshca::SshCa::open_or_create(&ssh_dir, watchgrid_api::state::unix_now())
                .with_context(|| format!("the SSH CA in {}", ssh_dir.display()))?;
        if state.ssh_ca.set(Arc::new(ssh_ca)).is_err() {
            tracing::warn!("SSH CA already set");
        }
        self.open_log_store(&state)?;
        Ok((state, setup_token))
    }

    /// Agents' log lines live in `DATA_DIR/logs`, a store of their own.
    fn open_log_store(&self, state: &AppState) -> anyhow::Result<()> {
        let dir = self.args.data_dir.join("logs");
        let store = watchgrid_logstore::LogStore::open(&dir, maintenance::retention(state))
            .with_context(|| format!("opening the log store in {}", dir.display()))?;
        if state.logs.set(Arc::new(store)).is_err() {
            tracing::warn!("log store already set");
        }
        Ok(())
    }

    /// The firewall goes up before any listener opens. A failure leaves the daemon
    /// running (devices keep their tunnels) and reports degraded on /healthz.
    async fn start_firewall(&self, state: &AppState) -> anyhow::Result<Option<Arc<NftFirewall>>> {
        if self.args.firewall == FirewallMode::Off {
            tracing::warn!("--firewall off: the daemon manages no firewall rules");
            return Ok(None);
        }
        let fw = NftFirewall::new(self.store.clone(), self.node()?, self.args.nft.clone());
        let _ = fw.clone().apply_now().await;
        if state
            .firewall
            .set(Arc::new(FirewallHandle(fw.clone())))
            .is_err()
        {
            tracing::warn!("firewall already set");
        }
        Ok(Some(fw))
    }

    /// The facts the firewall renders from: our interface, port and listeners.
    fn node(&self) -> anyhow::Result<watchgrid_firewall::Node> {
        let (args, config) = (&self.args, &self.settings.api);
        Ok(watchgrid_firewall::Node {
            wg_interface: args.wg_interface.clone(),
            wg_port: args.wg_port,
            public_tcp_ports: std::iter::once(args.https_listen.port())
                .chain(args.http_listen.map(|a| a.port()))
                .collect(),
            metrics_port: self.settings.metrics_listen.first().map(|a| a.port()),
            vpn_v4: IpPrefix::new(IpAddr::V4(config.vpn_subnet), config.vpn_prefix)?,
            vpn_v6: None,
        })
    }

    /// Update bundles through the API: where they are staged and what the image trusts.
    fn install_updates(&self, state: &AppState) {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let site = watchgrid_api::update::UpdateSite {
            dir: watchgrid_update::state::dir(&self.args.data_dir),
            trusted_keys: self.args.update_keys.clone(),
            running_version: watchgrid_update::running_version(env!("CARGO_PKG_VERSION")),
            running_slot: watchgrid_update::slots::running_by_name(&cmdline),
        };
        if state.update.set(Arc::new(site)).is_err() {
            tracing::warn!("updates already set");
        }
        watchgrid_api::update::audit_outcome(state);
    }

    /// Backups for the API's download and the local console's socket.
    fn install_backups(&self, state: &AppState) -> anyhow::Result<()> {
        let source = Arc::new(crate::control::backup::DataDirBackup {
            store: self.store.clone(),
            data_dir: self.args.data_dir.clone(),
            restart: self.restart.clone(),
            busy: std::sync::Mutex::new(()),
        });
        if state.backup.set(source).is_err() {
            tracing::warn!("backups already set");
        }
        let status = state
            .store
            .backup_status
            .get(watchgrid_store::BACKUP_KEY)?
            .unwrap_or_default();
        watchgrid_api::backups::publish(state, &status);
        crate::control::backup::serve_socket(
            &self.args.runtime_dir,
            state.clone(),
            self.args.https_listen,
        )
    }

    /// Lets setup switch the certificate the HTTPS listener serves.
    fn install_tls_switch(&self, state: &AppState, tls: &TlsMaterial) -> LiveTls {
        let live = tls_switch::live(tls.config.clone());
        let switch = ListenerTls {
            live: live.clone(),
            data_dir: self.args.data_dir.clone(),
            acme_directory: self.args.acme_directory.clone(),
            acme_ca_root: self.args.acme_ca_root.clone(),
            internal: tls.certs.clone().filter(|_| tls.ca_pem.is_some()),
            mode: std::sync::Mutex::new(tls_switch::Mode::of(tls)),
        };
        if state.tls.set(Arc::new(switch)).is_err() {
            tracing::warn!("TLS switch already set");
        }
        live
    }

    /// HTTPS (API, wizard, dashboard), the HTTP redirect and the metrics listeners.
    /// The redirect goes only to `shown` names and the certificate's.
    async fn spawn_listeners(
        &self,
        state: &AppState,
        tls: LiveTls,
        shown: &[String],
    ) -> anyhow::Result<()> {
        let args = &self.args;
        let https = TcpListener::bind(args.https_listen)
            .await
            .with_context(|| {
                format!(
                "binding HTTPS on {} (needs CAP_NET_BIND_SERVICE below 1024; see --https-listen)",
                args.https_listen
            )
            })?;
        tokio::spawn(serve_https(
            https,
            tls,
            watchgrid_api::router(state.clone()),
            ConnectionLimits::new(Caps::https()),
        ));
        if let Some(addr) = args.http_listen {
            let mut names = shown.to_vec();
            names.extend(self.settings.tls_names.iter().cloned());
            names.dedup();
            let l = TcpListener::bind(addr).await.with_context(|| {
                format!("binding HTTP on {addr} (see --http-listen, or pass off)")
            })?;
            tokio::spawn(serve_plain(
                l,
                redirect_router(args.https_listen.port(), names),
                ConnectionLimits::new(Caps::PLAIN),
            ));
        }
        // Metrics are optional: a missing VPN address must not stop the daemon.
        for addr in &self.settings.metrics_listen {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    let limits = ConnectionLimits::new(Caps::PLAIN);
                    tokio::spawn(serve_plain(l, metrics_router(state.clone()), limits));
                }
                Err(e) => {
                    tracing::warn!(address = %addr, error = %e, "metrics listener not available")
                }
            }
        }
        Ok(())
    }

    /// The internal CA's leaf is renewed in place; uploaded and ACME certificates are not ours to renew.
    fn renewal(&self, tls: &TlsMaterial) -> Option<Renewal> {
        let (Some(certs), Some(fingerprint), true) = (
            tls.certs.clone(),
            tls.leaf_fingerprint.clone(),
            tls.ca_pem.is_some(),
        ) else {
            return None;
        };
        Some(Renewal {
            data_dir: self.args.data_dir.clone(),
            names: self.settings.tls_names.clone(),
            certs,
            fingerprint,
        })
    }

    /// The log line and the console banner that say the daemon is ready.
    fn announce(&self, hub: &Hub, token: Option<&str>, tls: &TlsMaterial, names: &[String]) {
        tracing::info!(
            interface = %self.args.wg_interface,
            port = hub.dataplane.listen_port(),
            public_key = %hub.public_key,
            peers = hub.peers,
            "WireGuard hub ready"
        );
        print_banner(&Banner {
            https_port: self.args.https_listen.port(),
            runtime_dir: &self.args.runtime_dir,
            acme_directory: &self.args.acme_directory,
            tls,
            token,
            names,
        });
    }
}

/// Remembers where each device was, so the next start can reach it at once.
fn save_endpoints(store: &Store, endpoints: &[(PublicKey, SocketAddr)]) {
    let devices = match store.devices.list() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "reading devices to save their endpoints");
            return;
        }
    };
    let by_key: std::collections::HashMap<PublicKey, watchgrid_store::Device> =
        devices.into_iter().map(|d| (d.public_key, d)).collect();
    for (key, ep) in endpoints {
        if let Some(device) = by_key.get(key) {
            watchgrid_api::accounting::save_endpoint(store, device, *ep);
        }
    }
}

/// Enabled, unexpired devices from the store become hub peers at start.
fn device_peers(store: &Store) -> anyhow::Result<Vec<PeerChange>> {
    let now = watchgrid_api::state::unix_now();
    let mut out = Vec::new();
    for d in store.devices.list().context("reading devices")? {
        if !d.is_active(now) {
            continue;
        }
        out.push(PeerChange {
            public_key: d.public_key,
            remove: false,
            update_only: false,
            update: PeerUpdate {
                endpoint: d.last_endpoint.as_deref().and_then(|e| e.parse().ok()),
                replace_allowed_ips: true,
                allowed_ips: std::iter::once(IpPrefix::host(d.address_v4.into()))
                    .chain(d.address_v6.map(|a| IpPrefix::host(a.into())))
                    .collect(),
                ..PeerUpdate::default()
            },
        });
    }
    Ok(out)
}

/// Whether this boot is a new version's trial after an update (see watchgrid-update).
fn update_trial(data_dir: &std::path::Path) -> watchgrid_store::Trial {
    use watchgrid_update::state;
    let dir = state::dir(data_dir);
    let record = match state::read::<state::Record>(&dir, state::RECORD) {
        Ok(Some(r)) => r,
        Ok(None) => return watchgrid_store::Trial::No,
        Err(e) => {
            tracing::warn!(error = %e, "reading the last update's record");
            return watchgrid_store::Trial::No;
        }
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let running = watchgrid_update::slots::running_by_name(&cmdline);
    let boot = state::boot_id().unwrap_or_default();
    if state::on_trial(&record, running, &boot) {
        watchgrid_store::Trial::OnTrial
    } else {
        watchgrid_store::Trial::No
    }
}

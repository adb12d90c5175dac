//! `watchgrid agent enroll|run|status`: this binary as a managed machine's agent. The
//! logic lives in the `watchgrid-agent` crate; here are the flags, the output for the
//! operator and the tunnel (the same dataplane the hub uses).

mod tunnel;

use crate::dataplane::tun::{open_tun, validate_ifname};
use crate::dataplane::uapi::server::UapiSocket;
use crate::dataplane::{Dataplane, DeviceConfig};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tunnel::{interface_addresses, DataplaneTunnel};
use watchgrid_agent::agent::Agent;
use watchgrid_agent::client::HubClient;
use watchgrid_agent::enroll::{default_hostname, enroll, EnrollRequest, Trust};
use watchgrid_agent::journal::Journal;
use watchgrid_agent::logs::collect::SharedSpool;
use watchgrid_agent::logs::spool::Spool;
use watchgrid_agent::logs::{LogSources, SPOOL_DIR};
use watchgrid_agent::pin::{Fingerprint, Pinned};
use watchgrid_agent::state::{StateDir, DEFAULT_STATE_DIR};
use watchgrid_core::IpPrefix;
use watchgrid_store::Sensitive;

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(clap::Subcommand)]
enum AgentCommand {
    /// Register this machine with a hub (once), pinning the hub's certificate.
    Enroll(EnrollArgs),
    /// Keep the tunnel up, heartbeat, follow config changes and run remote commands.
    Run(RunArgs),
    /// Show the enrolled hub, device, tunnel and last heartbeat.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StateDirArg {
    /// Where the agent keeps its key, credential and command journal.
    #[arg(long, env = "WATCHGRID_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(clap::Args)]
struct EnrollArgs {
    /// The hub, `https://HOST[:PORT]`.
    #[arg(long, env = "WATCHGRID_SERVER")]
    server: String,
    /// An enrollment token from the hub (prefer the environment: arguments are visible
    /// to other users in `ps`). Tokens are URL-safe base64 and may begin with '-'.
    #[arg(
        long,
        env = "WATCHGRID_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: String,
    /// SHA-256 of the hub's internal CA (or TLS certificate) as its console shows it.
    #[arg(long, env = "WATCHGRID_CA_FINGERPRINT")]
    ca_fingerprint: Option<Fingerprint>,
    /// Without a fingerprint: trust whatever the hub presents now, and print it.
    #[arg(long, conflicts_with = "ca_fingerprint")]
    insecure_first_use: bool,
    /// Let the operator run commands on this machine (see the README for the sandbox).
    #[arg(long)]
    allow_commands: bool,
    /// The name the hub shows (default: this machine's hostname).
    #[arg(long)]
    hostname: Option<String>,
    #[command(flatten)]
    ssh: SshArgs,
    #[command(flatten)]
    dir: StateDirArg,
}

/// sshd trusted through the hub's SSH CA (README: "SSH certificates").
#[derive(clap::Args)]
struct SshArgs {
    /// Have the hub certify sshd's host keys (renewed at half-life) and point sshd at
    /// the certificates: clients that trust the hub's CA connect without a prompt.
    #[arg(long)]
    ssh_host_cert: bool,
    /// Let sshd accept user certificates the hub signs, and keep the hub's revocation
    /// list installed (a login name must be a principal of the certificate).
    #[arg(long)]
    ssh_user_ca: bool,
    /// sshd's directory: its host keys, and where certificates and the drop-in
    /// `sshd_config.d/watchgrid.conf` are written.
    #[arg(long, value_name = "DIR", default_value = "/etc/ssh")]
    ssh_dir: PathBuf,
    /// The command that makes sshd load new host certificates (split at spaces).
    #[arg(long, value_name = "COMMAND", default_value = watchgrid_agent::sshd::DEFAULT_RELOAD)]
    sshd_reload: String,
}

impl SshArgs {
    fn settings(&self) -> Option<watchgrid_agent::sshd::SshSettings> {
        (self.ssh_host_cert || self.ssh_user_ca).then(|| watchgrid_agent::sshd::SshSettings {
            dir: self.ssh_dir.clone(),
            host_certs: self.ssh_host_cert,
            user_ca: self.ssh_user_ca,
            reload: self
                .sshd_reload
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        })
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// The agent's WireGuard interface.
    #[arg(long, default_value = "wg-watchgrid")]
    interface: String,
    #[arg(long, default_value_t = 1420)]
    mtu: u16,
    #[command(flatten)]
    logs: LogArgs,
    #[command(flatten)]
    dir: StateDirArg,
}

/// What the agent ships to the hub (README: "Logs and sign-ins").
#[derive(clap::Args)]
struct LogArgs {
    /// Follow journald and ship its lines (sign-ins are found in them).
    #[arg(long, value_enum, default_value = "on")]
    journal: OnOff,
    /// Read the journal files in DIR (a container's or another root's
    /// /var/log/journal) instead of the system journal.
    #[arg(long, value_name = "DIR")]
    journal_directory: Option<PathBuf>,
    /// A text log file to follow and ship (repeatable; rotation is followed).
    #[arg(long = "log-file", value_name = "PATH")]
    log_files: Vec<PathBuf>,
    /// The highest journal priority shipped (0 emerg … 7 debug).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(0..=7))]
    journal_priority: u8,
    /// Ship only these journal units (repeatable; `name*` matches a prefix).
    #[arg(long = "journal-unit", value_name = "UNIT")]
    journal_units: Vec<String>,
    /// Do not ship these journal units (repeatable; `name*` matches a prefix).
    #[arg(long = "journal-exclude-unit", value_name = "UNIT")]
    journal_exclude_units: Vec<String>,
    /// The spool's cap while the hub is away; when full the oldest lines are dropped
    /// and counted.
    #[arg(long, default_value_t = watchgrid_agent::logs::spool::DEFAULT_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1 << 20..))]
    spool_max_bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

impl LogArgs {
    fn sources(&self) -> LogSources {
        LogSources {
            journal: self.journal == OnOff::On,
            journal_directory: self.journal_directory.clone(),
            files: self.log_files.clone(),
            priority_max: self.journal_priority,
            include_units: self.journal_units.clone(),
            exclude_units: self.journal_exclude_units.clone(),
            spool_max_bytes: self.spool_max_bytes,
        }
    }

    /// The sources and their spool (in the state dir), or `None` when nothing is read.
    fn open(&self, dir: &StateDir) -> anyhow::Result<Option<(LogSources, SharedSpool)>> {
        let sources = self.sources();
        if sources.is_empty() {
            return Ok(None);
        }
        let spool = Spool::open(dir.file(SPOOL_DIR), sources.spool_max_bytes)?;
        Ok(Some((sources, Arc::new(Mutex::new(spool)))))
    }
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    dir: StateDirArg,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Enroll(a) => run_enroll(a),
        AgentCommand::Run(a) => run_agent(a),
        AgentCommand::Status(a) => show_status(a),
    }
}

fn run_enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let trust = match (args.ca_fingerprint, args.insecure_first_use) {
        (Some(f), _) => Trust::Pin(f),
        (None, true) => Trust::FirstUse,
        (None, false) => return Err(watchgrid_agent::enroll::EnrollError::NoTrust.into()),
    };
    let first_use = matches!(trust, Trust::FirstUse);
    let dir = StateDir::new(args.dir.state_dir);
    let request = EnrollRequest {
        server: args.server,
        token: Sensitive::new(args.token),
        trust,
        allow_commands: args.allow_commands,
        hostname: args.hostname.unwrap_or_else(default_hostname),
        ssh: args.ssh.settings(),
    };
    if let Some(ssh) = &request.ssh {
        if watchgrid_agent::sshd::files::config_includes_dropins(&ssh.dir) == Some(false) {
            eprintln!(
                "warning: {}/sshd_config has no `Include {}/sshd_config.d/*.conf`: sshd will not read the agent's settings until it does",
                ssh.dir.display(),
                ssh.dir.display()
            );
        }
    }
    let enrolled = crate::runtime()?.block_on(enroll(&dir, request))?;
    let what = if enrolled.trusted_is_ca {
        "CA"
    } else {
        "TLS certificate"
    };
    if first_use {
        println!(
            "trusted on first use: the hub's {what} {}\n  compare it with the fingerprint on the hub's console",
            enrolled.trusted
        );
    }
    println!(
        "enrolled as {} ({}); the hub's {what} {} is pinned in {}",
        enrolled.device_id,
        enrolled.address,
        enrolled.trusted,
        dir.path().display()
    );
    println!(
        "start the agent: watchgrid agent run --state-dir {}",
        dir.path().display()
    );
    Ok(())
}

fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    crate::init_logging();
    validate_ifname(&args.interface)?;
    let dir = StateDir::new(args.dir.state_dir.clone());
    let enrollment = dir.enrollment()?;
    let key = dir.private_key()?;
    let pinned = Pinned::new(StateDir::pinned(&enrollment)?);
    let client = HubClient::new(&enrollment.server, pinned)?.with_key(enrollment.agent_key.clone());
    let journal = Journal::open(dir.file("commands"))?;
    let logs = args.logs.open(&dir)?;
    let addresses = interface_addresses(&enrollment.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let tun = open_tun(&args.interface, args.mtu, Some(&addresses))?;
        let mut dataplane = Dataplane::new(tun, 0)?;
        dataplane.configure(DeviceConfig {
            private_key: Some(Some(key)),
            ..DeviceConfig::default()
        })?;
        let (commands, inbox) = mpsc::channel(16);
        // `wg show IFNAME` works on the agent too.
        let uapi = UapiSocket::bind(&args.interface)?;
        let uapi = tokio::spawn(uapi.serve(commands.clone()));
        let tunnel = DataplaneTunnel {
            commands,
            interface: args.interface.clone(),
            addresses: addresses
                .iter()
                .filter_map(|(a, l)| IpPrefix::new(*a, *l).ok())
                .collect(),
            hub: Default::default(),
        };
        tracing::info!(server = %enrollment.server, device = %enrollment.config.device_id,
            interface = %args.interface, "agent starting");
        let agent = Agent::new(dir, enrollment, client, journal, tunnel, logs);
        let result = tokio::select! {
            r = dataplane.run(inbox, crate::shutdown_signal()) => r.map(drop),
            r = agent.run() => r.map_err(anyhow::Error::from),
        };
        uapi.abort();
        let _ = uapi.await;
        result
    })
}

fn show_status(args: StatusArgs) -> anyhow::Result<()> {
    let dir = StateDir::new(args.dir.state_dir);
    let e = dir.enrollment()?;
    let pinned = StateDir::pinned(&e)?;
    println!("hub:        {}", e.server);
    println!("pinned:     {}", Fingerprint::of(pinned.as_ref()));
    println!("device:     {} ({})", e.config.device_id, e.config.address);
    println!(
        "commands:   {}",
        if e.allow_commands {
            "allowed"
        } else {
            "not allowed"
        }
    );
    match dir.status()? {
        None => println!("tunnel:     never run (start `watchgrid agent run`)"),
        Some(s) => {
            let age = watchgrid_agent::unix_now().saturating_sub(s.updated_at);
            println!("tunnel:     {} (as of {age} s ago)", s.tunnel);
            if let Some(h) = s.last_handshake_s {
                println!("handshake:  {h} s ago");
            }
            println!(
                "heartbeat:  {}",
                s.last_heartbeat.as_deref().unwrap_or("none yet")
            );
            println!("logs:       {}", s.logs.as_deref().unwrap_or("not shipped"));
            if let Some(ssh) = &s.ssh {
                println!("ssh:        {ssh}");
            }
        }
    }
    Ok(())
}

//! Response bodies of the JSON API, typed so the OpenAPI document describes exactly
//! what handlers send.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use watchgrid_core::PublicKey;
use watchgrid_store::Sensitive;

/// Every error: `{"error": "..."}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: String,
}

impl Status {
    pub fn new(s: &str) -> Status {
        Status {
            status: s.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the firewall could not be applied (while no ruleset is in
    /// force, nothing but `/healthz` answers).
    pub status: String,
    pub setup_complete: bool,
    /// `off`, `pending`, `applied` or `failed` (the reason is in the admin API and the
    /// journal, not here).
    pub firewall: String,
    /// How the last update of the image went, e.g. `update to 0.2.0 failed, rolled back
    /// to 0.1.0`; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Username {
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiTokenCreated {
    /// Shown once; only its hash is stored.
    pub token: String,
    /// The token's id for `GET /api/tokens` and `DELETE /api/tokens/{id}`.
    pub id: String,
    pub name: String,
    /// Unix time after which the token is refused; absent: never.
    pub expires_at: Option<u64>,
}

/// An API token as listed: never the token itself.
#[derive(Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    /// The admin the token acts as.
    pub username: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// To the minute; absent if never used.
    pub last_used_at: Option<u64>,
    /// True once `expires_at` has passed (the token is refused).
    pub expired: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ApiTokenList {
    pub tokens: Vec<ApiTokenView>,
}

#[derive(Serialize, ToSchema)]
pub struct TotpSetup {
    /// Base32 secret for manual entry.
    #[schema(value_type = String)]
    pub secret: Sensitive<String>,
    pub otpauth_url: String,
    /// The otpauth URL as an SVG QR code.
    pub qr_svg: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, shown once.
    pub recovery_codes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentTokenCreated {
    /// Shown once; only its hash is stored.
    pub token: String,
    pub name: String,
    pub uses: u32,
    pub expires_at: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// A prefix of the token's hash: identifies it without revealing it.
    pub id: String,
    pub name: String,
    pub uses_left: u32,
    pub expires_at: Option<u64>,
    pub created_at: u64,
    pub groups: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentTokenList {
    pub tokens: Vec<EnrollmentTokenView>,
}

/// What a registering device needs: its credential and its WireGuard configuration.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Registration {
    /// The agent's credential, shown once.
    #[schema(value_type = String)]
    pub agent_key: Sensitive<String>,
    #[serde(flatten)]
    pub config: AgentConfig,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    /// WireGuard public key, base64.
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    pub address: String,
    pub address_v6: Option<String>,
    pub enabled: bool,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// Groups the firewall's forward rules refer to.
    pub groups: Vec<String>,
    /// For agents that have sent a heartbeat since the hub started.
    pub agent: Option<AgentStatus>,
}

impl From<&watchgrid_store::Device> for DeviceView {
    fn from(d: &watchgrid_store::Device) -> Self {
        DeviceView {
            id: d.id.clone(),
            name: d.name.clone(),
            public_key: d.public_key,
            address: d.address_v4.to_string(),
            address_v6: d.address_v6.map(|a| a.to_string()),
            enabled: d.enabled,
            created_at: d.created_at,
            expires_at: d.expires_at,
            groups: d.groups.clone(),
            agent: None,
        }
    }
}

/// A device created by the admin, with everything to configure it.
#[derive(Serialize, ToSchema)]
pub struct DeviceCreated {
    pub device: DeviceView,
    /// Only when the server generated the key pair; shown once, never stored.
    #[schema(value_type = Option<String>)]
    pub private_key: Option<Sensitive<String>>,
    /// A complete wg-quick configuration.
    pub config: String,
    /// The configuration as an SVG QR code (for phone apps).
    pub qr_svg: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    /// The entry's place in the log (also a page cursor).
    pub id: String,
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub entries: Vec<AuditView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// What an agent reports every interval. Everything but the version is optional: an
/// agent reports what its platform can tell.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[schema(max_length = 64)]
    pub agent_version: String,
    #[schema(max_length = 253)]
    pub hostname: Option<String>,
    #[schema(max_length = 256)]
    pub os: Option<String>,
    #[schema(max_length = 256)]
    pub kernel: Option<String>,
    pub uptime_s: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    #[schema(max_items = 3)]
    pub load: Option<Vec<f64>>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub disk_available_bytes: Option<u64>,
    /// The agent's own tunnel counters.
    pub tunnel_rx_bytes: Option<u64>,
    pub tunnel_tx_bytes: Option<u64>,
    /// Seconds since the agent's last WireGuard handshake with the hub.
    pub last_handshake_s: Option<u64>,
    /// Log lines (and login events) the agent's full spool dropped, in total.
    #[serde(default)]
    pub log_lines_dropped: Option<u64>,
}

/// The hub's answer to a heartbeat.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Seconds until the next heartbeat.
    pub interval_s: u64,
    /// The ETag of `GET /api/wg/config`: fetch it again when this changes.
    pub config_etag: String,
    pub commands_pending: u32,
    /// Changes whenever the SSH CA's keys or its revocation list change: an agent that
    /// manages sshd fetches `/downloads/ssh-ca.pub` and `/downloads/ssh-revoked.krl`
    /// again. Absent when the hub has no SSH CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_etag: Option<String>,
}

/// A device's WireGuard configuration (its private key never leaves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentConfig {
    pub device_id: String,
    /// Interface address with the VPN prefix, e.g. `10.100.0.2/16`.
    pub address: String,
    /// IPv6 interface address in the VPN's /64, e.g. `fd12:3456:789a:bcde::2/64`.
    pub address_v6: Option<String>,
    /// The hub's WireGuard public key, base64.
    #[schema(value_type = String)]
    pub hub_public_key: PublicKey,
    /// `host:port` to dial.
    pub endpoint: String,
    /// What to route through the tunnel, one CIDR per item, e.g.
    /// `["10.100.0.0/16", "fd12:3456:789a:bcde::/64"]`.
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
}

/// An agent's state as the hub last heard it.
#[derive(Serialize, ToSchema)]
pub struct AgentStatus {
    /// Heard from within the last three heartbeat intervals.
    pub online: bool,
    pub last_seen: u64,
    pub agent_version: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub uptime_s: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<Vec<f64>>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub disk_available_bytes: Option<u64>,
    /// Log lines the agent's full spool dropped (while the hub was away), in total.
    pub log_lines_dropped: Option<u64>,
}

/// A command as the operator sees it.
#[derive(Serialize, ToSchema)]
pub struct CommandView {
    pub id: String,
    pub device_id: String,
    pub argv: Vec<String>,
    pub timeout_s: u32,
    pub queued_by: String,
    pub queued_at: u64,
    pub expires_at: u64,
    /// queued, delivered, succeeded, failed, timed_out, interrupted, rejected,
    /// cancelled or expired.
    pub state: String,
    pub delivered_at: Option<u64>,
    pub deliveries: u32,
    pub result: Option<CommandResultView>,
}

#[derive(Serialize, ToSchema)]
pub struct CommandResultView {
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub started_at: u64,
    pub duration_ms: u64,
    pub reported_at: u64,
}

impl From<watchgrid_store::AgentCommand> for CommandView {
    fn from(c: watchgrid_store::AgentCommand) -> Self {
        CommandView {
            id: c.id,
            device_id: c.device_id,
            argv: c.argv,
            timeout_s: c.timeout_s,
            queued_by: c.queued_by,
            queued_at: c.queued_at,
            expires_at: c.expires_at,
            state: c.state.as_str().to_string(),
            delivered_at: c.delivered_at,
            deliveries: c.deliveries,
            result: c.result.map(|r| CommandResultView {
                exit_code: r.exit_code,
                error: r.error,
                stdout: r.stdout,
                stderr: r.stderr,
                stdout_truncated: r.stdout_truncated,
                stderr_truncated: r.stderr_truncated,
                started_at: r.started_at,
                duration_ms: r.duration_ms,
                reported_at: r.reported_at,
            }),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CommandList {
    pub commands: Vec<CommandView>,
}

#[derive(Serialize, ToSchema)]
pub struct CommandQueued {
    pub id: String,
    pub state: String,
}

/// A command handed to an agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandOrder {
    pub id: String,
    /// Executed without a shell.
    pub argv: Vec<String>,
    /// Kill the whole process group after this many seconds.
    pub timeout_s: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandOrders {
    pub commands: Vec<CommandOrder>,
}

/// Why a command has no exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandErrorKind {
    /// Killed (with its process group) at the timeout.
    Timeout,
    /// The agent stopped while it ran; it is not run again.
    Interrupted,
    /// The agent was not enrolled with `--allow-commands`.
    Refused,
    /// It could not be started (no such program, permission).
    Spawn,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandError {
    pub kind: CommandErrorKind,
    #[schema(max_length = 1024)]
    pub message: String,
}

/// What an agent reports for a command: an exit code, or an error (a command killed at
/// its timeout may have both absent exit code and `timeout`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandReport {
    pub id: String,
    pub exit_code: Option<i32>,
    pub error: Option<CommandError>,
    /// At most 64 KiB each; the agent cuts longer output and sets the flag.
    #[schema(max_length = 65536)]
    pub stdout: String,
    #[schema(max_length = 65536)]
    pub stderr: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    pub started_at: u64,
    pub duration_ms: u64,
}

/// How a sign-in attempt ended, as the agent read it from sshd, login, su or sudo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginOutcome {
    /// Accepted (password, publickey or keyboard-interactive).
    Accepted,
    /// A wrong password (or other failed authentication) for an existing user.
    Failed,
    /// A user name that does not exist on the machine.
    InvalidUser,
    /// A session opened for root (login, su, sshd).
    RootSession,
    /// sudo to root.
    SudoRoot,
}

impl LoginOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Accepted => "accepted",
            LoginOutcome::Failed => "failed",
            LoginOutcome::InvalidUser => "invalid_user",
            LoginOutcome::RootSession => "root_session",
            LoginOutcome::SudoRoot => "sudo_root",
        }
    }
}

/// A sign-in event an agent found in its machine's logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginEvent {
    /// Per-device sequence number of login events, strictly increasing.
    pub seq: u64,
    /// Microseconds since the UNIX epoch, UTC.
    pub ts_us: u64,
    pub outcome: LoginOutcome,
    /// The user name as logged (may be hostile: shown escaped, never interpreted).
    #[schema(max_length = 256)]
    pub user: String,
    /// The remote address, for network logins.
    #[schema(value_type = Option<String>)]
    pub source_ip: Option<std::net::IpAddr>,
    pub source_port: Option<u16>,
    /// `password`, `publickey`, `keyboard-interactive`, …
    #[schema(max_length = 64)]
    pub method: Option<String>,
    /// `sshd`, `login`, `su` or `sudo`.
    #[schema(max_length = 64)]
    pub service: String,
    /// The log line it was read from; the hub keeps it only when the admin turned that on.
    #[schema(max_length = 4096)]
    pub raw: Option<String>,
}

/// `POST /api/logs/`: log lines, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    #[schema(min_items = 1, max_items = 5000)]
    pub lines: Vec<watchgrid_logstore::LogLine>,
}

/// `POST /api/logs/login`: login events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<LoginEvent>,
}

/// The highest sequence number the hub has stored for this device (everything up to it
/// may leave the agent's spool).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Acked {
    pub acked_seq: u64,
}

/// Host certificates the hub signed for an agent's sshd (`POST /api/agent/ssh-host-certs`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct HostCerts {
    /// One per host key, in the order sent.
    pub certificates: Vec<HostCert>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct HostCert {
    /// One OpenSSH line: install as `KEY-cert.pub` next to the host key.
    pub certificate: String,
    pub serial: u64,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
}

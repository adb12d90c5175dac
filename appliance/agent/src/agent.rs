//! `watchgrid agent run`'s logic, apart from the tunnel itself: heartbeats, config
//! changes, the command long poll and the exactly-once command flow. The binary gives
//! it the tunnel as a [`Tunnel`].

use crate::backoff::Backoff;
use crate::client::{ClientError, HubClient};
use crate::facts::{self, TunnelCounters};
use crate::journal::{interrupted, Journal, JournalError};
use crate::logs::collect::{self, SharedSpool};
use crate::logs::{ship, LogSources};
use crate::sshd::Sshd;
use crate::state::{Enrollment, StateDir, Status};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use watchgrid_api::dto::{
    AgentConfig, CommandError, CommandErrorKind, CommandOrder, CommandReport, HeartbeatAnswer,
};

/// The longest a long poll asks the hub to hold the request (the hub's own cap).
const POLL_WAIT: Duration = Duration::from_secs(30);

/// The agent's WireGuard interface, as the agent logic needs it.
pub trait Tunnel: Send + Sync + 'static {
    /// Puts the hub peer (endpoint, allowed IPs, keepalive) in place.
    fn apply(&self, config: &AgentConfig) -> impl Future<Output = Result<(), String>> + Send;
    /// Removes the hub peer: the hub refused this agent.
    fn stop(&self) -> impl Future<Output = ()> + Send;
    fn counters(&self) -> impl Future<Output = TunnelCounters> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("bringing up the tunnel: {0}")]
    Tunnel(String),
}

pub struct Agent<T: Tunnel> {
    dir: StateDir,
    enrollment: Mutex<Enrollment>,
    client: HubClient,
    journal: Journal,
    tunnel: T,
    /// What is read and where it waits for the hub; `None`: log shipping is off.
    logs: Option<(LogSources, SharedSpool)>,
    /// Ids running in this process.
    running: Mutex<HashSet<String>>,
    status: Mutex<Status>,
    /// sshd's certificates and trust, when enrollment asked for them.
    sshd: Option<Sshd>,
}

impl<T: Tunnel> Agent<T> {
    pub fn new(
        dir: StateDir,
        enrollment: Enrollment,
        client: HubClient,
        journal: Journal,
        tunnel: T,
        logs: Option<(LogSources, SharedSpool)>,
    ) -> Arc<Agent<T>> {
        let sshd = enrollment.ssh.clone().map(Sshd::new);
        Arc::new(Agent {
            dir,
            sshd,
            enrollment: Mutex::new(enrollment),
            client,
            journal,
            tunnel,
            logs,
            running: Mutex::new(HashSet::new()),
            status: Mutex::new(Status::default()),
        })
    }

    fn config(&self) -> AgentConfig {
        lock(&self.enrollment).config.clone()
    }

    /// Runs until the process is stopped. Commands a previous run left unreported are
    /// reported first (those it never finished as interrupted).
    pub async fn run(self: Arc<Self>) -> Result<(), AgentError> {
        for owed in self.journal.recover(crate::unix_now())? {
            tokio::spawn(self.clone().report_until_stored(owed));
        }
        self.tunnel
            .apply(&self.config())
            .await
            .map_err(AgentError::Tunnel)?;
        tokio::join!(self.clone().session(), self.clone().ship_logs());
        Ok(())
    }

    /// Follows the log sources into the spool and ships the spool to the hub.
    async fn ship_logs(self: Arc<Self>) {
        let Some((sources, spool)) = self.logs.clone() else {
            return;
        };
        tokio::join!(
            collect::run(sources, spool.clone()),
            ship::run(self.client.clone(), spool)
        );
    }

    /// The spool's drop total, for the heartbeat.
    fn log_lines_dropped(&self) -> Option<u64> {
        self.logs
            .as_ref()
            .map(|(_, spool)| collect::lock(spool).dropped())
    }

    /// Heartbeats every interval and holds the command long poll in between, one
    /// request at a time: an agent keeps a single connection to the hub, which is what
    /// lets one hub carry thousands of agents. Heartbeats keep a fixed schedule; a poll
    /// asks for whole seconds, so a heartbeat goes out less than a second late.
    async fn session(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        let mut refused = false;
        let mut due = Instant::now();
        loop {
            match self.heartbeat(&mut refused).await {
                Some(interval) => {
                    backoff.reset();
                    due += interval;
                    // After a long stall (a suspended machine), start the schedule anew.
                    if due < Instant::now() {
                        due = Instant::now() + interval;
                    }
                    self.poll_until(due).await;
                }
                None => {
                    // Polls would fail the same way: retry the heartbeat alone.
                    tokio::time::sleep(backoff.wait()).await;
                    due = Instant::now();
                }
            }
        }
    }

    /// One heartbeat: the interval until the next, or `None` when it failed.
    async fn heartbeat(&self, refused: &mut bool) -> Option<Duration> {
        let counters = self.tunnel.counters().await;
        let facts = facts::collect(counters, self.log_lines_dropped());
        match self.client.heartbeat(&facts).await {
            Ok(answer) => {
                if std::mem::take(refused) {
                    tracing::info!("the hub accepts this agent again; tunnel back up");
                    self.reapply().await;
                }
                self.follow_config(&answer).await;
                if let Some(sshd) = &self.sshd {
                    let etag = answer.ssh_etag.as_deref();
                    sshd.follow(&self.client, etag, crate::unix_now()).await;
                }
                self.note_heartbeat(counters, Ok(&answer));
                Some(Duration::from_secs(answer.interval_s.clamp(1, 3600)))
            }
            Err(e) => {
                if matches!(e, ClientError::Unauthorized) && !*refused {
                    tracing::warn!("the hub refused this agent's key; stopping the tunnel");
                    self.tunnel.stop().await;
                    *refused = true;
                } else {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                self.note_heartbeat(counters, Err(&e));
                None
            }
        }
    }

    async fn reapply(&self) {
        if let Err(e) = self.tunnel.apply(&self.config()).await {
            tracing::error!(error = %e, "re-applying the tunnel config");
        }
    }

    /// Fetches the config when the heartbeat says it changed, applies and saves it.
    async fn follow_config(&self, answer: &HeartbeatAnswer) {
        let known = lock(&self.enrollment).config_etag.clone();
        if known.as_deref() == Some(answer.config_etag.as_str()) {
            return;
        }
        let config = match self.client.config().await {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "fetching the changed config"),
        };
        if config != self.config() {
            tracing::info!(endpoint = %config.endpoint, "the hub changed this agent's config");
            if let Err(e) = self.tunnel.apply(&config).await {
                return tracing::error!(error = %e, "applying the new config");
            }
        }
        let saved = {
            let mut e = lock(&self.enrollment);
            e.config = config;
            e.config_etag = Some(answer.config_etag.clone());
            e.clone()
        };
        if let Err(e) = self.dir.save_enrollment(&saved) {
            tracing::error!(error = %e, "saving the new config");
        }
    }

    fn note_heartbeat(&self, t: TunnelCounters, answer: Result<&HeartbeatAnswer, &ClientError>) {
        let now = crate::unix_now();
        let status = {
            let mut s = lock(&self.status);
            s.updated_at = now;
            s.last_handshake_s = t.last_handshake_s;
            s.endpoint = Some(self.config().endpoint);
            s.logs = self.logs.as_ref().map(|(_, spool)| {
                let spool = collect::lock(spool);
                format!(
                    "{} lines waiting, {} dropped while the spool was full",
                    spool.pending(),
                    spool.dropped()
                )
            });
            s.ssh = self.sshd.as_ref().map(Sshd::summary);
            s.tunnel = match (answer, t.last_handshake_s) {
                (Err(ClientError::Unauthorized), _) => "stopped: the hub refused this agent".into(),
                (_, Some(age)) if age < 180 => "up".into(),
                _ => "connecting".into(),
            };
            match answer {
                Ok(a) => {
                    s.last_heartbeat_at = Some(now);
                    s.last_heartbeat = Some(format!(
                        "ok: next in {} s, {} commands pending",
                        a.interval_s, a.commands_pending
                    ));
                }
                Err(e) => s.last_heartbeat = Some(format!("failed: {e}")),
            }
            s.clone()
        };
        if let Err(e) = self.dir.save_status(&status) {
            tracing::warn!(error = %e, "writing status");
        }
    }

    /// Long polls for commands until `due` (the next heartbeat), taking what arrives.
    async fn poll_until(self: &Arc<Self>, due: Instant) {
        let mut backoff = Backoff::new();
        loop {
            let left = due.saturating_duration_since(Instant::now());
            let wait = poll_wait(left);
            if wait.is_zero() {
                return;
            }
            match self.client.poll_commands(wait).await {
                Ok(orders) => {
                    backoff.reset();
                    for order in orders.commands {
                        self.clone().take(order);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "command poll failed");
                    tokio::time::sleep(backoff.wait().min(left)).await;
                }
            }
        }
    }

    /// One delivered command: answered from the journal if it was seen before, else
    /// journaled durably and only then started.
    fn take(self: Arc<Self>, order: CommandOrder) {
        if lock(&self.running).contains(&order.id) {
            return;
        }
        let now = crate::unix_now();
        let entry = match self.journal.get(&order.id) {
            Err(e) => return tracing::error!(error = %e, "command refused"),
            Ok(Some(seen)) => {
                // Run or refused before: report that again, never run it again.
                let report = seen
                    .report
                    .clone()
                    .unwrap_or_else(|| interrupted(&seen, now));
                tokio::spawn(self.report_until_stored(report));
                return;
            }
            Ok(None) => match self.journal.start(&order, now) {
                Ok(entry) => entry,
                Err(e) => return tracing::error!(error = %e, "cannot journal a command; not run"),
            },
        };
        if !lock(&self.enrollment).allow_commands {
            let report = refused(&order, now);
            if let Err(e) = self.journal.finish(entry, report.clone()) {
                tracing::error!(error = %e, "journaling a refusal");
            }
            tokio::spawn(self.report_until_stored(report));
            return;
        }
        lock(&self.running).insert(order.id.clone());
        tokio::spawn(async move {
            tracing::info!(id = %order.id, argv = ?order.argv, "running command");
            let report = crate::runner::run(&order, now).await;
            if let Err(e) = self.journal.finish(entry, report.clone()) {
                tracing::error!(error = %e, "journaling a result");
            }
            lock(&self.running).remove(&order.id);
            self.report_until_stored(report).await;
        });
    }

    /// Sends a result until the hub has it (it may be away: it is retried with backoff).
    async fn report_until_stored(self: Arc<Self>, report: CommandReport) {
        let mut backoff = Backoff::new();
        loop {
            match self.client.report(&report).await {
                Ok(()) => break,
                Err(e) if e.is_transient() || matches!(e, ClientError::Unauthorized) => {
                    tracing::debug!(id = %report.id, error = %e, "reporting later");
                    tokio::time::sleep(backoff.wait()).await;
                }
                Err(e) => {
                    // The hub will never take it (the command or device is gone).
                    tracing::warn!(id = %report.id, error = %e, "result not taken; dropped");
                    break;
                }
            }
        }
        if let Err(e) = self.journal.mark_reported(&report.id) {
            tracing::error!(error = %e, "marking a result reported");
        }
    }
}

/// The long poll's wait for `left` until the next heartbeat: whole seconds (what the
/// API takes), rounded up so that no time passes without a poll open, and at most the
/// hub's cap. Zero: the heartbeat is due.
fn poll_wait(left: Duration) -> Duration {
    if left.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_secs(left.as_secs_f64().ceil() as u64).min(POLL_WAIT)
}

fn refused(order: &CommandOrder, now: u64) -> CommandReport {
    CommandReport {
        id: order.id.clone(),
        exit_code: None,
        error: Some(CommandError {
            kind: CommandErrorKind::Refused,
            message: "this agent was enrolled without --allow-commands".into(),
        }),
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        started_at: now,
        duration_ms: 0,
    }
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    // No invariant spans a panic: every holder writes whole values.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_wait_rounds_up_to_whole_seconds_within_the_cap() {
        assert_eq!(poll_wait(Duration::ZERO), Duration::ZERO);
        assert_eq!(poll_wait(Duration::from_millis(1)), Duration::from_secs(1));
        assert_eq!(
            poll_wait(Duration::from_millis(1500)),
            Duration::from_secs(2)
        );
        assert_eq!(poll_wait(Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(poll_wait(Duration::from_secs(3600)), POLL_WAIT);
    }
}

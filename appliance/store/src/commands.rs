//! Remote commands queued for agents, and the transitions that make them run exactly
//! once: queued → delivered (re-delivered until a result is stored) → a final state.
//! Records are keyed `DEVICE_ID/COMMAND_ID`, so an agent's commands are one prefix scan
//! and a result can only ever reach a command of the device that sent it.

use crate::{Result, Store};
use serde::{Deserialize, Serialize};

/// One remote command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCommand {
    pub id: String,
    pub device_id: String,
    /// Executed without a shell.
    pub argv: Vec<String>,
    pub timeout_s: u32,
    /// The admin who queued it.
    pub queued_by: String,
    pub queued_at: u64,
    /// Not picked up by then: expired.
    pub expires_at: u64,
    pub state: CommandState,
    /// When the agent first received it.
    #[serde(default)]
    pub delivered_at: Option<u64>,
    /// How many times it was handed to the agent (more than one after a lost answer or
    /// a restart of either side; the agent's journal keeps it from running twice).
    #[serde(default)]
    pub deliveries: u32,
    #[serde(default)]
    pub last_delivered_at: Option<u64>,
    #[serde(default)]
    pub result: Option<CommandOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Queued,
    Delivered,
    Succeeded,
    Failed,
    TimedOut,
    /// The agent stopped while it ran; it is reported, never run again.
    Interrupted,
    /// The agent refused or could not start it.
    Rejected,
    Cancelled,
    Expired,
}

impl CommandState {
    /// No further transition happens from a final state.
    pub fn is_final(self) -> bool {
        !matches!(self, CommandState::Queued | CommandState::Delivered)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Delivered => "delivered",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::TimedOut => "timed_out",
            CommandState::Interrupted => "interrupted",
            CommandState::Rejected => "rejected",
            CommandState::Cancelled => "cancelled",
            CommandState::Expired => "expired",
        }
    }
}

/// What the agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOutcome {
    pub exit_code: Option<i32>,
    /// Why there is no exit code (timeout, interrupted, refused, could not start).
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub started_at: u64,
    pub duration_ms: u64,
    pub reported_at: u64,
}

/// Outcome of [`Store::record_command_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultRecorded {
    /// Stored now, with this final state.
    Stored(AgentCommand),
    /// A result was stored before (a retried report): the first one stands.
    AlreadyFinal(AgentCommand),
    /// No such command for this device.
    Unknown,
}

/// Outcome of [`Store::cancel_command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    Cancelled(AgentCommand),
    /// Already picked up or final: too late to cancel.
    TooLate(AgentCommand),
    Unknown,
}

fn key(device_id: &str, id: &str) -> String {
    format!("{device_id}/{id}")
}

impl Store {
    /// Queues a command (committed before returning).
    pub fn queue_command(&self, command: &AgentCommand) -> Result<()> {
        let _change = self.durability.gate.change();
        self.commands
            .put(&key(&command.device_id, &command.id), command)
    }

    /// Every command of one device, oldest first.
    pub fn commands_of(&self, device_id: &str) -> Result<Vec<AgentCommand>> {
        let mut all = self.commands.list_prefix(&format!("{device_id}/"))?;
        all.sort_by_key(|c| (c.queued_at, c.id.clone()));
        Ok(all)
    }

    /// A command by id, whichever device it is for.
    pub fn command(&self, id: &str) -> Result<Option<AgentCommand>> {
        Ok(self.commands.list()?.into_iter().find(|c| c.id == id))
    }

    /// The commands to hand to the agent now: queued ones (marked delivered) and
    /// delivered ones still without a result `redeliver_after` seconds after their
    /// last delivery (the answer may have been lost). Queued ones past their expiry
    /// become expired instead. Returns what to deliver and what expired.
    pub fn deliver_commands(
        &self,
        device_id: &str,
        now: u64,
        redeliver_after: u64,
    ) -> Result<(Vec<AgentCommand>, Vec<AgentCommand>)> {
        let _change = self.durability.gate.change();
        let (mut deliver, mut expired) = (Vec::new(), Vec::new());
        let due = |c: &AgentCommand| match c.state {
            CommandState::Queued => true,
            CommandState::Delivered => c
                .last_delivered_at
                .is_none_or(|t| now >= t.saturating_add(redeliver_after)),
            _ => false,
        };
        for c in self.commands_of(device_id)? {
            if !due(&c) {
                continue;
            }
            let next = self.commands.update(&key(device_id, &c.id), |cur| {
                let Some(mut cur) = cur else { return Err(()) };
                match cur.state {
                    CommandState::Queued if now >= cur.expires_at => {
                        cur.state = CommandState::Expired;
                    }
                    _ if !due(&cur) => return Err(()),
                    _ => {
                        cur.state = CommandState::Delivered;
                        cur.delivered_at.get_or_insert(now);
                        cur.last_delivered_at = Some(now);
                        cur.deliveries += 1;
                    }
                }
                Ok(Some(cur))
            })?;
            match next {
                Ok(Some(n)) if n.state == CommandState::Expired => expired.push(n),
                Ok(Some(n)) => deliver.push(n),
                _ => {}
            }
        }
        Ok((deliver, expired))
    }

    /// Commands of the device without a final state yet.
    pub fn pending_command_count(&self, device_id: &str) -> Result<usize> {
        Ok(self
            .commands_of(device_id)?
            .iter()
            .filter(|c| !c.state.is_final())
            .count())
    }

    /// Stores the agent's result once: a second report for the same id changes nothing.
    pub fn record_command_result(
        &self,
        device_id: &str,
        id: &str,
        state: CommandState,
        outcome: CommandOutcome,
    ) -> Result<ResultRecorded> {
        let _change = self.durability.gate.change();
        let mut earlier = None;
        let updated = self.commands.update(&key(device_id, id), |cur| {
            let Some(mut cur) = cur else { return Err(()) };
            if cur.state.is_final() {
                earlier = Some(cur);
                return Err(());
            }
            cur.state = state;
            cur.result = Some(outcome.clone());
            Ok(Some(cur))
        })?;
        Ok(match (updated, earlier) {
            (Ok(Some(c)), _) => ResultRecorded::Stored(c),
            (_, Some(c)) => ResultRecorded::AlreadyFinal(c),
            _ => ResultRecorded::Unknown,
        })
    }

    /// Cancels a command the agent has not picked up.
    pub fn cancel_command(&self, id: &str) -> Result<Cancellation> {
        let _change = self.durability.gate.change();
        let Some(found) = self.command(id)? else {
            return Ok(Cancellation::Unknown);
        };
        let mut late = None;
        let updated = self.commands.update(&key(&found.device_id, id), |cur| {
            let Some(mut cur) = cur else { return Err(()) };
            if cur.state != CommandState::Queued {
                late = Some(cur);
                return Err(());
            }
            cur.state = CommandState::Cancelled;
            Ok(Some(cur))
        })?;
        Ok(match (updated, late) {
            (Ok(Some(c)), _) => Cancellation::Cancelled(c),
            (_, Some(c)) => Cancellation::TooLate(c),
            _ => Cancellation::Unknown,
        })
    }
}

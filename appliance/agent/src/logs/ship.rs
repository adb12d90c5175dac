//! Shipping the spool to the hub. One spool holds the machine's log lines; login events
//! are parsed from them at shipping time (parsing is deterministic) and sent first,
//! with the sequence number of their line, so one acknowledgement covers both and a
//! batch sent again after a lost answer is stored once on the hub. Nothing leaves the
//! spool before the hub has acknowledged it.

use super::collect::{lock, SharedSpool};
use super::login::Companions;
use super::record::Record;
use crate::backoff::Backoff;
use crate::client::{ClientError, HubClient};
use std::time::Duration;
use watchgrid_api::dto::{LogBatch, LoginBatch, LoginEvent};

/// A batch is at most this many lines…
const BATCH_LINES: usize = 1000;
/// …and about this many bytes of messages (the hub takes 8 MiB bodies; JSON escaping
/// can triple hostile text).
const BATCH_BYTES: usize = 2 << 20;
/// How often an idle shipper looks at the spool.
const IDLE: Duration = Duration::from_millis(250);

/// The login events among `items`, each with its line's sequence number. The
/// companions fold the two lines of one root session, across batches too; a batch sent
/// again may repeat an event with the same seq, which the hub stores once.
pub fn logins(companions: &mut Companions, items: &[(u64, Record)]) -> Vec<LoginEvent> {
    items
        .iter()
        .filter_map(|(seq, r)| companions.feed(r).map(|e| LoginEvent { seq: *seq, ..e }))
        .collect()
}

/// Sends one batch; returns the sequence the hub acknowledged for the lines.
async fn send(
    client: &HubClient,
    companions: &mut Companions,
    items: Vec<(u64, Record)>,
) -> Result<u64, ClientError> {
    let events = logins(companions, &items);
    for chunk in events.chunks(1000) {
        client
            .ship_logins(&LoginBatch {
                events: chunk.to_vec(),
            })
            .await?;
    }
    let lines = items.into_iter().map(|(seq, r)| r.into_line(seq)).collect();
    client.ship_lines(&LogBatch { lines }).await
}

/// Ships until the process stops. A refused key (a disabled device) keeps everything
/// in the spool and tries again with backoff.
pub async fn run(client: HubClient, spool: SharedSpool) {
    let mut backoff = Backoff::new();
    let mut companions = Companions::default();
    loop {
        let batch = lock(&spool).peek(BATCH_LINES, BATCH_BYTES);
        let items = match batch {
            Ok(items) if items.is_empty() => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "reading the log spool");
                tokio::time::sleep(backoff.wait()).await;
                continue;
            }
        };
        match send(&client, &mut companions, items).await {
            Ok(acked) => {
                backoff.reset();
                if let Err(e) = lock(&spool).ack(acked) {
                    tracing::error!(error = %e, "acknowledging the log spool");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "shipping logs later");
                tokio::time::sleep(backoff.wait()).await;
            }
        }
    }
}

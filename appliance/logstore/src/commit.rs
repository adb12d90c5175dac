//! Acknowledgement bookkeeping and group commit.
//!
//! An ingest call *accepts* its new lines (those above the device's accepted sequence)
//! into a pending [`Batch`] under the [`State`] lock, then waits until a commit that
//! carries the batch is durable. Whoever holds the index writer commits every pending
//! batch at once, so concurrent callers share one commit (and its fsyncs) instead of
//! queueing one commit each.
//!
//! The acknowledged sequences travel inside the index commit itself (tantivy's commit
//! payload), so the lines and the sequences that say they are stored become durable
//! together: after a crash either both are there or neither is, and an agent's resend
//! is either skipped or stored, never both nor neither.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use tantivy::schema::Field;
use tantivy::TantivyDocument;

/// How the commit carrying a batch ended: set once, by the committer.
pub(crate) type Outcome = Arc<OnceLock<Result<(), String>>>;

pub(crate) struct Batch {
    pub docs: Vec<TantivyDocument>,
    pub done: Outcome,
}

#[derive(Default)]
struct Device {
    /// In the last durable commit.
    durable: u64,
    /// Highest sequence handed to a batch (pending or committed).
    accepted: u64,
    /// The batch that raised `accepted`, until its outcome is known.
    carrier: Option<Outcome>,
}

/// What a commit writes beside the lines (JSON in the index's meta file).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payload {
    pub version: u32,
    /// Device id -> highest sequence stored.
    pub acked: BTreeMap<String, u64>,
    /// The next free line id (ids order lines of the same microsecond).
    pub next_line_id: u64,
}

pub(crate) const PAYLOAD_VERSION: u32 = 1;

impl Payload {
    pub fn parse(text: Option<&str>) -> Result<Payload, String> {
        let Some(text) = text else {
            return Ok(Payload {
                version: PAYLOAD_VERSION,
                ..Payload::default()
            });
        };
        let p: Payload = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if p.version != PAYLOAD_VERSION {
            return Err(format!("commit payload version {}", p.version));
        }
        Ok(p)
    }
}

/// The store's memory of what is accepted, pending and durable.
pub(crate) struct State {
    devices: HashMap<String, Device>,
    pending: Vec<Batch>,
    next_line_id: u64,
}

/// What a caller waits for after [`State::accept`]: the acknowledged sequence it may
/// return once `wait` (if any) has committed.
pub(crate) struct Accepted {
    pub acked: u64,
    pub wait: Option<Outcome>,
}

impl State {
    pub fn new(p: &Payload) -> State {
        let devices = p
            .acked
            .iter()
            .map(|(id, &seq)| {
                let d = Device {
                    durable: seq,
                    accepted: seq,
                    carrier: None,
                };
                (id.clone(), d)
            })
            .collect();
        State {
            devices,
            pending: Vec::new(),
            next_line_id: p.next_line_id,
        }
    }

    /// Durable acknowledged sequence of a device (0 for one never seen).
    pub fn durable(&self, device_id: &str) -> u64 {
        self.devices.get(device_id).map_or(0, |d| d.durable)
    }

    /// Takes the lines above the device's accepted sequence from `lines` (sorted by
    /// sequence, unique) into a pending batch, giving each a line id.
    pub fn accept(
        &mut self,
        device_id: &str,
        lines: Vec<(u64, TantivyDocument)>,
        line_id: Field,
    ) -> Accepted {
        let device = self.devices.entry(device_id.to_owned()).or_default();
        let mut docs = Vec::new();
        for (seq, mut doc) in lines {
            if seq > device.accepted {
                doc.add_u64(line_id, self.next_line_id);
                self.next_line_id += 1;
                device.accepted = seq;
                docs.push(doc);
            }
        }
        if !docs.is_empty() {
            let done = Outcome::default();
            device.carrier = Some(done.clone());
            self.pending.push(Batch { docs, done });
        }
        // A carrier already known is dropped: nothing waits on a finished commit.
        if device.carrier.as_ref().is_some_and(|c| c.get().is_some()) {
            device.carrier = None;
        }
        Accepted {
            acked: device.accepted,
            wait: device.carrier.clone(),
        }
    }

    /// Every pending batch, and the payload that describes the index once they are in.
    pub fn drain(&mut self) -> (Vec<Batch>, Payload) {
        let payload = Payload {
            version: PAYLOAD_VERSION,
            acked: self
                .devices
                .iter()
                .map(|(id, d)| (id.clone(), d.accepted))
                .collect(),
            next_line_id: self.next_line_id,
        };
        (std::mem::take(&mut self.pending), payload)
    }

    /// The commit of `payload` is durable.
    pub fn committed(&mut self, payload: &Payload) {
        for (id, &seq) in &payload.acked {
            if let Some(d) = self.devices.get_mut(id) {
                d.durable = d.durable.max(seq);
            }
        }
    }

    /// A commit failed and was rolled back: what it carried is not stored. Batches
    /// still pending may build on it (a device's next lines), so they fail too, and
    /// every device's accepted sequence falls back to its durable one; the agents send
    /// the lines again.
    pub fn failed(&mut self, why: &str) {
        for b in self.pending.drain(..) {
            let _ = b.done.set(Err(why.to_owned()));
        }
        for d in self.devices.values_mut() {
            d.accepted = d.durable;
            d.carrier = None;
        }
    }

    /// Forgets a device; returns whether it was known.
    pub fn forget(&mut self, device_id: &str) -> bool {
        self.devices.remove(device_id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::Schema;

    fn field() -> Field {
        let mut b = Schema::builder();
        b.add_u64_field("line_id", tantivy::schema::FAST)
    }

    fn docs(seqs: &[u64]) -> Vec<(u64, TantivyDocument)> {
        seqs.iter().map(|&s| (s, TantivyDocument::new())).collect()
    }

    #[test]
    fn a_resend_waits_for_the_batch_that_carries_its_lines() {
        let mut st = State::new(&Payload::default());
        let first = st.accept("d", docs(&[1, 2, 3]), field());
        assert_eq!(first.acked, 3);
        // The same lines again while the first batch is pending: nothing new, but the
        // answer must wait for the first batch's commit.
        let again = st.accept("d", docs(&[1, 2, 3]), field());
        assert_eq!(again.acked, 3);
        let (Some(a), Some(b)) = (first.wait, again.wait) else {
            panic!("both must wait");
        };
        assert!(Arc::ptr_eq(&a, &b));
        let (batches, payload) = st.drain();
        assert_eq!(batches.len(), 1);
        assert_eq!(payload.acked.get("d"), Some(&3));
        assert_eq!(payload.next_line_id, 3);
        st.committed(&payload);
        for b in batches {
            let _ = b.done.set(Ok(()));
        }
        assert_eq!(st.durable("d"), 3);
        assert!(st.accept("d", docs(&[2]), field()).wait.is_none());
    }

    #[test]
    fn a_failed_commit_fails_what_is_pending_and_rewinds() {
        let mut st = State::new(&Payload::default());
        let one = st.accept("d", docs(&[1]), field());
        let (batches, _) = st.drain();
        let two = st.accept("d", docs(&[2]), field());
        for b in batches {
            let _ = b.done.set(Err("disk full".into()));
        }
        st.failed("disk full");
        for w in [one.wait, two.wait] {
            assert!(matches!(w.and_then(|o| o.get().cloned()), Some(Err(_))));
        }
        // Both lines are taken again.
        assert_eq!(st.accept("d", docs(&[1, 2]), field()).acked, 2);
    }

    #[test]
    fn payload_round_trips_and_refuses_other_versions() -> Result<(), String> {
        let mut p = Payload::parse(None)?;
        p.acked.insert("dev".into(), 7);
        p.next_line_id = 9;
        let text = serde_json::to_string(&p).map_err(|e| e.to_string())?;
        assert_eq!(Payload::parse(Some(&text))?, p);
        assert!(Payload::parse(Some(r#"{"version":2,"acked":{},"next_line_id":0}"#)).is_err());
        assert!(Payload::parse(Some("garbage")).is_err());
        Ok(())
    }
}

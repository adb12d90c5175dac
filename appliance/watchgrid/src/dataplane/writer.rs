//! Writing the engine's output on a thread of its own. A UDP send runs the path to the
//! wire (and, on a veth or loopback, the receiver's stack); a TUN write runs the
//! kernel's whole receive path for the packet, TCP included. That is about half of the
//! dataplane's time, so it overlaps with the next round's reads and crypto instead of
//! waiting for them. The engine stays owned by the dataplane task: only finished
//! batches cross, in order, on one channel, and come back empty for reuse.

use super::batch::{Batch, HEADROOM};
use super::udp::Sockets;
use std::ops::Deref;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc as tokio_mpsc;
use tun_rs::{AsyncDevice, GROTable};

/// Batches in rotation: one being filled, up to two queued or being written. More
/// would only add latency; fewer would stall the engine while a batch is written.
const DEPTH: usize = 3;

struct Job {
    batch: Batch,
    /// The sockets current when the batch was made (a rebind replaces them).
    sockets: Arc<Sockets>,
}

pub struct Writer {
    jobs: Option<mpsc::SyncSender<Job>>,
    returned: tokio_mpsc::UnboundedReceiver<Batch>,
    /// Batches not handed over yet.
    spare: Vec<Batch>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(tun: Arc<AsyncDevice>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(DEPTH);
        let (give_back, returned) = tokio_mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("wg-writer".into())
            .spawn(move || write_all(&tun, &queue, &give_back))?;
        Ok(Writer {
            jobs: Some(jobs),
            returned,
            spare: (1..DEPTH).map(|_| Batch::default()).collect(),
            thread: Some(thread),
        })
    }

    /// Hands `batch` to the writer thread and leaves an empty one in its place, waiting
    /// for one to come back when all are in flight (the engine's backpressure).
    pub async fn hand_over(&mut self, batch: &mut Batch, sockets: &Arc<Sockets>) {
        if batch.is_empty() {
            return;
        }
        let empty = match self.spare.pop() {
            Some(b) => b,
            None => match self.returned.recv().await {
                Some(b) => b,
                // The thread is gone (it only ends when `jobs` closes); drop the output.
                None => {
                    batch.clear();
                    return;
                }
            },
        };
        let full = std::mem::replace(batch, empty);
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job {
                batch: full,
                sockets: sockets.clone(),
            });
        }
    }
}

impl Drop for Writer {
    /// Lets the thread write what is queued, then waits for it: the TUN device and
    /// the sockets close only when both ends have let go of them.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_all(
    tun: &AsyncDevice,
    queue: &mpsc::Receiver<Job>,
    give_back: &tokio_mpsc::UnboundedSender<Batch>,
) {
    let mut gro = GROTable::default();
    for Job { mut batch, sockets } in queue {
        send_datagrams(&batch, &sockets);
        write_packets(tun, &mut gro, &mut batch);
        batch.clear();
        if give_back.send(batch).is_err() {
            return;
        }
    }
}

fn send_datagrams(batch: &Batch, sockets: &Sockets) {
    if batch.datagram_count() == 0 {
        return;
    }
    for run in batch.runs(sockets.max_segments()) {
        if let Some(socket) = sockets.for_dest(&run.to) {
            socket.send_blocking(run.to, run.bytes, run.segment);
        }
    }
}

/// Coalesces one flow's packets (GRO) and writes them; a TUN write does not block.
fn write_packets(tun: &AsyncDevice, gro: &mut GROTable, batch: &mut Batch) {
    if batch.packet_count() == 0 {
        return;
    }
    if let Err(e) = tun
        .deref()
        .send_multiple(gro, batch.packets_mut(), HEADROOM)
    {
        tracing::debug!(error = %e, "TUN write failed");
    }
}

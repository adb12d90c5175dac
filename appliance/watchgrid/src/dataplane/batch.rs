//! The engine's output for one round, laid out for few system calls: datagrams in one
//! contiguous buffer, so equal-sized datagrams to one peer go out as a single UDP GSO
//! send, and inner packets in separate buffers with room in front for the TUN device's
//! virtio header, so the GRO table can coalesce one flow's segments into one TUN write.

use std::net::SocketAddr;
use watchgrid_core::Output;

/// Bytes kept free in front of every inner packet for the TUN device's virtio header.
pub const HEADROOM: usize = tun_rs::VIRTIO_NET_HDR_LEN;

/// Largest UDP payload one GSO send may carry (the kernel's limit for one datagram).
const GSO_MAX_BYTES: usize = 65_000;

/// Room for a packet buffer: GRO appends a flow's later segments to its first packet,
/// up to 64 KiB, and tun-rs coalesces only into a buffer that already has the room
/// (so it never reallocates). Pages are touched only as far as a buffer fills.
const PACKET_CAPACITY: usize = 2 * HEADROOM + 65_535;

/// Packet buffers kept between rounds. Buffers that GRO grew to 64 KiB stay that large,
/// so this bounds what a burst leaves behind (16 MiB at most).
const RETAINED_PACKET_BUFFERS: usize = 256;

/// What the engine produced since the last flush.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// Destination and range in `bytes` of each datagram, in the order produced.
    datagrams: Vec<(SocketAddr, usize, usize)>,
    /// Buffers for inner packets; the first `packets_used` hold this round's packets.
    /// They are kept between rounds, so a steady stream allocates nothing.
    packets: Vec<Vec<u8>>,
    packets_used: usize,
}

/// Datagrams to one destination that go out in one send: `segment` bytes each (the last
/// may be shorter), or one datagram when `segment` is `None`.
#[derive(Debug, PartialEq, Eq)]
pub struct Run<'a> {
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    pub segment: Option<usize>,
}

impl Output for Batch {
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((to, start, self.bytes.len()));
    }

    fn write_packet(&mut self, packet: &[u8]) {
        if self.packets_used == self.packets.len() {
            self.packets.push(Vec::with_capacity(PACKET_CAPACITY));
        }
        if let Some(buf) = self.packets.get_mut(self.packets_used) {
            buf.clear();
            buf.resize(HEADROOM, 0);
            buf.extend_from_slice(packet);
            self.packets_used += 1;
        }
    }
}

impl Batch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.packets_used = 0;
        self.packets.truncate(RETAINED_PACKET_BUFFERS);
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty() && self.packets_used == 0
    }

    pub fn datagram_count(&self) -> usize {
        self.datagrams.len()
    }

    pub fn packet_count(&self) -> usize {
        self.packets_used
    }

    /// This round's inner packets, each starting at [`HEADROOM`] in its buffer.
    pub fn packets_mut(&mut self) -> &mut [Vec<u8>] {
        let used = self.packets_used;
        self.packets.get_mut(..used).unwrap_or_default()
    }

    /// The datagrams grouped into sends of at most `max_segments` segments each. A run
    /// ends at a change of destination, at a datagram of a different size, or after a
    /// shorter one (GSO needs equal segments with only the last one shorter).
    pub fn runs(&self, max_segments: usize) -> Vec<Run<'_>> {
        let mut runs = Vec::new();
        let mut i = 0;
        while let Some(&(to, start, first_end)) = self.datagrams.get(i) {
            let segment = first_end - start;
            let mut end = first_end;
            let mut count = 1;
            while let Some(&(next_to, next_start, next_end)) = self.datagrams.get(i + count) {
                let len = next_end - next_start;
                let fits = count < max_segments
                    && next_to == to
                    && next_start == end
                    && len <= segment
                    && next_end - start <= GSO_MAX_BYTES;
                if !fits {
                    break;
                }
                end = next_end;
                count += 1;
                if len < segment {
                    break;
                }
            }
            runs.push(Run {
                to,
                bytes: self.bytes.get(start..end).unwrap_or_default(),
                segment: (count > 1).then_some(segment),
            });
            i += count;
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn batch_of(datagrams: &[(u16, usize)]) -> Batch {
        let mut batch = Batch::default();
        for (i, &(port, len)) in datagrams.iter().enumerate() {
            batch.send_datagram(addr(port), &vec![i as u8; len]);
        }
        batch
    }

    fn shape(runs: &[Run<'_>]) -> Vec<(u16, usize, Option<usize>)> {
        runs.iter()
            .map(|r| (r.to.port(), r.bytes.len(), r.segment))
            .collect()
    }

    #[test]
    fn equal_datagrams_to_one_peer_form_one_run_with_a_short_tail() {
        let batch = batch_of(&[(1, 100), (1, 100), (1, 100), (1, 40)]);
        assert_eq!(shape(&batch.runs(64)), vec![(1, 340, Some(100))]);
    }

    #[test]
    fn runs_break_at_a_new_peer_a_larger_datagram_and_after_a_short_one() {
        let batch = batch_of(&[(1, 100), (2, 100), (2, 100), (2, 150), (2, 50), (2, 150)]);
        assert_eq!(
            shape(&batch.runs(64)),
            vec![
                (1, 100, None),
                (2, 200, Some(100)),
                (2, 200, Some(150)),
                (2, 150, None)
            ]
        );
    }

    #[test]
    fn runs_respect_the_segment_limit_and_the_size_limit() {
        let batch = batch_of(&[(1, 10); 5]);
        assert_eq!(
            shape(&batch.runs(2)),
            vec![(1, 20, Some(10)), (1, 20, Some(10)), (1, 10, None)]
        );
        // Without GSO (limit 1) every datagram is its own send.
        assert_eq!(batch.runs(1).len(), 5);
        let big = batch_of(&[(1, 1500); 50]);
        for run in big.runs(64) {
            assert!(run.bytes.len() <= GSO_MAX_BYTES);
        }
        assert_eq!(
            big.runs(64).iter().map(|r| r.bytes.len()).sum::<usize>(),
            75_000
        );
    }

    #[test]
    fn runs_keep_the_bytes_in_order() {
        let batch = batch_of(&[(1, 3), (1, 3), (2, 2)]);
        let runs = batch.runs(64);
        assert_eq!(runs[0].bytes, &[0, 0, 0, 1, 1, 1]);
        assert_eq!(runs[1].bytes, &[2, 2]);
    }

    #[test]
    fn packet_buffers_have_room_for_gro_to_coalesce_a_flow_into_them() {
        // tun-rs appends a flow's later segments to its first packet only when the
        // buffer can take them without reallocating: up to 64 KiB, a virtio header on
        // each side. With less, nothing coalesces and every packet is its own write.
        let mut batch = Batch::default();
        batch.write_packet(&[0x45; 60]);
        assert!(batch.packets_mut()[0].capacity() >= 2 * HEADROOM + 65_535);
    }

    #[test]
    fn packets_get_headroom_and_buffers_are_reused() {
        let mut batch = Batch::default();
        batch.write_packet(&[0x45, 1, 2]);
        batch.write_packet(&[0x45, 3]);
        assert_eq!(batch.packet_count(), 2);
        assert_eq!(&batch.packets_mut()[0][HEADROOM..], &[0x45, 1, 2]);
        assert_eq!(batch.packets_mut()[1].len(), HEADROOM + 2);
        let first = batch.packets_mut()[0].as_ptr();
        batch.clear();
        assert_eq!(batch.packet_count(), 0);
        batch.write_packet(&[0x45, 9]);
        assert_eq!(batch.packets_mut()[0].as_ptr(), first);
        assert_eq!(&batch.packets_mut()[0][HEADROOM..], &[0x45, 9]);
    }
}

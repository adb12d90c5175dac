//! The WireGuard UDP sockets: one IPv4 and one IPv6 socket on the same port, each with
//! quinn-udp's state for batched receive (`recvmmsg`, UDP GRO) and segmented send
//! (`UDP_SEGMENT`), which turns GSO off by itself where the kernel refuses it.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Kernel buffer size we ask for; bursts at line rate overflow the small defaults. With
/// 4 MiB, four TCP streams at 5 Gbit/s overflowed the receiver's buffer (UdpRcvbufErrors,
/// then TCP retransmits); 16 MiB did not. Memory is only used while datagrams wait.
const SOCKET_BUFFER: usize = 16 << 20;

/// How long a send waits for room in a full socket buffer before the datagram is
/// dropped (as a lost packet, which WireGuard tolerates).
const SEND_WAIT_MS: libc::c_int = 1000;

/// A port that could not be bound; the io error's kind tells "in use" apart.
#[derive(Debug, thiserror::Error)]
#[error("binding UDP port {port} ({family}): {source}")]
pub struct BindError {
    pub port: u16,
    pub family: &'static str,
    pub source: io::Error,
}

impl BindError {
    pub fn in_use(&self) -> bool {
        self.source.kind() == io::ErrorKind::AddrInUse
    }
}

/// One bound socket and its offload state.
pub struct Udp {
    pub socket: UdpSocket,
    state: UdpSocketState,
}

pub struct Sockets {
    pub v4: Udp,
    /// Absent when the host has IPv6 disabled.
    pub v6: Option<Udp>,
    pub port: u16,
    /// Shared with the writer thread, so a new mark is set in place.
    fwmark: AtomicU32,
}

impl Sockets {
    /// Binds both families on `port` (0 picks a free port that both families get).
    pub fn bind(port: u16, fwmark: u32) -> Result<Sockets, BindError> {
        let failed = |family, source| BindError {
            port,
            family,
            source,
        };
        let mut last_err = None;
        // With port 0 the v4 socket picks a port that may be taken for v6; retry a few times.
        for _ in 0..10 {
            let v4 = new_socket(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), fwmark)
                .map_err(|e| failed("IPv4", e))?;
            let bound = v4
                .socket
                .local_addr()
                .map_err(|e| failed("IPv4", e))?
                .port();
            match new_socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, bound)), fwmark) {
                Ok(v6) => {
                    return Ok(Sockets {
                        v4,
                        v6: Some(v6),
                        port: bound,
                        fwmark: AtomicU32::new(fwmark),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && port == 0 => last_err = Some(e),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(failed("IPv6", e)),
                // No IPv6 on this host: run IPv4-only rather than not at all.
                Err(e) => {
                    tracing::warn!(error = %e, "IPv6 UDP socket unavailable; IPv4 only");
                    return Ok(Sockets {
                        v4,
                        v6: None,
                        port: bound,
                        fwmark: AtomicU32::new(fwmark),
                    });
                }
            }
        }
        let source = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse));
        Err(failed("no port free for both IPv4 and IPv6", source))
    }

    pub fn for_dest(&self, to: &SocketAddr) -> Option<&Udp> {
        match to {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Segments one send may carry on either socket.
    pub fn max_segments(&self) -> usize {
        let v6 = self.v6.as_ref().map_or(usize::MAX, Udp::max_segments);
        self.v4.max_segments().min(v6)
    }

    pub fn fwmark(&self) -> u32 {
        self.fwmark.load(Ordering::Relaxed)
    }

    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.v4.socket).set_mark(mark)?;
        if let Some(v6) = &self.v6 {
            socket2::SockRef::from(&v6.socket).set_mark(mark)?;
        }
        self.fwmark.store(mark, Ordering::Relaxed);
        Ok(())
    }
}

fn new_socket(addr: SocketAddr, fwmark: u32) -> io::Result<Udp> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    grow_buffers(&socket);
    if fwmark != 0 {
        socket.set_mark(fwmark)?;
    }
    socket.bind(&addr.into())?;
    let state = UdpSocketState::new((&socket).into())?;
    allow_fragments(&socket, addr.is_ipv6());
    Ok(Udp {
        socket: UdpSocket::from_std(socket.into())?,
        state,
    })
}

/// Asks for large kernel buffers: bursts at line rate overflow the small defaults. The
/// forcing variants pass `net.core.rmem_max`/`wmem_max` but need CAP_NET_ADMIN; without
/// it the plain ones get what the limits allow. A smaller buffer costs throughput only.
fn grow_buffers(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER as libc::c_int).is_err() {
            let _ = set_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER as libc::c_int);
        }
    }
}

/// quinn-udp sets the don't-fragment bit for QUIC's path MTU probing. A WireGuard
/// datagram that is too big for the path must still arrive, fragmented, as with the
/// kernel's WireGuard, so the bit is cleared again. Best effort.
fn allow_fragments(socket: &Socket, v6: bool) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let _ = if v6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        )
    } else {
        set_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
    };
}

fn set_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Udp {
    /// Segments one send may carry (1 once the kernel refused GSO on this socket).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receives up to `bufs.len()` datagrams (each possibly several coalesced by GRO,
    /// `meta.stride` bytes apart) without waiting.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.socket.try_io(Interest::READABLE, || {
            self.state.recv((&self.socket).into(), bufs, meta)
        })
    }

    /// Sends `bytes` to `to` as datagrams of `segment` bytes (one datagram when `None`),
    /// waiting while the socket buffer is full. When the kernel refuses segmentation the
    /// segments go out one by one, so nothing the engine produced is dropped for it.
    /// Blocking: called on the writer thread.
    pub fn send_blocking(&self, to: SocketAddr, bytes: &[u8], segment: Option<usize>) {
        match self.send_one(to, bytes, segment) {
            Err(e) if segment.is_some() && refused_gso(&e) => {
                tracing::info!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                for part in bytes.chunks(segment.unwrap_or(bytes.len()).max(1)) {
                    if let Err(e) = self.send_one(to, part, None) {
                        tracing::debug!(error = %e, to = %to, "UDP send failed");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, to = %to, "UDP send failed"),
            Ok(()) => {}
        }
    }

    fn send_one(&self, to: SocketAddr, bytes: &[u8], segment: Option<usize>) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            match self.state.try_send((&self.socket).into(), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                other => return other,
            }
        }
    }

    /// Waits (bounded) until the socket buffer has room again.
    fn wait_writable(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count passed alongside.
        match unsafe { libc::poll(&mut poll, 1, SEND_WAIT_MS) } {
            0 => Err(io::Error::from(io::ErrorKind::TimedOut)),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            _ => Ok(()),
        }
    }
}

/// The errors Linux gives for a GSO send the device or path cannot segment.
fn refused_gso(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
}

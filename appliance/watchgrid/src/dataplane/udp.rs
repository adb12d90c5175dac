//! The WireGuard UDP sockets: one IPv4 and one IPv6 socket on the same port.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;

/// Kernel buffer size we ask for; bursts at line rate overflow the small defaults.
const SOCKET_BUFFER: usize = 4 << 20;

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

pub struct Sockets {
    pub v4: UdpSocket,
    /// Absent when the host has IPv6 disabled.
    pub v6: Option<UdpSocket>,
    pub port: u16,
    pub fwmark: u32,
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
            let bound = v4.local_addr().map_err(|e| failed("IPv4", e))?.port();
            match new_socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, bound)), fwmark) {
                Ok(v6) => {
                    return Ok(Sockets {
                        v4,
                        v6: Some(v6),
                        port: bound,
                        fwmark,
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
                        fwmark,
                    });
                }
            }
        }
        let source = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse));
        Err(failed("no port free for both IPv4 and IPv6", source))
    }

    pub fn for_dest(&self, to: &SocketAddr) -> Option<&UdpSocket> {
        match to {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    pub fn set_fwmark(&mut self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.v4).set_mark(mark)?;
        if let Some(v6) = &self.v6 {
            socket2::SockRef::from(v6).set_mark(mark)?;
        }
        self.fwmark = mark;
        Ok(())
    }
}

fn new_socket(addr: SocketAddr, fwmark: u32) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Best effort: a smaller buffer costs throughput, not correctness.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    if fwmark != 0 {
        socket.set_mark(fwmark)?;
    }
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

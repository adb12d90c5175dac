//! What clients can hold of a listener: a cap on connections in all and per client (an
//! IPv4 address or an IPv6 /64, as the rate limits count them), and a cap on TLS
//! handshakes in progress. Without them a slow-loris client opens sockets until the
//! process runs out of file descriptors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Time for a request's head to arrive, counted from when the connection is ready for
/// it: a slow-loris client is cut off, and so is an idle keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Time for a request to be answered, body upload included. Longer than the longest
/// legitimate wait (an agent's command long poll).
pub const REQUEST_TIMEOUT: Duration =
    Duration::from_secs(watchgrid_api::routes::commands::MAX_WAIT_S + 30);

/// The caps and timeouts of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_client: usize,
    pub handshakes: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
}

impl Caps {
    /// The HTTPS listener. Every agent holds one connection (its long poll), and a hub
    /// serves fleets of 20,000 agents: the unit's `LimitNOFILE` is 65536 and half of it
    /// stays for the dataplane, the store and the log store ([`Caps::https`] lowers the
    /// total under a smaller limit). Per client it is generous enough for a NAT'd office
    /// of browsers and agents.
    pub const HTTPS: Caps = Caps {
        total: 32_768,
        per_client: 256,
        handshakes: 128,
        header_read_timeout: HEADER_READ_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
    };
    /// [`Caps::HTTPS`] within this process's open-file limit: at most half of it, so a
    /// flood of connections cannot starve the rest of the daemon of descriptors.
    pub fn https() -> Caps {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `lim`.
        let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        let half = if known {
            usize::try_from(lim.rlim_cur / 2).unwrap_or(usize::MAX)
        } else {
            Caps::HTTPS.total
        };
        Caps {
            total: Caps::HTTPS.total.min(half.max(64)),
            ..Caps::HTTPS
        }
    }

    /// The port-80 redirect and the metrics listener: short requests, few clients.
    pub const PLAIN: Caps = Caps {
        total: 256,
        per_client: 16,
        handshakes: 0,
        header_read_timeout: HEADER_READ_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
    };
}

pub struct ConnectionLimits {
    caps: Caps,
    total: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was closed at once.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the listener holds its maximum of {0} connections")]
    Full(usize),
    #[error("this client holds its maximum of {0} connections")]
    ClientFull(usize),
}

/// One admitted connection; its slots are given back when it is dropped.
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl ConnectionLimits {
    pub fn new(caps: Caps) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            caps,
            total: Arc::new(Semaphore::new(caps.total)),
            handshakes: Arc::new(Semaphore::new(caps.handshakes)),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Admits a connection from `peer`, or says which cap it hit.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refused> {
        let slot = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full(self.caps.total))?;
        let client = watchgrid_api::limits::bucket_of(peer);
        let mut held = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(client).or_insert(0);
        if *count >= self.caps.per_client {
            return Err(Refused::ClientFull(self.caps.per_client));
        }
        *count += 1;
        Ok(Admitted {
            limits: self.clone(),
            client,
            _slot: slot,
        })
    }

    /// A slot for one TLS handshake, if one is free: a flood of handshakes that never
    /// finish waits out its timeout without starving the ones that do.
    pub fn handshake(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }

    /// Connections held by `peer`'s client.
    #[cfg(test)]
    pub fn held_by(&self, peer: IpAddr) -> usize {
        let held = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&watchgrid_api::limits::bucket_of(peer))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self
            .limits
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            // No entry outlives its connections, so the map is bounded by them.
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_client_cap_counts_an_ipv6_64_as_one_client_and_frees_on_drop() {
        let limits = ConnectionLimits::new(Caps {
            total: 10,
            per_client: 2,
            ..Caps::PLAIN
        });
        let a = limits.admit(ip("2001:db8::1")).expect("first");
        let _b = limits.admit(ip("2001:db8::2")).expect("second");
        assert_eq!(
            limits.admit(ip("2001:db8::3")).err(),
            Some(Refused::ClientFull(2))
        );
        // Another client is not affected.
        let _c = limits.admit(ip("2001:db8:1::1")).expect("other /64");
        drop(a);
        let _d = limits.admit(ip("2001:db8::3")).expect("a slot came back");
        assert_eq!(limits.held_by(ip("2001:db8::9")), 2);
    }

    #[test]
    fn the_total_cap_holds_across_clients_and_the_map_empties() {
        let limits = ConnectionLimits::new(Caps {
            total: 2,
            per_client: 5,
            handshakes: 1,
            ..Caps::PLAIN
        });
        let a = limits.admit(ip("192.0.2.1")).expect("a");
        let b = limits.admit(ip("192.0.2.2")).expect("b");
        assert_eq!(limits.admit(ip("192.0.2.3")).err(), Some(Refused::Full(2)));
        drop((a, b));
        assert!(limits.per_client.lock().expect("lock").is_empty());
        let h = limits.handshake().expect("one handshake slot");
        assert!(limits.handshake().is_none());
        drop(h);
        assert!(limits.handshake().is_some());
    }
}

//! Watchgrid's WireGuard engine, without IO.
//!
//! [`Engine`] is one WireGuard interface: a private key, a peer table keyed by public
//! key, an allowed-IPs table ([`AllowedIps`]) for cryptokey routing in both
//! directions, and boringtun's noise state machine per peer. It takes datagrams,
//! tunnel packets and timer ticks, each with the current time, and writes its results
//! to an [`Output`]. Sockets, the TUN device and the clock belong to the caller.
//!
//! Properties the engine keeps:
//! - incoming datagrams find their peer by session index (or, for handshake
//!   initiations, by the initiator's static key), never by scanning peers;
//! - decrypted packets are dropped unless their inner source is in the sending
//!   peer's allowed IPs;
//! - a peer's endpoint follows the source of its latest authenticated datagram;
//! - handshake messages are capped per source, then device-wide with cookie replies
//!   (boringtun's `RateLimiter`), so a flood cannot starve established peers;
//! - peers and the private key change at runtime without touching unrelated sessions.
//!
//! [`uapi`] is WireGuard's configuration protocol (the text `wg(8)` speaks on the UAPI
//! socket), parsed and rendered without IO so that it can be tested and fuzzed alone.

pub mod allowed_ips;
pub mod engine;
pub mod keys;
mod source_limit;
pub mod uapi;

pub use allowed_ips::{AllowedIps, IpPrefix, PrefixError};
pub use engine::{DropCounters, Engine, EngineError, Output, PeerStatus, PeerUpdate, TICK};
pub use keys::{KeyError, PublicKey, Secret};

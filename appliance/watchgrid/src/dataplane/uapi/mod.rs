//! WireGuard's cross-platform UAPI: the protocol and its Unix-socket server.

pub mod protocol;
pub mod server;

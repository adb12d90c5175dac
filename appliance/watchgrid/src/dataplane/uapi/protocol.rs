//! The cross-platform WireGuard configuration protocol (https://www.wireguard.com/xplatform/)
//! as the dataplane answers it.
//!
//! The text itself (parsing `set=1` bodies, rendering `get=1` replies) is pure and lives in
//! [`watchgrid_core::uapi`], where it is tested and fuzzed on its own; this module adds what
//! only the running dataplane can say: that a well-formed request was refused, and with
//! which errno.

use crate::dataplane::{ConfigError, DeviceConfig};
pub use watchgrid_core::uapi::{render_get, ParseError, EINVAL};
use watchgrid_core::uapi::{EADDRINUSE, EIO};

/// A request that could not be parsed or applied.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The request text is malformed; nothing was applied.
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// A well-formed request the dataplane could not apply; nothing was applied.
    #[error(transparent)]
    Refused(#[from] ConfigError),
}

impl UapiError {
    /// The errno `wg` shows for this error, as wireguard-go chooses it.
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Malformed(e) => e.errno(),
            UapiError::Refused(ConfigError::Engine(_)) => EINVAL,
            UapiError::Refused(ConfigError::Bind(e)) if e.in_use() => EADDRINUSE,
            UapiError::Refused(ConfigError::Bind(_) | ConfigError::Fwmark(_)) => EIO,
        }
    }
}

/// Parses the lines of a `set=1` request (without the `set=1` line and the blank line).
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<DeviceConfig, UapiError> {
    Ok(watchgrid_core::uapi::parse_set(lines)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchgrid_core::uapi::EPROTO;

    const K2: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";

    #[test]
    fn errno_follows_the_error_not_its_wording() {
        use crate::dataplane::udp::BindError;
        use std::io::{Error, ErrorKind};
        let bind = |kind: ErrorKind| {
            UapiError::from(ConfigError::Bind(BindError {
                port: 51820,
                family: "IPv4",
                // Wording that mentions "in use" must not decide the errno.
                source: Error::new(kind, "address in use, or so it says"),
            }))
        };
        assert_eq!(bind(ErrorKind::AddrInUse).errno(), EADDRINUSE);
        assert_eq!(bind(ErrorKind::PermissionDenied).errno(), EIO);
        let fwmark = UapiError::from(ConfigError::Fwmark(Error::from(ErrorKind::AddrInUse)));
        assert_eq!(fwmark.errno(), EIO);
        let own = ConfigError::Engine(watchgrid_core::EngineError::OwnPublicKey);
        assert_eq!(UapiError::from(own).errno(), EINVAL);
        assert_eq!(
            UapiError::from(ParseError::UnknownOperation(3)).errno(),
            EPROTO
        );
    }

    /// The binary's parser is the core's, with its errors and messages unchanged.
    #[test]
    fn parse_errors_keep_their_errno_and_message() {
        let pk = format!("public_key={K2}");
        let err = parse_set([pk.as_str(), "protocol_version=2"]).expect_err("version 2");
        assert_eq!(err.errno(), EINVAL);
        assert_eq!(err.to_string(), "unsupported protocol_version");
        let req = parse_set([pk.as_str(), "endpoint=192.0.2.1:51820"]).expect("valid");
        assert_eq!(req.peers.len(), 1);
    }
}

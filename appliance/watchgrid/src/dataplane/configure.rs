//! Applying a [`DeviceConfig`] atomically: everything that can fail (binding a new
//! port, setting the mark, checking peer keys) happens before the first change.

use super::command::{ConfigError, DeviceConfig};
use super::udp::Sockets;
use super::Dataplane;
use std::time::Instant;
use watchgrid_core::EngineError;

impl Dataplane {
    pub fn configure(&mut self, config: DeviceConfig) -> Result<(), ConfigError> {
        let now = Instant::now();
        let new_sockets = self.rebind(&config)?;
        let own_key = match &config.private_key {
            Some(Some(k)) => Some(k.public_key()),
            Some(None) => None,
            None => self.engine.public_key(),
        };
        if let Some(own) = own_key {
            if config
                .peers
                .iter()
                .any(|p| !p.remove && p.public_key == own)
            {
                return Err(EngineError::OwnPublicKey.into());
            }
        }
        if new_sockets.is_none() {
            if let Some(mark) = config.fwmark.filter(|m| *m != self.sockets.fwmark()) {
                self.sockets.set_fwmark(mark).map_err(ConfigError::Fwmark)?;
            }
        }
        // From here on nothing fails for a request the parser accepted.
        if let Some(s) = new_sockets {
            self.sockets = std::sync::Arc::new(s);
        }
        match config.private_key {
            Some(Some(k)) => self.engine.set_private_key(now, k)?,
            Some(None) => self.engine.clear_private_key(),
            None => {}
        }
        if config.replace_peers {
            self.engine.clear_peers();
        }
        for p in config.peers {
            if p.remove {
                let _ = self.engine.remove_peer(&p.public_key);
                continue;
            }
            if p.update_only && !self.engine.has_peer(&p.public_key) {
                continue;
            }
            self.engine
                .upsert_peer(now, p.public_key, p.update, &mut self.batch)?;
        }
        self.note_peer_count();
        Ok(())
    }

    /// New sockets when the config asks for another port (or a fresh one with 0).
    fn rebind(&self, config: &DeviceConfig) -> Result<Option<Sockets>, ConfigError> {
        match config.listen_port {
            Some(port) if port != self.sockets.port || port == 0 => {
                let mark = config.fwmark.unwrap_or(self.sockets.fwmark());
                Ok(Some(Sockets::bind(port, mark)?))
            }
            _ => Ok(None),
        }
    }
}

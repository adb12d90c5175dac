//! Wakes an agent's long poll when a command is queued for it. One `Notify` per device
//! that is polling or has been queued for; a waiter registers before it looks at the
//! store, so a command queued in between is never missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub struct CommandBell {
    devices: Mutex<HashMap<String, Arc<Notify>>>,
    waiting: Arc<AtomicUsize>,
}

/// Counts one long poll as open for as long as it lives.
pub struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CommandBell {
    /// Marks a long poll open until the guard is dropped.
    pub fn waiting(&self) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.waiting.clone())
    }

    /// Long polls open now.
    pub fn open_polls(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The device's bell; create the `notified()` future and `enable` it before
    /// checking the store.
    pub fn for_device(&self, device_id: &str) -> Arc<Notify> {
        self.lock()
            .entry(device_id.to_string())
            .or_default()
            .clone()
    }

    /// Wakes every poll the device has open.
    pub fn ring(&self, device_id: &str) {
        if let Some(bell) = self.lock().get(device_id) {
            bell.notify_waiters();
        }
    }

    /// Drops a deleted device's bell.
    pub fn forget(&self, device_id: &str) {
        self.lock().remove(device_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // The map holds no invariant a panicking writer could break halfway.
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ring_between_registering_and_waiting_is_not_lost() {
        let bell = CommandBell::default();
        let notify = bell.for_device("dev-1");
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The store check would happen here; the command is queued meanwhile.
        bell.ring("dev-1");
        tokio::time::timeout(std::time::Duration::from_secs(5), notified)
            .await
            .expect("the ring reached the registered waiter");
    }
}

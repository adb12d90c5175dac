//! Copies of scheduled backups off the box (SFTP): the settings, the appliance's key,
//! and each copy's outcome in the store, the metric and an alert.

use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use rand_core::{OsRng, RngCore};
use watchgrid_offsite::{ClientKey, OffsiteError, PinnedHostKey, Target};
use watchgrid_store::{OffsiteKey, OffsiteSettings, OffsiteStatus, BACKUP_KEY};

/// The settings as the operator gives them, checked into what the store keeps.
pub fn checked_settings(
    host: String,
    port: u16,
    user: String,
    dir: String,
    host_key: &str,
) -> Result<OffsiteSettings, ApiError> {
    let pin = PinnedHostKey::parse(host_key).map_err(invalid)?;
    let settings = OffsiteSettings {
        host: host.trim().to_string(),
        port,
        user: user.trim().to_string(),
        dir: dir.trim().to_string(),
        host_key: pin.to_openssh(),
        updated_at: unix_now(),
    };
    target(&settings)?.check().map_err(invalid)?;
    Ok(settings)
}

fn invalid(e: OffsiteError) -> ApiError {
    ApiError::Invalid(e.to_string())
}

fn target(s: &OffsiteSettings) -> Result<Target, ApiError> {
    Ok(Target {
        host: s.host.clone(),
        port: s.port,
        user: s.user.clone(),
        dir: s.dir.clone(),
        host_key: PinnedHostKey::parse(&s.host_key).map_err(invalid)?,
    })
}

/// The appliance's key, created the first time it is asked for.
pub fn client_key(state: &AppState) -> Result<ClientKey, ApiError> {
    if let Some(stored) = state.store.backup_offsite_key.get(BACKUP_KEY)? {
        return ClientKey::from_openssh(stored.private.expose())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    new_client_key(state)
}

/// Replaces the appliance's key with a new one (the old one stops working once the
/// server's authorized_keys drops it).
pub fn new_client_key(state: &AppState) -> Result<ClientKey, ApiError> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let key = ClientKey::from_seed(&seed, "watchgrid-backup");
    let private = key
        .to_openssh()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state.store.backup_offsite_key.put(
        BACKUP_KEY,
        &OffsiteKey {
            private: private.into(),
            created_at: unix_now(),
        },
    )?;
    Ok(key)
}

/// The configured target and key, or None when copies are off.
fn configured(state: &AppState) -> Result<Option<(Target, ClientKey)>, ApiError> {
    let Some(settings) = state.store.backup_offsite.get(BACKUP_KEY)? else {
        return Ok(None);
    };
    Ok(Some((target(&settings)?, client_key(state)?)))
}

/// Signs in and writes a probe file with the stored settings.
pub async fn test(state: &AppState) -> Result<String, ApiError> {
    let (target, key) =
        configured(state)?.ok_or_else(|| ApiError::Invalid("no SFTP target is set".into()))?;
    watchgrid_offsite::probe(&target, &key)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// Copies the stored backup `name` off the box when copies are on, and records what
/// happened. None when they are off.
pub async fn copy(state: &AppState, name: &str) -> Option<Result<String, String>> {
    let outcome = match configured(state) {
        Ok(None) => return None,
        Ok(Some((target, key))) => upload(state, &target, &key, name).await,
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = record(state, unix_now(), &outcome) {
        tracing::warn!(error = %e, "recording the off-box copy's outcome");
    }
    Some(outcome)
}

async fn upload(
    state: &AppState,
    target: &Target,
    key: &ClientKey,
    name: &str,
) -> Result<String, String> {
    let dir = state
        .backup
        .get()
        .map(|s| s.dir())
        .ok_or("backups are not available here")?;
    let path = dir.join(name);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let done = watchgrid_offsite::upload(target, key, name, &bytes)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(path = %done.path, bytes = done.bytes, server = %target.addr(), "backup copied off the box");
    Ok(format!("{}:{}", target.addr(), done.path))
}

fn record(state: &AppState, at: u64, outcome: &Result<String, String>) -> Result<(), ApiError> {
    let stored = state.store.backup_status.update(BACKUP_KEY, |cur| {
        let mut s = cur.unwrap_or_default();
        let o: &mut OffsiteStatus = &mut s.offsite;
        o.last_attempt_at = Some(at);
        match outcome {
            Ok(copy) => {
                o.last_success_at = Some(at);
                o.last_error = None;
                o.last_copy = Some(copy.clone());
            }
            Err(e) => o.last_error = Some(e.clone()),
        }
        Ok::<_, ()>(Some(s))
    })?;
    if let Ok(Some(s)) = &stored {
        crate::backups::publish(state, s);
    }
    if let Err(error) = outcome {
        crate::alerts::raise(
            state,
            vec![crate::alerts::NewAlert {
                kind: "backup_offsite_failed",
                device_id: String::new(),
                summary: format!("copying the backup off the box failed: {error}"),
                details: serde_json::json!({ "at": at, "error": error }),
            }],
        )?;
    }
    Ok(())
}

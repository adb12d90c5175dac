//! Updates of the appliance image from the control plane's side. The daemon is
//! unprivileged: it takes the upload, verifies it (so a bad bundle is refused at once,
//! with the reason), stages it in the data dir and asks for the install; a root helper
//! started by that request (`watchgrid update apply-staged`) verifies it again and
//! writes the inactive slot. See the watchgrid-update crate for the files they share.

use crate::error::ApiError;
use crate::state::AppState;
use std::path::{Path, PathBuf};
use watchgrid_update::bundle::VerifiedBundle;
use watchgrid_update::keys::TrustedKeys;
use watchgrid_update::slots::Slot;
use watchgrid_update::state::{self, Phase, Progress, Record, Request};
use watchgrid_update::UpdateError;

/// Seconds after which an install in progress that reported nothing is taken as dead.
const STALE_PROGRESS_S: u64 = 600;

/// The largest bundle taken: two root slots' worth.
pub const MAX_BUNDLE: u64 = 768 << 20;

/// Where and what this appliance updates.
pub struct UpdateSite {
    /// `DATA_DIR/update`.
    pub dir: PathBuf,
    /// The release keys the image trusts.
    pub trusted_keys: PathBuf,
    pub running_version: watchgrid_update::semver::Version,
    /// `None` outside the image (no root slot on the command line).
    pub running_slot: Option<Slot>,
}

fn site(state: &AppState) -> Result<&UpdateSite, ApiError> {
    state
        .update
        .get()
        .map(|s| s.as_ref())
        .ok_or_else(|| ApiError::Unavailable("updates are not set up in this daemon".into()))
}

/// The last install's outcome in one line, for `/healthz`.
pub fn last_summary(state: &AppState) -> Option<String> {
    let site = state.update.get()?;
    state::read::<Record>(&site.dir, state::RECORD)
        .ok()
        .flatten()
        .map(|r| r.summary())
}

/// What `GET /api/update` shows.
pub(crate) struct Status {
    pub running_version: String,
    pub running_slot: Option<Slot>,
    pub progress: Option<Progress>,
    pub last: Option<Record>,
    /// An install has been asked for and has not finished.
    pub busy: bool,
}

pub(crate) fn status(state: &AppState) -> Result<Status, ApiError> {
    let site = site(state)?;
    let progress: Option<Progress> = state::read(&site.dir, state::PROGRESS).map_err(internal)?;
    // The helper reports at least every 5% written; one silent for longer than this has
    // died (a power cut mid-install), and a new upload may start over.
    let live = |p: &Progress| state::now().saturating_sub(p.at) < STALE_PROGRESS_S;
    let busy = site.dir.join(state::REQUEST).exists()
        || site.dir.join(state::TAKEN).exists()
        || progress
            .as_ref()
            .is_some_and(|p| matches!(p.phase, Phase::Verifying | Phase::Writing) && live(p));
    Ok(Status {
        running_version: site.running_version.to_string(),
        running_slot: site.running_slot,
        last: state::read(&site.dir, state::RECORD).map_err(internal)?,
        progress,
        busy,
    })
}

fn internal(e: UpdateError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// What a refused bundle tells the uploader: everything about the bundle itself is the
/// client's to fix (422); an image that trusts no key cannot take updates (503); the
/// appliance's own trouble is a 500.
fn refused(e: UpdateError) -> ApiError {
    match e {
        UpdateError::Io { .. } => ApiError::Internal(e.to_string()),
        UpdateError::NoTrustedKeys(_) => ApiError::Unavailable(e.to_string()),
        e => ApiError::Invalid(e.to_string()),
    }
}

/// The checked upload, staged and asked for.
pub(crate) struct Staged {
    pub version: String,
    pub key_id: String,
}

/// Verifies the bundle written to `upload` and, if it is one to install, moves it to the
/// staged name and writes the install request. A refused upload is removed.
pub(crate) fn stage(
    state: &AppState,
    upload: &Path,
    request: &Request,
) -> Result<Staged, ApiError> {
    let site = site(state)?;
    let checked = (|| {
        let trusted = TrustedKeys::load(&site.trusted_keys).map_err(refused)?;
        let bundle = VerifiedBundle::open(upload, &trusted).map_err(refused)?;
        watchgrid_update::install::check_version(
            &bundle,
            &site.running_version,
            request.allow_downgrade,
        )
        .map_err(refused)?;
        Ok(Staged {
            version: bundle.version.to_string(),
            key_id: bundle.key_id,
        })
    })();
    let staged = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(upload);
            return Err(e);
        }
    };
    let target = site.dir.join(state::STAGED);
    std::fs::rename(upload, &target)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", target.display())))?;
    state::write(&site.dir, state::REQUEST, request).map_err(internal)?;
    Ok(staged)
}

/// Where an upload is written while it arrives; only one at a time.
pub(crate) fn upload_path(state: &AppState) -> Result<PathBuf, ApiError> {
    let site = site(state)?;
    std::fs::create_dir_all(&site.dir)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", site.dir.display())))?;
    Ok(site.dir.join("upload.partial"))
}

/// Where the last audited outcome is remembered, so each is audited once.
const AUDITED: &str = "audited";

/// The boot check decided the last update: audit the outcome and, when the new version
/// was kept, run the store migrations held back during its trial.
pub fn decided(state: &AppState) {
    audit_outcome(state);
    let good = state
        .update
        .get()
        .and_then(|site| {
            state::read::<Record>(&site.dir, state::RECORD)
                .ok()
                .flatten()
        })
        .is_some_and(|r| r.outcome == state::Outcome::Good);
    if good && state.store.held_migrations() > 0 {
        match state.store.migrate_held() {
            Ok(done) => tracing::info!(
                schema = done.at,
                "update marked good: held-back migrations ran"
            ),
            Err(e) => {
                tracing::error!(error = %e, "running the migrations held back during the update's trial")
            }
        }
    }
}

/// Audits the last update's outcome once it is decided (at start, and when the boot
/// check says it decided); errors are logged, not raised: the outcome stays on record.
pub fn audit_outcome(state: &AppState) {
    let Some(site) = state.update.get() else {
        return;
    };
    let Ok(Some(record)) = state::read::<Record>(&site.dir, state::RECORD) else {
        return;
    };
    let action = match record.outcome {
        state::Outcome::Pending => return,
        state::Outcome::Good => "update.good",
        state::Outcome::RolledBack => "update.rolled_back",
    };
    let mark = format!("{}:{action}", record.applied_at);
    let marker = site.dir.join(AUDITED);
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == mark) {
        return;
    }
    let summary = record.summary();
    if record.outcome == state::Outcome::RolledBack {
        tracing::warn!(outcome = %summary, "update");
    }
    let audited = crate::routes::audit(state, "system", action, &summary)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            watchgrid_store::durable::write_file(&marker, mark.as_bytes(), 0o600)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = audited {
        tracing::warn!(error = %e, "auditing the update's outcome");
    }
}

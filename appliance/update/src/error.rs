/// Why an update could not be built, verified or installed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("not a watchgrid update bundle: {0}")]
    NotABundle(String),
    #[error("the bundle's signature does not verify with any key this appliance trusts ({trusted} trusted); it was not made by this appliance's release key, or it was altered")]
    BadSignature { trusted: usize },
    #[error("no update signing keys are trusted (looked in {0}); the image was built without one")]
    NoTrustedKeys(String),
    #[error("the bundle's manifest is invalid: {0}")]
    BadManifest(String),
    #[error("the bundle is for {found}; this appliance is {ours}")]
    WrongArch { found: String, ours: String },
    #[error("payload {name} does not match the signed manifest ({detail}); the bundle is damaged: download it again")]
    Damaged { name: String, detail: String },
    #[error("the bundle is version {bundle}, older than the running {running}; pass allow_downgrade to install it anyway")]
    Downgrade { bundle: String, running: String },
    #[error("cannot tell which root slot is running: the kernel command line names {0}, which is neither slot of this bundle")]
    UnknownSlot(String),
    #[error("root slot {slot} ({size} bytes) cannot hold the bundle's root file system ({needed} bytes)")]
    SlotTooSmall { slot: char, size: u64, needed: u64 },
    #[error("{what} changed while it was written ({detail}); nothing boots from it: apply the bundle again")]
    Changed { what: String, detail: String },
    #[error("an invalid signing key file {path}: {reason}")]
    BadKey { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl UpdateError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> UpdateError + '_ {
        move |source| UpdateError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

//! The CA keys in their directory: loaded at start, created when there is none, rotated
//! and retired; and signing with the newest.

use crate::request::{CertKind, CertRequest, Issued};
use crate::{krl, Revoked, SshCaError};
use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

const PREFIX: &str = "ca-";
const SUFFIX: &str = ".key";

struct CaKey {
    created: u64,
    key: PrivateKey,
}

/// One trusted CA key, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaKeyView {
    /// `ssh-ed25519 AAAA… watchgrid-ssh-ca-CREATED`
    pub public_key: String,
    pub fingerprint: String,
    pub created: u64,
    /// The newest key, the one that signs.
    pub signing: bool,
}

/// The CA: its keys, oldest first (the last one signs).
pub struct SshCa {
    dir: PathBuf,
    keys: RwLock<Vec<CaKey>>,
}

impl SshCa {
    /// Loads every CA key in `dir`, creating the directory and a first key when there is
    /// none (setup, or an appliance from before the CA).
    pub fn open_or_create(dir: &Path, now: u64) -> Result<SshCa, SshCaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(SshCaError::io(dir))?;
        let mut keys = load(dir)?;
        if keys.is_empty() {
            keys.push(create(dir, now)?);
        }
        Ok(SshCa {
            dir: dir.to_path_buf(),
            keys: RwLock::new(keys),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<CaKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<CaKey>> {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every trusted key, oldest first.
    pub fn keys(&self) -> Vec<CaKeyView> {
        let keys = self.read();
        let last = keys.len().saturating_sub(1);
        keys.iter()
            .enumerate()
            .map(|(i, k)| CaKeyView {
                public_key: k.key.public_key().to_openssh().unwrap_or_default(),
                fingerprint: k.key.fingerprint(HashAlg::Sha256).to_string(),
                created: k.created,
                signing: i == last,
            })
            .collect()
    }

    /// `ssh-ca.pub`: one line per trusted key, for `TrustedUserCAKeys`.
    pub fn authorized_lines(&self) -> String {
        self.keys()
            .iter()
            .map(|k| format!("{}\n", k.public_key))
            .collect()
    }

    /// `known_hosts` lines trusting host certificates from every trusted key.
    pub fn known_hosts_lines(&self) -> String {
        self.keys()
            .iter()
            .map(|k| format!("@cert-authority * {}\n", k.public_key))
            .collect()
    }

    /// Introduces a new signing key; the old ones stay trusted until retired.
    pub fn rotate(&self, now: u64) -> Result<CaKeyView, SshCaError> {
        let mut keys = self.write();
        if keys.iter().any(|k| k.created >= now) {
            return Err(SshCaError::Conflict(
                "a CA key was created this second; try again".into(),
            ));
        }
        keys.push(create(&self.dir, now)?);
        drop(keys);
        self.keys()
            .pop()
            .ok_or_else(|| SshCaError::Conflict("no CA key after the rotation".into()))
    }

    /// Stops trusting an old key (never the signing one); its file is removed.
    pub fn retire(&self, fingerprint: &str) -> Result<(), SshCaError> {
        let mut keys = self.write();
        let at = keys
            .iter()
            .position(|k| k.key.fingerprint(HashAlg::Sha256).to_string() == fingerprint)
            .ok_or_else(|| SshCaError::Invalid(format!("no CA key {fingerprint}")))?;
        if at + 1 == keys.len() {
            return Err(SshCaError::Conflict(
                "that key signs; rotate first, then retire the old one".into(),
            ));
        }
        let path = key_path(&self.dir, keys[at].created);
        fs::remove_file(&path).map_err(SshCaError::io(&path))?;
        keys.remove(at);
        Ok(())
    }

    /// Signs a checked request with the newest key.
    pub fn sign(&self, req: &CertRequest, now: u64) -> Result<Issued, SshCaError> {
        let subject = req.check(now)?;
        let keys = self.read();
        let ca = keys
            .last()
            .ok_or_else(|| SshCaError::Conflict("the CA has no key".into()))?;
        let mut rng = rand_core::OsRng;
        let mut b = Builder::new_with_random_nonce(
            &mut rng,
            subject.key_data().clone(),
            req.valid_after,
            req.valid_before,
        )?;
        b.serial(req.serial)?;
        b.key_id(req.key_id.clone())?;
        b.cert_type(match req.kind {
            CertKind::User => CertType::User,
            CertKind::Host => CertType::Host,
        })?;
        for p in &req.principals {
            b.valid_principal(p.clone())?;
        }
        if req.kind == CertKind::User {
            // What `ssh-keygen -s` grants a user certificate by default.
            for ext in [
                "permit-X11-forwarding",
                "permit-agent-forwarding",
                "permit-port-forwarding",
                "permit-pty",
                "permit-user-rc",
            ] {
                b.extension(ext, "")?;
            }
        }
        let cert = b.sign(&ca.key)?;
        Ok(Issued {
            certificate: cert.to_openssh()?,
            serial: req.serial,
            key_fingerprint: subject.fingerprint(HashAlg::Sha256).to_string(),
            ca_fingerprint: ca.key.fingerprint(HashAlg::Sha256).to_string(),
            principals: req.principals.clone(),
            valid_after: req.valid_after,
            valid_before: req.valid_before,
        })
    }

    /// The KRL revoking `serials` (of certificates signed by any trusted key).
    pub fn krl(&self, serials: &[u64], version: u64, now: u64) -> Result<Vec<u8>, SshCaError> {
        let revoked = self
            .read()
            .iter()
            .map(|k| {
                Ok(Revoked {
                    ca_key: k.key.public_key().to_bytes()?,
                    serials: serials.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, SshCaError>>()?;
        Ok(krl::encode(&revoked, version, now))
    }
}

fn key_path(dir: &Path, created: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{created}{SUFFIX}"))
}

/// The keys in `dir`, oldest first; a file that does not parse stops the start.
fn load(dir: &Path) -> Result<Vec<CaKey>, SshCaError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(SshCaError::io(dir))? {
        let entry = entry.map_err(SshCaError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(created) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let path = entry.path();
        let text = fs::read_to_string(&path).map_err(SshCaError::io(&path))?;
        let key = PrivateKey::from_openssh(&text)
            .map_err(|e| SshCaError::Invalid(format!("{}: {e}", path.display())))?;
        keys.push(CaKey { created, key });
    }
    keys.sort_by_key(|k| k.created);
    Ok(keys)
}

/// A new ed25519 key, written (0600, never replacing a file) before it is used.
fn create(dir: &Path, now: u64) -> Result<CaKey, SshCaError> {
    let mut key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)?;
    key.set_comment(format!("watchgrid-ssh-ca-{now}"));
    let pem = key.to_openssh(LineEnding::LF)?;
    let path = key_path(dir, now);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(SshCaError::io(&path))?;
    f.write_all(pem.as_bytes()).map_err(SshCaError::io(&path))?;
    f.sync_all().map_err(SshCaError::io(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SshCaError::io(dir))?;
    Ok(CaKey { created: now, key })
}

//! What the agent reads and writes in sshd's directory: the host public keys, their
//! certificates next to them (`ssh_host_ed25519_key-cert.pub`, where OpenSSH looks),
//! the hub's user CA keys and KRL, and one drop-in (`sshd_config.d/watchgrid.conf`)
//! that points sshd at them. Every write is whole (a temporary file renamed), so sshd
//! never reads half a certificate or half a KRL.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use watchgrid_store::durable;

pub const USER_CA_FILE: &str = "watchgrid-user-ca.pub";
pub const KRL_FILE: &str = "watchgrid-revoked.krl";
pub const DROPIN: &str = "sshd_config.d/watchgrid.conf";

/// One of sshd's host keys.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// The public key, one OpenSSH line.
    pub line: String,
    /// Where its certificate goes (`…_key-cert.pub`).
    pub cert_path: PathBuf,
}

/// sshd's host public keys in `dir` (`ssh_host_*_key.pub`), sorted by file name. A
/// file that is no public key the CA reads is left out, so that it does not hold back
/// the others (the hub would refuse the whole request).
pub fn host_keys(dir: &Path) -> io::Result<Vec<HostKey>> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name
            .strip_prefix("ssh_host_")
            .and_then(|rest| rest.strip_suffix("_key.pub"))
        else {
            continue;
        };
        let line = fs::read_to_string(&path)?.trim().to_string();
        if ssh_key::PublicKey::from_openssh(&line).is_err() {
            tracing::debug!(path = %path.display(), "not a host key the hub certifies; skipped");
            continue;
        }
        keys.push(HostKey {
            line,
            cert_path: dir.join(format!("ssh_host_{stem}_key-cert.pub")),
        });
    }
    keys.sort_by(|a, b| a.cert_path.cmp(&b.cert_path));
    Ok(keys)
}

/// When the certificate installed for `key` should be renewed: at half its validity.
/// `None`: there is none, it is unreadable, or it certifies another key (the host key
/// was regenerated), so a new one is needed now.
pub fn renew_at(key: &HostKey) -> Option<u64> {
    let text = fs::read_to_string(&key.cert_path).ok()?;
    let cert = ssh_key::Certificate::from_openssh(text.trim()).ok()?;
    let public = ssh_key::PublicKey::from_openssh(&key.line).ok()?;
    if cert.public_key() != public.key_data() {
        return None;
    }
    let (after, before) = (cert.valid_after(), cert.valid_before());
    Some(after + before.saturating_sub(after) / 2)
}

/// Replaces `path` with `contents` (mode 0644: sshd and clients read these) unless it
/// already holds exactly that; true when it changed.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<bool> {
    if fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    durable::write_file(path, contents, 0o644)?;
    Ok(true)
}

/// The drop-in for what the agent manages: host certificates (the ones present), and
/// with the user CA, its keys and the KRL. sshd refuses every key while a configured
/// `RevokedKeys` file is missing, so the caller writes the KRL before this.
pub fn dropin(dir: &Path, certs: &[PathBuf], user_ca: bool) -> String {
    let mut text = String::from(
        "# Managed by `watchgrid agent run`; rewritten when the hub's SSH CA changes.\n",
    );
    for cert in certs {
        text.push_str(&format!("HostCertificate {}\n", cert.display()));
    }
    if user_ca {
        text.push_str(&format!(
            "TrustedUserCAKeys {}\nRevokedKeys {}\n",
            dir.join(USER_CA_FILE).display(),
            dir.join(KRL_FILE).display()
        ));
    }
    text
}

/// Whether `DIR/sshd_config` reads the drop-in directory (Debian's and most
/// distributions' do); `None` when there is no such file to tell.
pub fn config_includes_dropins(dir: &Path) -> Option<bool> {
    let config = fs::read_to_string(dir.join("sshd_config")).ok()?;
    Some(config.lines().any(|l| {
        let l = l.trim();
        !l.starts_with('#')
            && l.to_ascii_lowercase().starts_with("include")
            && l.contains("sshd_config.d")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_found_by_openssh_names_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "ssh_host_ed25519_key.pub",
            "ssh_host_rsa_key.pub",
            "ssh_host_rsa_key",
            "ssh_host_rsa_key-cert.pub",
            "moduli",
        ] {
            fs::write(dir.path().join(name), format!("{}\n", new_key())).expect("write");
        }
        let odd = "ssh-foo AAAAB3NzaC1kc3MAAACB x\n";
        fs::write(dir.path().join("ssh_host_foo_key.pub"), odd).expect("write");
        let keys = host_keys(dir.path()).expect("keys");
        let certs: Vec<String> = keys
            .iter()
            .map(|k| {
                k.cert_path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            certs,
            ["ssh_host_ed25519_key-cert.pub", "ssh_host_rsa_key-cert.pub"]
        );
        assert!(keys[0].line.starts_with("ssh-ed25519 "));
    }

    fn signed(ca: &watchgrid_sshca::SshCa, key: &str, after: u64, before: u64) -> String {
        let req = watchgrid_sshca::CertRequest {
            kind: watchgrid_sshca::CertKind::Host,
            public_key: key.to_string(),
            principals: vec!["web-1".into()],
            valid_after: after,
            valid_before: before,
            serial: 1,
            key_id: "test".into(),
        };
        ca.sign(&req, after).expect("signed").certificate
    }

    fn new_key() -> String {
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("key")
            .public_key()
            .to_openssh()
            .expect("openssh")
    }

    #[test]
    fn a_certificate_is_renewed_at_half_life_and_at_once_when_missing_or_for_another_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = watchgrid_sshca::SshCa::open_or_create(&dir.path().join("ca"), 1_800_000_000)
            .expect("ca");
        let key = HostKey {
            line: new_key(),
            cert_path: dir.path().join("ssh_host_ed25519_key-cert.pub"),
        };
        assert_eq!(renew_at(&key), None, "no certificate yet");
        let t0 = 1_800_000_000;
        let cert = signed(&ca, &key.line, t0, t0 + 30 * 86_400);
        fs::write(&key.cert_path, format!("{cert}\n")).expect("write");
        assert_eq!(renew_at(&key), Some(t0 + 15 * 86_400));
        let other = signed(&ca, &new_key(), t0, t0 + 30 * 86_400);
        fs::write(&key.cert_path, other).expect("write");
        assert_eq!(renew_at(&key), None, "the host key was regenerated");
        fs::write(&key.cert_path, "garbage").expect("write");
        assert_eq!(renew_at(&key), None);
    }

    #[test]
    fn replace_writes_only_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sshd_config.d/watchgrid.conf");
        assert!(replace(&path, b"a").expect("first"));
        assert!(!replace(&path, b"a").expect("same"));
        assert!(replace(&path, b"b").expect("changed"));
        assert_eq!(fs::read(&path).expect("read"), b"b");
    }

    #[test]
    fn the_include_line_is_recognised_and_a_comment_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(config_includes_dropins(dir.path()), None);
        let config = dir.path().join("sshd_config");
        fs::write(&config, "#Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n").expect("w");
        assert_eq!(config_includes_dropins(dir.path()), Some(false));
        fs::write(&config, "Include /etc/ssh/sshd_config.d/*.conf\n").expect("w");
        assert_eq!(config_includes_dropins(dir.path()), Some(true));
    }
}

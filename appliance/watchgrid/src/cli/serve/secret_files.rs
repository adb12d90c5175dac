//! Every file that holds a secret is checked before the daemon starts: one that group
//! or others may read stops the start, naming the file (the seed's rule: a permissions
//! mistake is a startup failure, not a warning). The data dir itself is checked by
//! `prepare_data_dir`; this covers what is in it, and a `--tls-key` kept elsewhere.

use anyhow::bail;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Files under the data dir that hold a secret on their own.
const SECRET_FILES: &[&str] = &[
    "wg-private.key",
    "watchgrid.env",
    "tls/ca.key",
    "tls/leaf.key",
    "tls/uploaded.key",
];

/// Directories under the data dir whose every file is secret: the ACME account and
/// certificate cache, the store (password hashes, the session-signing secret), the SSH
/// CA's keys and the kept backups.
const SECRET_DIRS: &[&str] = &["acme", "db", "ssh", "backups"];

/// How deep the secret directories are walked (sled keeps `db/blobs/`).
const MAX_DEPTH: usize = 4;

/// Files the daemon creates from now on are private, whatever umask it was started
/// with (the image's unit sets `UMask=0077`; a shell usually has 022).
pub fn private_umask() {
    // SAFETY: umask(2) only swaps the process's file-mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Refuses to go on if any secret file is open to group or others.
pub fn check_secret_files(data_dir: &Path, tls_key: Option<&Path>) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = SECRET_FILES.iter().map(|f| data_dir.join(f)).collect();
    for dir in SECRET_DIRS {
        walk(&data_dir.join(dir), MAX_DEPTH, &mut files)?;
    }
    files.extend(tls_key.map(Path::to_path_buf));
    for file in files.iter().filter(|f| f.exists()) {
        check(file)?;
    }
    Ok(())
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if depth == 0 || !dir.is_dir() {
        return Ok(());
    }
    let entries =
        fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, depth - 1, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn check(file: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} holds a secret and is accessible to group or others (mode {:o}); \
             run `chmod go-rwx {}` (watchgrid does not start with a secret others can read)",
            file.display(),
            mode & 0o777,
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One secret of each kind the check covers.
    const PLANTED: &[&str] = &[
        "wg-private.key",
        "watchgrid.env",
        "tls/ca.key",
        "tls/leaf.key",
        "tls/uploaded.key",
        "acme/account/key",
        "db/conf",
        "db/blobs/1",
    ];

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["tls", "acme/account", "db/blobs"] {
            fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        for f in PLANTED {
            let path = dir.path().join(f);
            fs::write(&path, "secret").expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        dir
    }

    #[test]
    fn private_secrets_pass() {
        let dir = data_dir();
        check_secret_files(dir.path(), None).expect("all 0600");
    }

    #[test]
    fn finding_12_each_secret_open_to_others_stops_the_start_naming_it() {
        for f in PLANTED {
            for mode in [0o640, 0o604] {
                let dir = data_dir();
                let path = dir.path().join(f);
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
                let err = check_secret_files(dir.path(), None)
                    .expect_err(&format!("{f} at {mode:o} was accepted"))
                    .to_string();
                assert!(err.contains(&path.display().to_string()), "{err}");
                assert!(err.contains("chmod go-rwx"), "{err}");
            }
        }
    }

    #[test]
    fn finding_12_a_tls_key_outside_the_data_dir_is_checked_too() {
        let dir = data_dir();
        let outside = tempfile::tempdir().expect("tempdir");
        let key = outside.path().join("site.key");
        fs::write(&key, "secret").expect("write");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = check_secret_files(dir.path(), Some(&key)).expect_err("accepted");
        assert!(err.to_string().contains("site.key"), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
        check_secret_files(dir.path(), Some(&key)).expect("private now");
    }
}

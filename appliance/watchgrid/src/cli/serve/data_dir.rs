//! The data dir: created private, refused when others can read it (SPEC §2), and the
//! files the hub keeps there.

use crate::dataplane::wgconf;
use crate::dataplane::DeviceConfig;
use anyhow::{bail, Context};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use watchgrid_core::Secret;
use watchgrid_store::durable;

/// Creates the data dir 0700, or refuses one that others can read (SPEC §2).
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting permissions of {}", dir.display()))?;
    }
    check_private(dir)
}

fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible to group or others (mode {:o}); run `chmod go-rwx {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

pub fn load_or_create_key(path: &Path) -> anyhow::Result<Secret> {
    if path.exists() {
        check_private(path)?;
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let key = Secret::from_base64(&text).with_context(|| format!("{}", path.display()))?;
        return Ok(key);
    }
    let key = Secret::generate_private();
    // Durable before the hub uses it: peers are configured with the public half.
    durable::write_file(path, format!("{}\n", key.to_base64()).as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

pub fn read_peers(path: &Path) -> anyhow::Result<DeviceConfig> {
    if !path.exists() {
        return Ok(DeviceConfig {
            replace_peers: true,
            ..DeviceConfig::default()
        });
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    wgconf::parse(&text).with_context(|| format!("{}", path.display()))
}

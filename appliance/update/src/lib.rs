//! Over-the-air updates of the appliance image.
//!
//! An update bundle carries a root file system (squashfs) and a unified kernel image,
//! described by a manifest that a release key signs. Installing one:
//!
//! 1. verifies the signature against the keys the running image trusts and every
//!    payload's hash, before anything is written ([`bundle::VerifiedBundle::open`]);
//! 2. refuses an older version unless asked to ([`install::Options::allow_downgrade`]);
//! 3. writes the root slot the system is *not* running from, hashing what it writes and
//!    reading it back, then the kernel image to the ESP;
//! 4. adds a boot entry with a try counter (systemd-boot's boot counting), which sorts
//!    first while it has tries left.
//!
//! After the reboot, `watchgrid update boot-check` marks the new version good once its
//! health check passes; systemd-bless-boot then drops the counter. A version that never
//! passes runs out of tries and the firmware boots the other slot again, where the same
//! check records the rollback ([`state`]).

pub mod bundle;
mod error;
pub mod esp;
pub mod install;
pub mod keys;
pub mod manifest;
pub mod slots;
pub mod state;

pub use error::UpdateError;
pub use semver;

/// The architecture this build installs bundles for.
pub const ARCH: &str = std::env::consts::ARCH;

/// The running image's version: `IMAGE_VERSION` in os-release (the image build sets it),
/// else `fallback` (the binary's own version, outside the image).
pub fn running_version(fallback: &str) -> semver::Version {
    let from_os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            image_version(&text)
        });
    from_os_release
        .or_else(|| semver::Version::parse(fallback).ok())
        .unwrap_or_else(|| semver::Version::new(0, 0, 0))
}

fn image_version(os_release: &str) -> Option<semver::Version> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("IMAGE_VERSION="))?;
    semver::Version::parse(value.trim().trim_matches('"')).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_image_version_is_read_from_os_release() {
        let text = "NAME=\"Debian\"\nIMAGE_ID=watchgrid\nIMAGE_VERSION=\"0.2.1\"\n";
        assert_eq!(
            super::image_version(text),
            Some(semver::Version::new(0, 2, 1))
        );
        assert_eq!(super::image_version("ID=debian\n"), None);
    }
}

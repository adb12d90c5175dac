//! The signed description of a bundle: what it is for and what it carries.

use crate::UpdateError;
use serde::{Deserialize, Serialize};

/// The manifest format this build reads and writes.
pub const FORMAT: u32 = 1;
/// The product a bundle must be for.
pub const PRODUCT: &str = "watchgrid";
/// Where the slot's PARTUUID goes in [`Manifest::cmdline`].
pub const SLOT_PLACEHOLDER: &str = "@SLOT_PARTUUID@";
/// The payloads every bundle carries, in this order.
pub const ROOT: &str = "root";
pub const UKI: &str = "uki";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub product: String,
    pub version: String,
    pub arch: String,
    /// The kernel command line, with [`SLOT_PLACEHOLDER`] where the root slot's PARTUUID
    /// goes.
    pub cmdline: String,
    /// The disk layout's two root slots, by PARTUUID (lowercase).
    pub slots: SlotIds,
    pub payloads: Vec<Payload>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotIds {
    pub a: String,
    pub b: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Checks everything but the payloads' hashes (the bundle reader does those), for
    /// this machine.
    pub fn check(&self) -> Result<semver::Version, UpdateError> {
        self.check_for(crate::ARCH)
    }

    /// The same, for a machine of architecture `arch`.
    pub fn check_for(&self, arch: &str) -> Result<semver::Version, UpdateError> {
        let bad = |m: String| Err(UpdateError::BadManifest(m));
        if self.format != FORMAT {
            return bad(format!(
                "format {}, this appliance reads format {FORMAT}: update in smaller steps",
                self.format
            ));
        }
        if self.product != PRODUCT {
            return bad(format!("it is for {:?}, not {PRODUCT}", self.product));
        }
        let version = semver::Version::parse(&self.version)
            .map_err(|e| UpdateError::BadManifest(format!("version {:?}: {e}", self.version)))?;
        if self.arch != arch {
            return Err(UpdateError::WrongArch {
                found: self.arch.clone(),
                ours: arch.to_string(),
            });
        }
        check_cmdline(&self.cmdline)?;
        for id in [&self.slots.a, &self.slots.b] {
            if !is_partuuid(id) {
                return bad(format!("slot id {id:?} is not a lowercase PARTUUID"));
            }
        }
        if self.slots.a == self.slots.b {
            return bad("both slots have the same PARTUUID".into());
        }
        let names: Vec<&str> = self.payloads.iter().map(|p| p.name.as_str()).collect();
        if names != [ROOT, UKI] {
            return bad(format!(
                "payloads {names:?}, expected [\"{ROOT}\", \"{UKI}\"]"
            ));
        }
        for p in &self.payloads {
            if p.size == 0 || p.sha256.len() != 64 || !p.sha256.bytes().all(is_lower_hex) {
                return bad(format!(
                    "payload {}: empty, or its sha256 is not 64 lowercase hex digits",
                    p.name
                ));
            }
        }
        Ok(version)
    }

    pub fn payload(&self, name: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.name == name)
    }

    /// The command line that boots from the slot with this PARTUUID.
    pub fn cmdline_for(&self, partuuid: &str) -> String {
        self.cmdline.replace(SLOT_PLACEHOLDER, partuuid)
    }
}

fn check_cmdline(cmdline: &str) -> Result<(), UpdateError> {
    let bad = |m: &str| Err(UpdateError::BadManifest(format!("command line: {m}")));
    if cmdline.matches(SLOT_PLACEHOLDER).count() != 1 {
        return bad(&format!(
            "must name the root slot as {SLOT_PLACEHOLDER} exactly once"
        ));
    }
    if cmdline.len() > 2048 || cmdline.chars().any(|c| c.is_control()) {
        return bad("longer than 2048 bytes, or holds a control character");
    }
    Ok(())
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase.
pub fn is_partuuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(is_lower_hex))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn manifest(version: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            product: PRODUCT.into(),
            version: version.into(),
            arch: crate::ARCH.into(),
            cmdline: format!("root=PARTUUID={SLOT_PLACEHOLDER} ro console=ttyS0"),
            slots: SlotIds {
                a: "5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00a".into(),
                b: "5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00b".into(),
            },
            payloads: vec![
                Payload {
                    name: ROOT.into(),
                    size: 1,
                    sha256: "0".repeat(64),
                },
                Payload {
                    name: UKI.into(),
                    size: 1,
                    sha256: "0".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn each_invalid_field_is_named() {
        assert!(manifest("1.2.3").check().is_ok());
        type Change = fn(&mut Manifest);
        let cases: Vec<(Change, &str)> = vec![
            (|m| m.format = 2, "format 2"),
            (|m| m.product = "other".into(), "\"other\""),
            (|m| m.version = "1.2".into(), "version"),
            (|m| m.cmdline = "root=/dev/vda2".into(), "exactly once"),
            (|m| m.cmdline.push('\n'), "control character"),
            (|m| m.slots.b = m.slots.a.clone(), "same PARTUUID"),
            (
                |m| m.slots.a = "5A7C0B10-5E2B-4C39-9E4F-57A7C4C0D00A".into(),
                "lowercase PARTUUID",
            ),
            (|m| m.payloads.reverse(), "expected"),
            (
                |m| m.payloads[1].sha256 = "x".repeat(64),
                "64 lowercase hex",
            ),
        ];
        for (change, expected) in cases {
            let mut m = manifest("1.2.3");
            change(&mut m);
            let err = m.check().expect_err("refused").to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let mut m = manifest("1.2.3");
        m.arch = "riscv64".into();
        assert!(matches!(m.check(), Err(UpdateError::WrongArch { .. })));
    }

    #[test]
    fn the_slot_goes_into_the_command_line() {
        let m = manifest("1.0.0");
        assert_eq!(
            m.cmdline_for(&m.slots.b),
            "root=PARTUUID=5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00b ro console=ttyS0"
        );
    }
}

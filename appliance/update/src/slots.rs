//! The two root slots, and which one the running system booted from.

use crate::manifest::SlotIds;
use crate::UpdateError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn partuuid(self, ids: &SlotIds) -> &str {
        match self {
            Slot::A => &ids.a,
            Slot::B => &ids.b,
        }
    }

    pub(crate) fn from_letter(c: char) -> Option<Slot> {
        match c {
            'a' => Some(Slot::A),
            'b' => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter().to_ascii_uppercase())
    }
}

/// The PARTUUID that `root=PARTUUID=…` names on a kernel command line, lowercased.
pub fn root_partuuid(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|arg| arg.strip_prefix("root=PARTUUID="))
        .map(str::to_ascii_lowercase)
}

/// The slot the command line booted from.
pub fn running(cmdline: &str, ids: &SlotIds) -> Result<Slot, UpdateError> {
    let named = root_partuuid(cmdline);
    match named.as_deref() {
        Some(id) if id == ids.a => Ok(Slot::A),
        Some(id) if id == ids.b => Ok(Slot::B),
        _ => Err(UpdateError::UnknownSlot(
            named.unwrap_or_else(|| "no root=PARTUUID=".into()),
        )),
    }
}

/// The running slot judged by the command line alone: the image's slot ids are not
/// known without a bundle, but the names are fixed by the layout (slot A's PARTUUID ends
/// in `a`, slot B's in `b`; see image/layout.sh).
pub fn running_by_name(cmdline: &str) -> Option<Slot> {
    root_partuuid(cmdline)?
        .chars()
        .last()
        .and_then(Slot::from_letter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::manifest;

    #[test]
    fn the_running_slot_comes_from_root_partuuid() {
        let ids = manifest("1.0.0").slots;
        let line = |id: &str| format!("BOOT_IMAGE=x root=PARTUUID={id} ro quiet");
        assert_eq!(running(&line(&ids.a), &ids).expect("a"), Slot::A);
        assert_eq!(
            running(&line(&ids.b.to_uppercase()), &ids).expect("b"),
            Slot::B
        );
        assert!(matches!(
            running("root=/dev/vda2", &ids),
            Err(UpdateError::UnknownSlot(_))
        ));
        assert!(matches!(
            running(&line("5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d0ff"), &ids),
            Err(UpdateError::UnknownSlot(_))
        ));
        assert_eq!(running_by_name(&line(&ids.b)), Some(Slot::B));
    }
}

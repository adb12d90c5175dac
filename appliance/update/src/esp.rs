//! Boot entries on the EFI system partition, in systemd-boot's terms.
//!
//! Each slot has at most one entry, `loader/entries/watchgrid-GEN-SLOT[+LEFT[-DONE]].conf`,
//! booting the kernel image `EFI/watchgrid/watchgrid-GEN-SLOT.efi` with the slot's command
//! line. `loader.conf` says `default watchgrid-*`: systemd-boot sorts entries by id, the
//! higher generation first, and entries with no tries left last, so a new install boots
//! next, and one that used up its tries gives way to the other slot.
//! systemd-boot counts a try down at each boot; systemd-bless-boot removes the counter
//! once the boot is good.

use crate::slots::Slot;
use crate::UpdateError;
use std::path::{Path, PathBuf};

pub const ENTRIES: &str = "loader/entries";
pub const IMAGES: &str = "EFI/watchgrid";

/// One of our boot entries, from its file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub generation: u64,
    pub slot: Slot,
    /// `None`: not counted (a good entry).
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
}

impl Entry {
    pub fn parse(file: &str) -> Option<Entry> {
        let stem = file.strip_prefix("watchgrid-")?.strip_suffix(".conf")?;
        let (id, counter) = match stem.split_once('+') {
            Some((id, counter)) => (id, Some(counter)),
            None => (stem, None),
        };
        let (generation, slot) = id.split_once('-')?;
        let mut letters = slot.chars();
        let slot = Slot::from_letter(letters.next()?)?;
        if letters.next().is_some() {
            return None;
        }
        let (tries_left, tries_done) = match counter {
            None => (None, None),
            Some(c) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l, Some(d.parse().ok()?)),
                    None => (c, None),
                };
                (Some(left.parse().ok()?), done)
            }
        };
        Some(Entry {
            file: file.into(),
            generation: generation.parse().ok()?,
            slot,
            tries_left,
            tries_done,
        })
    }

    /// Out of tries: the boot loader passes it over.
    pub fn is_bad(&self) -> bool {
        self.tries_left == Some(0)
    }

    pub fn image(&self) -> String {
        image_name(self.generation, self.slot)
    }
}

fn image_name(generation: u64, slot: Slot) -> String {
    format!("watchgrid-{generation}-{}.efi", slot.letter())
}

/// Our entries on the ESP mounted at `esp`.
pub fn entries(esp: &Path) -> Result<Vec<Entry>, UpdateError> {
    let dir = esp.join(ENTRIES);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(UpdateError::io(&dir))? {
        let name = entry.map_err(UpdateError::io(&dir))?.file_name();
        if let Some(e) = name.to_str().and_then(Entry::parse) {
            found.push(e);
        }
    }
    found.sort_by_key(|e| std::cmp::Reverse(e.generation));
    Ok(found)
}

/// Removes every entry of `slot` and its kernel image: from here until the new entry is
/// written, nothing boots from the slot being overwritten.
pub fn remove_slot(esp: &Path, slot: Slot) -> Result<(), UpdateError> {
    for e in entries(esp)?.into_iter().filter(|e| e.slot == slot) {
        let path = esp.join(ENTRIES).join(&e.file);
        watchgrid_store::durable::remove_file(&path).map_err(UpdateError::io(&path))?;
        let image = esp.join(IMAGES).join(e.image());
        watchgrid_store::durable::remove_file(&image).map_err(UpdateError::io(&image))?;
    }
    Ok(())
}

/// Where the kernel image of a new entry goes.
pub fn image_path(esp: &Path, generation: u64, slot: Slot) -> PathBuf {
    esp.join(IMAGES).join(image_name(generation, slot))
}

/// What a new entry says.
pub struct NewEntry<'a> {
    pub generation: u64,
    pub slot: Slot,
    pub version: &'a str,
    pub options: &'a str,
    /// Boot counting: the tries before the boot loader gives up on it (0: not counted).
    pub tries: u32,
}

/// Writes the entry (its kernel image must already be in place).
pub fn write_entry(esp: &Path, new: &NewEntry) -> Result<Entry, UpdateError> {
    let letter = new.slot.letter();
    let file = match new.tries {
        0 => format!("watchgrid-{}-{letter}.conf", new.generation),
        n => format!("watchgrid-{}-{letter}+{n}.conf", new.generation),
    };
    let text = format!(
        "title Watchgrid {version} (slot {slot})\nversion {version}\nefi /{IMAGES}/{image}\noptions {options}\n",
        version = new.version,
        slot = new.slot,
        image = image_name(new.generation, new.slot),
        options = new.options,
    );
    let path = esp.join(ENTRIES).join(&file);
    watchgrid_store::durable::write_file(&path, text.as_bytes(), 0o644)
        .map_err(UpdateError::io(&path))?;
    Entry::parse(&file).ok_or(UpdateError::BadManifest(format!("entry name {file}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_carry_generation_slot_and_tries() {
        let e = Entry::parse("watchgrid-12-b+2-1.conf").expect("counted");
        assert_eq!(
            (e.generation, e.slot, e.tries_left, e.tries_done),
            (12, Slot::B, Some(2), Some(1))
        );
        assert!(!e.is_bad());
        assert!(Entry::parse("watchgrid-3-a+0-3.conf")
            .expect("bad")
            .is_bad());
        let good = Entry::parse("watchgrid-1-a.conf").expect("good");
        assert_eq!(
            (good.tries_left, good.image()),
            (None, "watchgrid-1-a.efi".into())
        );
        for other in [
            "watchgrid-1-c.conf",
            "watchgrid-x-a.conf",
            "debian.conf",
            "watchgrid-1-ab.conf",
            "watchgrid-1-a+x.conf",
        ] {
            assert_eq!(Entry::parse(other), None, "{other}");
        }
    }

    #[test]
    fn removing_a_slot_leaves_the_other() {
        let esp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(esp.path().join(ENTRIES)).expect("mkdir");
        std::fs::create_dir_all(esp.path().join(IMAGES)).expect("mkdir");
        for (generation, slot, tries) in [(1, Slot::A, 0), (2, Slot::B, 3)] {
            std::fs::write(image_path(esp.path(), generation, slot), b"MZ").expect("image");
            let new = NewEntry {
                generation,
                slot,
                version: "1.0.0",
                options: "root=x",
                tries,
            };
            write_entry(esp.path(), &new).expect("entry");
        }
        let text = std::fs::read_to_string(esp.path().join(ENTRIES).join("watchgrid-2-b+3.conf"))
            .expect("read");
        assert!(
            text.contains("efi /EFI/watchgrid/watchgrid-2-b.efi\noptions root=x\n"),
            "{text}"
        );
        assert_eq!(entries(esp.path()).expect("list").len(), 2);
        remove_slot(esp.path(), Slot::B).expect("remove");
        let left = entries(esp.path()).expect("list");
        assert_eq!(
            left.iter().map(|e| e.file.as_str()).collect::<Vec<_>>(),
            ["watchgrid-1-a.conf"]
        );
        assert!(!image_path(esp.path(), 2, Slot::B).exists());
        assert!(image_path(esp.path(), 1, Slot::A).exists());
    }
}

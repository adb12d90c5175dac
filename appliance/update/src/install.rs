//! Installing a verified bundle into the slot the system is not running from.

use crate::bundle::{VerifiedBundle, CHUNK};
use crate::esp::{self, NewEntry};
use crate::manifest;
use crate::slots::{self, Slot};
use crate::UpdateError;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The machine an install writes to.
pub struct System {
    /// Where the ESP is mounted.
    pub esp: PathBuf,
    /// Where each partition appears by PARTUUID (`/dev/disk/by-partuuid`).
    pub devices: PathBuf,
    /// The running kernel's command line.
    pub cmdline: String,
    pub running_version: semver::Version,
}

impl System {
    /// The appliance itself.
    pub fn this_machine(running_version: semver::Version) -> Result<System, UpdateError> {
        let cmdline_path = Path::new("/proc/cmdline");
        Ok(System {
            esp: PathBuf::from("/efi"),
            devices: PathBuf::from("/dev/disk/by-partuuid"),
            cmdline: std::fs::read_to_string(cmdline_path)
                .map_err(UpdateError::io(cmdline_path))?,
            running_version,
        })
    }
}

pub struct Options {
    pub allow_downgrade: bool,
    /// Boots the new version gets to prove itself before the other slot boots again.
    pub tries: u32,
}

pub const DEFAULT_TRIES: u32 = 3;
pub const MAX_TRIES: u32 = 9;

/// What was installed.
#[derive(Clone, Debug)]
pub struct Installed {
    pub version: String,
    pub from_slot: Slot,
    pub slot: Slot,
    pub generation: u64,
    pub entry: String,
}

/// Writes the bundle's root into the inactive slot and its kernel image and boot entry
/// onto the ESP. `progress` hears the percentage of the root written. Until the entry is
/// written last, the inactive slot has no entry, so a failure at any step leaves the
/// running version the one that boots.
pub fn install(
    bundle: &VerifiedBundle,
    system: &System,
    options: &Options,
    progress: &mut dyn FnMut(u8),
) -> Result<Installed, UpdateError> {
    check_version(bundle, &system.running_version, options.allow_downgrade)?;
    let m = &bundle.manifest;
    let from_slot = slots::running(&system.cmdline, &m.slots)?;
    let slot = from_slot.other();
    let device_path = system.devices.join(slot.partuuid(&m.slots));
    let (device, size) = open_slot(&device_path)?;
    let (mut root, described) = bundle.reader(manifest::ROOT)?;
    if size < described.size {
        return Err(UpdateError::SlotTooSmall {
            slot: slot.letter(),
            size,
            needed: described.size,
        });
    }
    let generation = esp::entries(&system.esp)?
        .iter()
        .map(|e| e.generation)
        .max()
        .unwrap_or(0)
        + 1;
    esp::remove_slot(&system.esp, slot)?;
    write_root(
        &mut root,
        &device,
        &device_path,
        &described.sha256,
        described.size,
        progress,
    )?;
    write_image(bundle, &esp::image_path(&system.esp, generation, slot))?;
    let entry = esp::write_entry(
        &system.esp,
        &NewEntry {
            generation,
            slot,
            version: &m.version,
            options: &m.cmdline_for(slot.partuuid(&m.slots)),
            tries: options.tries.clamp(1, MAX_TRIES),
        },
    )?;
    Ok(Installed {
        version: m.version.clone(),
        from_slot,
        slot,
        generation,
        entry: entry.file,
    })
}

/// Refuses a bundle older than the running version unless a downgrade is allowed (the
/// daemon asks this at upload, the helper again at install).
pub fn check_version(
    bundle: &VerifiedBundle,
    running: &semver::Version,
    allow_downgrade: bool,
) -> Result<(), UpdateError> {
    if bundle.version < *running && !allow_downgrade {
        return Err(UpdateError::Downgrade {
            bundle: bundle.version.to_string(),
            running: running.to_string(),
        });
    }
    Ok(())
}

/// The slot's device, opened for writing, and its size.
fn open_slot(path: &Path) -> Result<(File, u64), UpdateError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(UpdateError::io(path))?;
    let size = f.seek(SeekFrom::End(0)).map_err(UpdateError::io(path))?;
    Ok((f, size))
}

/// Copies the root into the slot, hashing what it copies (the bundle file could change
/// after it was verified), then drops the slot from the page cache and reads it back from
/// the disk to hash it again.
fn write_root(
    root: &mut impl Read,
    device: &File,
    path: &Path,
    sha256: &str,
    size: u64,
    progress: &mut dyn FnMut(u8),
) -> Result<(), UpdateError> {
    let io = UpdateError::io(path);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    progress(0);
    loop {
        let n = root.read(&mut buf).map_err(UpdateError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        device
            .write_all_at(&buf[..n], at)
            .map_err(UpdateError::io(path))?;
        at += n as u64;
        progress(u8::try_from(at * 100 / size.max(1)).unwrap_or(100).min(100));
    }
    let written = hex::encode(hasher.finalize());
    if written != sha256 || at != size {
        return Err(UpdateError::Changed {
            what: "the bundle".into(),
            detail: format!(
                "{at} bytes with sha256 {written} were read, {size} with {sha256} were signed"
            ),
        });
    }
    device.sync_all().map_err(UpdateError::io(path))?;
    drop_cache(device);
    let mut back = device.try_clone().map_err(UpdateError::io(path))?;
    back.seek(SeekFrom::Start(0))
        .map_err(UpdateError::io(path))?;
    let (read, read_sha) = crate::bundle::hash_stream(&mut back.take(size)).map_err(io)?;
    if read != size || read_sha != sha256 {
        return Err(UpdateError::Changed {
            what: format!("root slot {}", path.display()),
            detail: format!("reading it back gave sha256 {read_sha} over {read} bytes"),
        });
    }
    Ok(())
}

/// Asks the kernel to forget the file's cached pages, so the next read comes from the
/// disk (advice only: where it is not followed, the read-back checks the cache).
fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// The kernel image onto the ESP, through a temporary file, hashed as it is copied.
fn write_image(bundle: &VerifiedBundle, path: &Path) -> Result<(), UpdateError> {
    let (mut uki, described) = bundle.reader(manifest::UKI)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(UpdateError::io(dir))?;
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut out = File::create(&tmp).map_err(UpdateError::io(&tmp))?;
        let mut tee = HashingWriter {
            inner: &mut out,
            hasher: Sha256::new(),
        };
        std::io::copy(&mut uki, &mut tee).map_err(UpdateError::io(&tmp))?;
        let sha = hex::encode(tee.hasher.finalize());
        if sha != described.sha256 {
            return Err(UpdateError::Changed {
                what: "the bundle".into(),
                detail: format!("kernel image sha256 {sha}"),
            });
        }
        out.sync_all().map_err(UpdateError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(UpdateError::io(path))?;
        watchgrid_store::durable::sync_dir(dir).map_err(UpdateError::io(dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::{build, trusted};
    use crate::esp::{Entry, ENTRIES, IMAGES};

    /// An ESP with slot A's factory entry, and two slot "devices" as files.
    struct Machine {
        dir: tempfile::TempDir,
        system: System,
    }

    const SLOT_BYTES: u64 = 8 << 20;

    fn machine(running: Slot, version: &str) -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let esp = dir.path().join("esp");
        std::fs::create_dir_all(esp.join(ENTRIES)).expect("mkdir");
        std::fs::create_dir_all(esp.join(IMAGES)).expect("mkdir");
        let devices = dir.path().join("by-partuuid");
        std::fs::create_dir_all(&devices).expect("mkdir");
        let m = crate::manifest::tests::manifest(version);
        for id in [&m.slots.a, &m.slots.b] {
            let f = File::create(devices.join(id)).expect("slot");
            f.set_len(SLOT_BYTES).expect("size");
            f.write_all_at(b"old root", 0).expect("old contents");
        }
        std::fs::write(esp.join(IMAGES).join("watchgrid-1-a.efi"), b"MZ factory").expect("image");
        let options = format!("root=PARTUUID={}", m.slots.a);
        esp::write_entry(
            &esp,
            &NewEntry {
                generation: 1,
                slot: Slot::A,
                version,
                options: &options,
                tries: 0,
            },
        )
        .expect("factory entry");
        Machine {
            system: System {
                esp,
                devices,
                cmdline: format!("root=PARTUUID={} ro", running.partuuid(&m.slots)),
                running_version: semver::Version::parse(version).expect("version"),
            },
            dir,
        }
    }

    fn slot_bytes(m: &Machine, slot: Slot) -> Vec<u8> {
        let ids = crate::manifest::tests::manifest("1.0.0").slots;
        std::fs::read(m.system.devices.join(slot.partuuid(&ids))).expect("read slot")
    }

    const OPTIONS: Options = Options {
        allow_downgrade: false,
        tries: 3,
    };

    #[test]
    fn the_inactive_slot_gets_the_root_and_a_counted_entry_sorting_first() {
        let b = build("1.1.0");
        let m = machine(Slot::A, "1.0.0");
        let bundle = VerifiedBundle::open(&b.path, &trusted(&b.key)).expect("verify");
        let mut seen = Vec::new();
        let done = install(&bundle, &m.system, &OPTIONS, &mut |p| seen.push(p)).expect("install");
        assert_eq!(
            (done.from_slot, done.slot, done.generation),
            (Slot::A, Slot::B, 2)
        );
        assert_eq!(done.entry, "watchgrid-2-b+3.conf");
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&100));
        let slot_b = slot_bytes(&m, Slot::B);
        assert_eq!(&slot_b[..b.root.len()], b.root.as_slice());
        assert_eq!(
            &slot_bytes(&m, Slot::A)[..8],
            b"old root",
            "the running slot is untouched"
        );
        let image =
            std::fs::read(m.system.esp.join(IMAGES).join("watchgrid-2-b.efi")).expect("image");
        assert_eq!(image, b.uki);
        let text =
            std::fs::read_to_string(m.system.esp.join(ENTRIES).join(&done.entry)).expect("entry");
        assert!(
            text.contains(
                "options root=PARTUUID=5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00b ro console=ttyS0"
            ),
            "{text}"
        );
        let entries = esp::entries(&m.system.esp).expect("entries");
        assert_eq!(
            entries.first().map(|e| e.generation),
            Some(2),
            "the new entry sorts first"
        );
        drop(m.dir);
    }

    #[test]
    fn installing_again_replaces_the_other_slots_entry_and_keeps_the_running_one() {
        let b = build("1.2.0");
        let mut m = machine(Slot::A, "1.0.0");
        let bundle = VerifiedBundle::open(&b.path, &trusted(&b.key)).expect("verify");
        install(&bundle, &m.system, &OPTIONS, &mut |_| {}).expect("first");
        // Booted into B (its entry blessed), then an update goes to A.
        let ids = crate::manifest::tests::manifest("1.0.0").slots;
        m.system.cmdline = format!("root=PARTUUID={}", ids.b);
        m.system.running_version = semver::Version::new(1, 2, 0);
        let done = install(&bundle, &m.system, &OPTIONS, &mut |_| {}).expect("second");
        assert_eq!((done.slot, done.generation), (Slot::A, 3));
        let files: Vec<String> = esp::entries(&m.system.esp)
            .expect("list")
            .into_iter()
            .map(|e| e.file)
            .collect();
        assert_eq!(files, ["watchgrid-3-a+3.conf", "watchgrid-2-b+3.conf"]);
        assert!(
            !m.system.esp.join(IMAGES).join("watchgrid-1-a.efi").exists(),
            "slot A's old image is gone"
        );
    }

    #[test]
    fn an_older_version_is_refused_unless_allowed_and_nothing_is_written() {
        let b = build("0.9.0");
        let m = machine(Slot::A, "1.0.0");
        let bundle = VerifiedBundle::open(&b.path, &trusted(&b.key)).expect("verify");
        let err = install(&bundle, &m.system, &OPTIONS, &mut |_| {}).expect_err("refused");
        assert!(matches!(err, UpdateError::Downgrade { .. }), "{err}");
        assert_eq!(&slot_bytes(&m, Slot::B)[..8], b"old root");
        assert_eq!(esp::entries(&m.system.esp).expect("list").len(), 1);
        let allow = Options {
            allow_downgrade: true,
            tries: 2,
        };
        let done = install(&bundle, &m.system, &allow, &mut |_| {}).expect("allowed");
        assert_eq!(done.entry, "watchgrid-2-b+2.conf");
    }

    #[test]
    fn a_slot_too_small_is_refused_before_anything_is_removed() {
        let b = build("1.1.0");
        let m = machine(Slot::B, "1.0.0");
        let ids = crate::manifest::tests::manifest("1.0.0").slots;
        File::options()
            .write(true)
            .open(m.system.devices.join(&ids.a))
            .expect("open")
            .set_len(1024)
            .expect("shrink");
        let bundle = VerifiedBundle::open(&b.path, &trusted(&b.key)).expect("verify");
        let err = install(&bundle, &m.system, &OPTIONS, &mut |_| {}).expect_err("refused");
        assert!(
            matches!(err, UpdateError::SlotTooSmall { slot: 'a', .. }),
            "{err}"
        );
        assert!(esp::entries(&m.system.esp)
            .expect("list")
            .iter()
            .any(|e| e == &Entry::parse("watchgrid-1-a.conf").expect("e")));
    }

    #[test]
    fn a_bundle_changed_after_verification_leaves_no_entry_for_the_slot() {
        let b = build("1.1.0");
        let m = machine(Slot::A, "1.0.0");
        let bundle = VerifiedBundle::open(&b.path, &trusted(&b.key)).expect("verify");
        let len = std::fs::metadata(&b.path).expect("meta").len();
        let f = File::options().write(true).open(&b.path).expect("open");
        f.write_all_at(b"X", len - b.uki.len() as u64 - 10)
            .expect("tamper");
        let err = install(&bundle, &m.system, &OPTIONS, &mut |_| {}).expect_err("refused");
        assert!(matches!(err, UpdateError::Changed { .. }), "{err}");
        let entries = esp::entries(&m.system.esp).expect("list");
        assert!(entries.iter().all(|e| e.slot == Slot::A), "{entries:?}");
    }
}

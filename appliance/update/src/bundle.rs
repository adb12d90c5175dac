//! The bundle file: a header, the signed manifest, and the payloads.
//!
//! ```text
//! MAGIC (8) | manifest length (u32, big endian) | manifest (JSON) | ed25519 signature (64)
//! | payload "root" | payload "uki"
//! ```
//! The signature covers [`SIGNED_CONTEXT`] followed by the manifest's bytes, so it cannot
//! be mistaken for a signature over anything else the key might sign.

use crate::keys::{SigningKey, TrustedKeys};
use crate::manifest::{self, Manifest, Payload, SlotIds};
use crate::UpdateError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"WGUPD01\n";
pub const SIGNED_CONTEXT: &[u8] = b"watchgrid update manifest\0";
const MAX_MANIFEST: usize = 64 * 1024;
const SIGNATURE: usize = 64;
/// The unit of copying and hashing.
pub(crate) const CHUNK: usize = 1 << 20;

/// What a build puts into a bundle.
pub struct Contents<'a> {
    pub version: &'a str,
    /// The machine the bundle is for (a build host may make them for others).
    pub arch: &'a str,
    pub cmdline: &'a str,
    pub slots: SlotIds,
    pub root: &'a Path,
    pub uki: &'a Path,
}

/// Writes a signed bundle to `out` (through a temporary file, so a failed build leaves
/// no bundle behind) and returns its manifest.
pub fn create(out: &Path, key: &SigningKey, contents: &Contents) -> Result<Manifest, UpdateError> {
    let sources = [
        (manifest::ROOT, contents.root),
        (manifest::UKI, contents.uki),
    ];
    let mut payloads = Vec::new();
    for (name, path) in sources {
        let mut f = File::open(path).map_err(UpdateError::io(path))?;
        let (size, sha256) = hash_stream(&mut f).map_err(UpdateError::io(path))?;
        payloads.push(Payload {
            name: name.into(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        product: manifest::PRODUCT.into(),
        version: contents.version.into(),
        arch: contents.arch.into(),
        cmdline: contents.cmdline.into(),
        slots: contents.slots.clone(),
        payloads,
    };
    manifest.check_for(contents.arch)?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| UpdateError::BadManifest(e.to_string()))?;
    let tmp = out.with_extension("partial");
    let written = write_file(&tmp, key, &json, &sources);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, out).map_err(UpdateError::io(out)))
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(manifest)
}

fn write_file(
    tmp: &Path,
    key: &SigningKey,
    json: &[u8],
    sources: &[(&str, &Path)],
) -> Result<(), UpdateError> {
    let io = UpdateError::io(tmp);
    let mut out = std::io::BufWriter::new(File::create(tmp).map_err(UpdateError::io(tmp))?);
    let len = u32::try_from(json.len()).map_err(|_| UpdateError::BadManifest("too long".into()))?;
    let signature = key.sign(&signed_message(json));
    let header = [&MAGIC[..], &len.to_be_bytes(), json, &signature].concat();
    out.write_all(&header).map_err(UpdateError::io(tmp))?;
    for (_, path) in sources {
        let mut f = File::open(path).map_err(UpdateError::io(path))?;
        std::io::copy(&mut f, &mut out).map_err(UpdateError::io(path))?;
    }
    let f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(UpdateError::io(tmp))
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNED_CONTEXT, manifest].concat()
}

/// The size and SHA-256 of everything `r` yields.
pub(crate) fn hash_stream(r: &mut impl Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// A bundle whose signature and payload hashes have been checked.
pub struct VerifiedBundle {
    file: File,
    path: PathBuf,
    pub manifest: Manifest,
    pub version: semver::Version,
    /// The trusted key that signed it.
    pub key_id: String,
    payload_start: u64,
}

impl VerifiedBundle {
    /// Reads the header, verifies the signature with a trusted key, checks the manifest
    /// and then hashes every payload. Nothing past the header is trusted before that.
    pub fn open(path: &Path, trusted: &TrustedKeys) -> Result<Self, UpdateError> {
        let mut file = File::open(path).map_err(UpdateError::io(path))?;
        let (json, signature) = read_header(&mut file, path)?;
        let key_id = trusted.verifying(&signed_message(&json), &signature)?.id();
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|e| UpdateError::BadManifest(e.to_string()))?;
        let version = manifest.check()?;
        let payload_start = (MAGIC.len() + 4 + json.len() + SIGNATURE) as u64;
        let bundle = VerifiedBundle {
            file,
            path: path.into(),
            manifest,
            version,
            key_id,
            payload_start,
        };
        bundle.check_length()?;
        for p in &bundle.manifest.payloads {
            let (_, sha256) =
                hash_stream(&mut bundle.reader(&p.name)?.0).map_err(UpdateError::io(path))?;
            if sha256 != p.sha256 {
                return Err(UpdateError::Damaged {
                    name: p.name.clone(),
                    detail: format!("sha256 {sha256}, signed {}", p.sha256),
                });
            }
        }
        Ok(bundle)
    }

    fn check_length(&self) -> Result<(), UpdateError> {
        let len = self
            .file
            .metadata()
            .map_err(UpdateError::io(&self.path))?
            .len();
        let described =
            self.payload_start + self.manifest.payloads.iter().map(|p| p.size).sum::<u64>();
        if len != described {
            return Err(UpdateError::Damaged {
                name: "(whole bundle)".into(),
                detail: format!("the file is {len} bytes, its manifest describes {described}"),
            });
        }
        Ok(())
    }

    /// A reader of one payload's bytes, and the payload's signed description.
    pub fn reader(&self, name: &str) -> Result<(Section<'_>, &Payload), UpdateError> {
        let mut offset = self.payload_start;
        for p in &self.manifest.payloads {
            if p.name == name {
                return Ok((
                    Section {
                        file: &self.file,
                        pos: offset,
                        end: offset + p.size,
                    },
                    p,
                ));
            }
            offset += p.size;
        }
        Err(UpdateError::BadManifest(format!("no payload {name}")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_header(file: &mut File, path: &Path) -> Result<(Vec<u8>, [u8; SIGNATURE]), UpdateError> {
    let not = |m: &str| UpdateError::NotABundle(m.into());
    let mut fixed = [0u8; 12];
    file.read_exact(&mut fixed)
        .map_err(|_| not("shorter than a bundle's header"))?;
    if &fixed[..8] != MAGIC {
        return Err(not("it does not begin with a bundle's header"));
    }
    let len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize;
    if len > MAX_MANIFEST {
        return Err(not("its manifest is longer than 64 KiB"));
    }
    let mut json = vec![0u8; len];
    let mut signature = [0u8; SIGNATURE];
    file.read_exact(&mut json)
        .and_then(|()| file.read_exact(&mut signature))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => not("cut short inside its manifest"),
            _ => UpdateError::io(path)(e),
        })?;
    Ok((json, signature))
}

/// One payload's byte range of the bundle, read with positioned reads.
pub struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::tests::manifest;

    pub(crate) struct Built {
        pub dir: tempfile::TempDir,
        pub key: SigningKey,
        pub path: PathBuf,
        pub root: Vec<u8>,
        pub uki: Vec<u8>,
    }

    pub(crate) fn trusted(key: &SigningKey) -> TrustedKeys {
        TrustedKeys::from_keys(vec![key.public()])
    }

    /// A bundle of `version` with distinct, recognisable payloads.
    pub(crate) fn build(version: &str) -> Built {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate().expect("key");
        let root: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let uki = format!("MZ kernel image of {version}").into_bytes();
        std::fs::write(dir.path().join("root.squashfs"), &root).expect("write");
        std::fs::write(dir.path().join("uki.efi"), &uki).expect("write");
        let path = dir.path().join(format!("watchgrid-{version}.update"));
        let m = manifest(version);
        let contents = Contents {
            version,
            arch: crate::ARCH,
            cmdline: &m.cmdline,
            slots: m.slots.clone(),
            root: &dir.path().join("root.squashfs"),
            uki: &dir.path().join("uki.efi"),
        };
        create(&path, &key, &contents).expect("create");
        Built {
            dir,
            key,
            path,
            root,
            uki,
        }
    }

    fn payload(bundle: &VerifiedBundle, name: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        bundle
            .reader(name)
            .expect("payload")
            .0
            .read_to_end(&mut bytes)
            .expect("read");
        bytes
    }

    #[test]
    fn a_bundle_round_trips() {
        let b = build("1.2.0");
        let bundle = VerifiedBundle::open(&b.path, &trusted(&b.key)).expect("verifies");
        assert_eq!(bundle.version, semver::Version::new(1, 2, 0));
        assert_eq!(bundle.key_id, b.key.public().id());
        assert_eq!(payload(&bundle, manifest::ROOT), b.root);
        assert_eq!(payload(&bundle, manifest::UKI), b.uki);
    }

    #[test]
    fn another_key_is_refused() {
        let b = build("1.2.0");
        let other = SigningKey::generate().expect("key");
        let err = VerifiedBundle::open(&b.path, &trusted(&other))
            .err()
            .expect("refused");
        assert!(
            matches!(err, UpdateError::BadSignature { trusted: 1 }),
            "{err}"
        );
    }

    fn flip(path: &Path, at: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open");
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, at).expect("read");
        f.write_all_at(&[byte[0] ^ 0x01], at).expect("write");
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let b = build("1.2.0");
        let len = std::fs::metadata(&b.path).expect("meta").len();
        // In the manifest, the signature, the root and the kernel image.
        for at in [
            20,
            len - b.uki.len() as u64 - b.root.len() as u64 - 3,
            len - b.uki.len() as u64 - 100,
            len - 1,
        ] {
            flip(&b.path, at);
            let err = VerifiedBundle::open(&b.path, &trusted(&b.key))
                .err()
                .expect("refused");
            assert!(
                matches!(
                    err,
                    UpdateError::BadSignature { .. } | UpdateError::Damaged { .. }
                ),
                "byte {at}: {err}"
            );
            flip(&b.path, at);
        }
        assert!(VerifiedBundle::open(&b.path, &trusted(&b.key)).is_ok());
    }

    #[test]
    fn a_cut_or_extended_bundle_is_refused() {
        let b = build("1.2.0");
        let bytes = std::fs::read(&b.path).expect("read");
        for (name, contents) in [
            ("short", bytes[..bytes.len() - 1].to_vec()),
            ("long", [bytes.as_slice(), b"x"].concat()),
            ("header", bytes[..30].to_vec()),
            ("other", b"PK\x03\x04 a zip file".to_vec()),
        ] {
            let path = b.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            let err = VerifiedBundle::open(&path, &trusted(&b.key))
                .err()
                .expect("refused");
            assert!(
                matches!(
                    err,
                    UpdateError::Damaged { .. } | UpdateError::NotABundle(_)
                ),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_signed_manifest_for_another_architecture_is_refused() {
        let b = build("1.2.0");
        let bytes = std::fs::read(&b.path).expect("read");
        let (json, _) =
            read_header(&mut File::open(&b.path).expect("open"), &b.path).expect("header");
        let mut m: Manifest = serde_json::from_slice(&json).expect("json");
        m.arch = "aarch64".into();
        let json2 = serde_json::to_vec(&m).expect("json");
        let sig = b.key.sign(&signed_message(&json2));
        let payloads = &bytes[MAGIC.len() + 4 + json.len() + SIGNATURE..];
        let len = (json2.len() as u32).to_be_bytes();
        let path = b.dir.path().join("arm.update");
        std::fs::write(&path, [&MAGIC[..], &len, &json2, &sig, payloads].concat()).expect("write");
        let err = VerifiedBundle::open(&path, &trusted(&b.key))
            .err()
            .expect("refused");
        assert!(matches!(err, UpdateError::WrongArch { .. }), "{err}");
    }
}

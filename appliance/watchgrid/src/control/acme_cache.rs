//! rustls-acme's directory cache with durable writes. Its own `DirCache` writes with
//! `fs::write`: a power cut can leave an empty or torn certificate or account key, and a
//! lost account key means a new ACME account (and rate limits) after the next boot. Same
//! file names as `DirCache`, so a cache it wrote is read as it is.

use async_trait::async_trait;
use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use rustls_acme::{AccountCache, CertCache};
use sha2::{Digest, Sha256};
use std::io;
use std::path::PathBuf;
use watchgrid_store::durable;

pub struct DurableDirCache {
    dir: PathBuf,
}

impl DurableDirCache {
    pub fn new(dir: PathBuf) -> DurableDirCache {
        DurableDirCache { dir }
    }

    /// `DirCache`'s naming: SHA-256 over each name followed by a zero byte, then the
    /// directory URL, in unpadded URL-safe base64.
    fn file_name(kind: &str, names: &[String], directory_url: &str) -> String {
        let mut hash = Sha256::new();
        for name in names {
            hash.update(name.as_bytes());
            hash.update([0]);
        }
        hash.update(directory_url.as_bytes());
        format!(
            "cached_{kind}_{}",
            BASE64_URL_SAFE_NO_PAD.encode(hash.finalize())
        )
    }

    async fn read(&self, file: String) -> io::Result<Option<Vec<u8>>> {
        let path = self.dir.join(file);
        let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
        match read.map_err(io::Error::other)? {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write(&self, file: String, contents: &[u8]) -> io::Result<()> {
        let dir = self.dir.clone();
        let contents = contents.to_vec();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            // Account and certificate keys: private to the daemon.
            durable::write_file(&dir.join(file), &contents, 0o600)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[async_trait]
impl CertCache for DurableDirCache {
    type EC = io::Error;
    async fn load_cert(&self, domains: &[String], url: &str) -> io::Result<Option<Vec<u8>>> {
        self.read(Self::file_name("cert", domains, url)).await
    }
    async fn store_cert(&self, domains: &[String], url: &str, cert: &[u8]) -> io::Result<()> {
        self.write(Self::file_name("cert", domains, url), cert)
            .await
    }
}

#[async_trait]
impl AccountCache for DurableDirCache {
    type EA = io::Error;
    async fn load_account(&self, contact: &[String], url: &str) -> io::Result<Option<Vec<u8>>> {
        self.read(Self::file_name("account", contact, url)).await
    }
    async fn store_account(&self, contact: &[String], url: &str, account: &[u8]) -> io::Result<()> {
        self.write(Self::file_name("account", contact, url), account)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_acme::caches::DirCache;

    const URL: &str = "https://acme.example/directory";

    #[tokio::test]
    async fn reads_what_dir_cache_wrote_and_writes_what_it_reads() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let theirs = DirCache::new(dir.path().to_path_buf());
        let ours = DurableDirCache::new(dir.path().to_path_buf());
        let domains = vec!["vpn.example".to_string(), "b.example".to_string()];
        let contact = vec!["mailto:ops@example".to_string()];

        theirs.store_cert(&domains, URL, b"cert-1").await?;
        assert_eq!(
            ours.load_cert(&domains, URL).await?.as_deref(),
            Some(&b"cert-1"[..])
        );
        ours.store_account(&contact, URL, b"account-1").await?;
        assert_eq!(
            theirs.load_account(&contact, URL).await?.as_deref(),
            Some(&b"account-1"[..])
        );
        assert_eq!(
            ours.load_cert(&contact, URL).await?,
            None,
            "other names, other file"
        );
        Ok(())
    }
}

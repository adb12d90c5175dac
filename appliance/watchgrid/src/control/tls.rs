//! The internal CA (like Caddy's `tls internal`): a root generated on first start and
//! kept in the data dir, and a leaf certificate for the appliance's names, reissued when
//! it nears expiry or misses a name it must cover. Clients trust the root (`/downloads/ca.crt`).

use crate::control::ca_scope::CaScope;
use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use watchgrid_store::durable;

const CA_NAME: &str = "Watchgrid internal CA";
/// The CA's name constraints, as data (see [`CaScope`]).
pub const CA_SCOPE_FILE: &str = "ca-scope.json";
/// Leaf lifetime, and how long before expiry it is replaced.
const LEAF_DAYS: i64 = 90;
const RENEW_BEFORE_DAYS: i64 = 30;

/// What the TLS listener serves and what the banner prints.
pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate being served, replaceable while running (leaf renewal).
    pub certs: Option<Arc<CertSwap>>,
    /// The internal CA root, offered at /downloads/ca.crt.
    pub ca_pem: Option<String>,
    /// SHA-256 of the leaf certificate (DER), as browsers show it.
    pub leaf_fingerprint: Option<String>,
    pub ca_fingerprint: Option<String>,
    /// The ACME order, when the certificate comes from ACME.
    pub acme: Option<Arc<crate::control::acme::AcmeProgress>>,
}

/// An operator-supplied certificate chain and key (PEM), the third TLS mode.
pub fn uploaded(cert: &Path, key: &Path) -> anyhow::Result<TlsMaterial> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow!("reading {}: {e:?}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("parsing {}: {e:?}", cert.display()))?;
    let first = chain
        .first()
        .ok_or_else(|| anyhow!("{} holds no certificate", cert.display()))?;
    let leaf_fingerprint = fingerprint(first);
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("reading the key {}: {e:?}", key.display()))?;
    let (config, certs) = server_config(chain, key_der)?;
    Ok(TlsMaterial {
        config,
        certs: Some(certs),
        ca_pem: None,
        leaf_fingerprint: Some(leaf_fingerprint),
        ca_fingerprint: None,
        acme: None,
    })
}

/// A certificate that can be replaced under a running listener.
#[derive(Debug)]
pub struct CertSwap(std::sync::RwLock<Arc<CertifiedKey>>);

impl CertSwap {
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        match self.0.write() {
            Ok(mut g) => *g = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|g| g.clone())
    }
}

impl ResolvesServerCert for CertSwap {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("unusable private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|e| anyhow!("the certificate does not match its key: {e}"))?;
    Ok(Arc::new(ck))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<CertSwap>)> {
    let certs = Arc::new(CertSwap(std::sync::RwLock::new(certified_key(chain, key)?)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), certs))
}

#[derive(Serialize, Deserialize, PartialEq)]
struct LeafInfo {
    names: Vec<String>,
    not_after: i64,
}

/// Durable and atomic (temporary file, fsync, rename, directory fsync): a power cut
/// leaves the old key or the new one, never an empty file.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    durable::write_file(path, contents.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Watchgrid");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn pem_to_der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("bad certificate PEM: {e:?}"))
}

/// Loads or creates the CA and a current leaf for `names` under `dir/tls`.
pub fn internal_ca(dir: &Path, names: &[String]) -> anyhow::Result<TlsMaterial> {
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
    let (ca_key, ca_pem, scope) = load_or_create_ca(&tls, names)?;
    let names = &in_scope(scope.as_ref(), names)?;
    let (leaf_key_path, leaf_cert_path, info_path) = (
        tls.join("leaf.key"),
        tls.join("leaf.crt"),
        tls.join("leaf.json"),
    );
    let now = OffsetDateTime::now_utc();
    let current: Option<LeafInfo> = fs::read(&info_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // A name the host no longer has (an IPv6 address that autoconfiguration has not
    // brought back yet at this start) does not need a new leaf; a name it lacks does.
    let fresh = current.as_ref().is_some_and(|i| {
        names.iter().all(|n| i.names.contains(n))
            && i.not_after - now.unix_timestamp() > RENEW_BEFORE_DAYS * 86400
    }) && leaf_key_path.exists()
        && leaf_cert_path.exists();
    if !fresh {
        issue_leaf(&tls, names, &ca_key)?;
    }
    let leaf_pem = fs::read_to_string(&leaf_cert_path)
        .with_context(|| format!("reading {}", leaf_cert_path.display()))?;
    let leaf_key_pem = fs::read_to_string(&leaf_key_path)
        .with_context(|| format!("reading {}", leaf_key_path.display()))?;
    let leaf_der = pem_to_der(&leaf_pem)?;
    let ca_der = pem_to_der(&ca_pem)?;
    let key_der = {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(leaf_key_pem.as_bytes())
            .map_err(|e| anyhow!("bad leaf key: {e:?}"))?
    };
    let leaf_fingerprint = fingerprint(&leaf_der);
    let ca_fingerprint = fingerprint(&ca_der);
    let (config, certs) = server_config(vec![leaf_der, ca_der], key_der)?;
    Ok(TlsMaterial {
        config,
        certs: Some(certs),
        ca_pem: Some(ca_pem),
        leaf_fingerprint: Some(leaf_fingerprint),
        ca_fingerprint: Some(ca_fingerprint),
        acme: None,
    })
}

/// The names of `names` the CA may vouch for; the others are left out of the leaf,
/// each with a warning. A CA made before name constraints existed has no scope file
/// and vouches for everything (until it is rotated).
fn in_scope(scope: Option<&CaScope>, names: &[String]) -> anyhow::Result<Vec<String>> {
    let Some(scope) = scope else {
        return Ok(names.to_vec());
    };
    let (inside, outside): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|n| scope.covers(n));
    for name in &outside {
        tracing::warn!(
            name,
            "the internal CA's name constraints do not cover this name, so the certificate \
             leaves it out; `watchgrid admin rotate-ca` makes a CA for the current names"
        );
    }
    if inside.is_empty() {
        anyhow::bail!(
            "the internal CA covers none of {names:?}; stop watchgrid and run `watchgrid admin rotate-ca`"
        );
    }
    Ok(inside)
}

/// The CA's key, certificate (PEM) and scope under `tls`, made on first use (ten
/// years) with name constraints for `names` ([`CaScope`]).
fn load_or_create_ca(
    tls: &Path,
    names: &[String],
) -> anyhow::Result<(KeyPair, String, Option<CaScope>)> {
    let (ca_key_path, ca_cert_path) = (tls.join("ca.key"), tls.join("ca.crt"));
    let scope_path = tls.join(CA_SCOPE_FILE);
    let (ca_key, scope) = if ca_key_path.exists() {
        let pem = fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        let key = KeyPair::from_pem(&pem)
            .with_context(|| format!("parsing {}", ca_key_path.display()))?;
        let scope = match fs::read(&scope_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", scope_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", scope_path.display())),
        };
        (key, scope)
    } else {
        let key = KeyPair::generate().context("generating the CA key")?;
        let scope = CaScope::for_names(names);
        let mut params = ca_params();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params.name_constraints = Some(scope.name_constraints());
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        // The scope first: a CA without its scope file would be taken for an old one.
        write_private(&scope_path, &serde_json::to_string(&scope)?)?;
        write_private(&ca_cert_path, &cert.pem())?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        tracing::info!(dns = ?scope.dns, "generated the internal CA, constrained to the appliance's names");
        (key, Some(scope))
    };
    let ca_pem = fs::read_to_string(&ca_cert_path)
        .with_context(|| format!("reading {}", ca_cert_path.display()))?;
    Ok((ca_key, ca_pem, scope))
}

/// Issues a leaf for `names` from the CA and writes it, its key and its facts under `tls`.
fn issue_leaf(tls: &Path, names: &[String], ca_key: &KeyPair) -> anyhow::Result<()> {
    let (leaf_key_path, leaf_cert_path, info_path) = (
        tls.join("leaf.key"),
        tls.join("leaf.crt"),
        tls.join("leaf.json"),
    );
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate().context("generating the leaf key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("certificate names")?;
    params.distinguished_name = DistinguishedName::new();
    // The CN is for display only, but OpenSSL checks a host-like CN against the CA's
    // DNS name constraints: an address there ("10.100.0.1") would fail them.
    if let Some(dns) = names
        .iter()
        .find(|n| n.parse::<std::net::IpAddr>().is_err())
    {
        params
            .distinguished_name
            .push(DnType::CommonName, dns.clone());
    }
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(LEAF_DAYS);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the leaf")?;
    write_private(&leaf_cert_path, &cert.pem())?;
    write_private(&leaf_key_path, &key.serialize_pem())?;
    let info = LeafInfo {
        names: names.to_vec(),
        not_after: params.not_after.unix_timestamp(),
    };
    write_private(&info_path, &serde_json::to_string(&info)?)?;
    tracing::info!(names = ?names, "issued a TLS certificate from the internal CA");
    Ok(())
}

/// Reissues the internal CA's leaf if it is within RENEW_BEFORE_DAYS of expiry and swaps
/// it in; the listener keeps running. Returns the new fingerprint when it changed.
pub fn renew_internal(
    dir: &Path,
    names: &[String],
    current: &CertSwap,
    fingerprint_now: &str,
) -> anyhow::Result<Option<String>> {
    let fresh = internal_ca(dir, names)?;
    let (Some(new_fp), Some(certs)) = (fresh.leaf_fingerprint, fresh.certs) else {
        return Ok(None);
    };
    if new_fp == fingerprint_now {
        return Ok(None);
    }
    let key = certs
        .current()
        .ok_or_else(|| anyhow!("certificate lock poisoned"))?;
    current.replace(key);
    Ok(Some(new_fp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_leaf_is_reused_until_a_name_is_missing() {
        let dir = tempfile_dir();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = internal_ca(&dir, &names).expect("first");
        let b = internal_ca(&dir, &names).expect("second");
        assert_eq!(a.ca_fingerprint, b.ca_fingerprint);
        assert_eq!(a.leaf_fingerprint, b.leaf_fingerprint);
        let fewer = internal_ca(&dir, &names[..1]).expect("a name gone");
        assert_eq!(
            a.leaf_fingerprint, fewer.leaf_fingerprint,
            "the leaf still covers every name"
        );
        let c = internal_ca(&dir, &["10.1.2.3".to_string()]).expect("a new LAN address");
        assert_eq!(a.ca_fingerprint, c.ca_fingerprint, "same CA");
        assert_ne!(
            a.leaf_fingerprint, c.leaf_fingerprint,
            "new leaf for new names"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn leaf_near_expiry_is_renewed_and_swapped_in() {
        let dir = tempfile_dir().join("renew");
        fs::create_dir_all(&dir).expect("mkdir");
        let names = vec!["localhost".to_string()];
        let a = internal_ca(&dir, &names).expect("first");
        let fp = a.leaf_fingerprint.clone().expect("fp");
        let swap = a.certs.clone().expect("swap");
        assert_eq!(
            renew_internal(&dir, &names, &swap, &fp).expect("renew"),
            None,
            "not due yet"
        );
        // Pretend the leaf expires in ten days.
        let info = LeafInfo {
            names: names.clone(),
            not_after: OffsetDateTime::now_utc().unix_timestamp() + 10 * 86400,
        };
        fs::write(
            dir.join("tls/leaf.json"),
            serde_json::to_vec(&info).expect("json"),
        )
        .expect("write");
        let new_fp = renew_internal(&dir, &names, &swap, &fp)
            .expect("renew")
            .expect("renewed");
        assert_ne!(new_fp, fp);
        let served = swap.current().expect("current").cert[0].clone();
        assert_eq!(
            fingerprint(&served),
            new_fp,
            "the listener now serves the new leaf"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// Verifies `leaf` for `name` the way a client that trusts only the CA does.
    fn verify(
        ca_pem: &str,
        leaf: &CertificateDer<'static>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem_to_der(ca_pem).expect("ca der"))
            .expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        verifier
            .verify_server_cert(leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn finding_13_a_leaf_for_another_site_from_the_ca_key_is_not_trusted() {
        let dir = tempfile_dir().join("scope");
        fs::create_dir_all(&dir).expect("mkdir");
        let names = vec!["vpn.example.com".to_string(), "192.168.1.50".to_string()];
        let ours = internal_ca(&dir, &names).expect("CA");
        let ca_pem = ours.ca_pem.clone().expect("ca pem");
        let leaf = ours.certs.expect("certs").current().expect("leaf").cert[0].clone();
        verify(&ca_pem, &leaf, "vpn.example.com").expect("our own name verifies");
        verify(&ca_pem, &leaf, "192.168.1.50").expect("our own address verifies");

        // What a thief of ca.key could sign: a certificate for someone else's site.
        let tls = dir.join("tls");
        let pem = fs::read_to_string(tls.join("ca.key")).expect("ca key");
        let ca_key = KeyPair::from_pem(&pem).expect("key");
        for foreign in ["bank.example", "8.8.8.8"] {
            issue_leaf(&tls, &[foreign.to_string()], &ca_key).expect("sign");
            let forged =
                pem_to_der(&fs::read_to_string(tls.join("leaf.crt")).expect("leaf")).expect("der");
            let refused = verify(&ca_pem, &forged, foreign);
            assert!(refused.is_err(), "a forged {foreign} certificate verified");
        }

        // Names outside the scope never reach a leaf; the rest still do.
        let later = vec!["vpn.example.com".into(), "bank.example".into()];
        let again = internal_ca(&dir, &later).expect("reissue");
        assert_eq!(again.ca_fingerprint, ours.ca_fingerprint, "same CA");
        let info: LeafInfo =
            serde_json::from_slice(&fs::read(tls.join("leaf.json")).expect("info")).expect("json");
        assert_eq!(info.names, ["vpn.example.com"]);
        let err = internal_ca(&dir, &["bank.example".to_string()])
            .err()
            .expect("nothing in scope");
        assert!(format!("{err:#}").contains("rotate-ca"), "{err:#}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wg-tls-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

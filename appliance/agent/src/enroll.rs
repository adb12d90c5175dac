//! `watchgrid agent enroll`: find the certificate to trust (by the operator's
//! fingerprint, or on first use when told to), generate the WireGuard key here, register
//! over a connection that checks the pin, and write the state. Nothing is written
//! before the hub is trusted, and a failed registration takes back what was written.

use crate::client::{ClientError, HubClient};
use crate::pin::{Fingerprint, Pinned, Recorder};
use crate::state::{Enrollment, StateDir, StateError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use watchgrid_core::Secret;
use watchgrid_store::Sensitive;

/// How the agent decides to trust the hub.
pub enum Trust {
    /// The fingerprint of the hub's CA or TLS certificate, from its console banner.
    Pin(Fingerprint),
    /// Whatever the hub presents now (its CA if it serves one); printed for checking.
    FirstUse,
}

pub struct EnrollRequest {
    pub server: String,
    pub token: Sensitive<String>,
    pub trust: Trust,
    pub allow_commands: bool,
    pub hostname: String,
    pub ssh: Option<crate::sshd::SshSettings>,
}

/// What enrollment established, for the operator to read.
pub struct Enrolled {
    pub device_id: String,
    pub address: String,
    /// The fingerprint of the certificate now trusted, and whether it is a CA.
    pub trusted: Fingerprint,
    pub trusted_is_ca: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{dir} is already enrolled with {server} as {device_id}; nothing changed (to enroll again, stop the agent and remove {dir})")]
    AlreadyEnrolled {
        dir: String,
        server: String,
        device_id: String,
    },
    #[error("the hub's certificates do not match {expected}: it presented {presented}; nothing was sent or stored")]
    PinMismatch {
        expected: Fingerprint,
        presented: String,
    },
    #[error("no --ca-fingerprint given: pass the fingerprint the hub's console shows, or --insecure-first-use to trust what the hub presents now")]
    NoTrust,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("--ssh-host-cert: {0}; nothing was sent or stored")]
    Ssh(#[from] crate::sshd::SshdError),
}

pub async fn enroll(dir: &StateDir, req: EnrollRequest) -> Result<Enrolled, EnrollError> {
    if dir.is_enrolled() {
        let e = dir.enrollment()?;
        return Err(EnrollError::AlreadyEnrolled {
            dir: dir.path().display().to_string(),
            server: e.server,
            device_id: e.config.device_id,
        });
    }
    if let Some(ssh) = &req.ssh {
        ssh.check()?;
    }
    let (anchor, is_ca) = find_anchor(&req.server, &req.trust).await?;
    let client = HubClient::new(&req.server, Pinned::new(anchor.clone()))?;
    let key = Secret::generate_private();
    let created = dir.create()?;
    let registered = async {
        dir.write_private_key(&key)?;
        let public = key.public_key().to_string();
        let reg = client
            .register(
                req.token.expose(),
                &public,
                &req.hostname,
                req.allow_commands,
            )
            .await?;
        dir.save_enrollment(&Enrollment {
            server: client.base().to_string(),
            pinned_cert_hex: hex::encode(anchor.as_ref()),
            agent_key: reg.agent_key,
            allow_commands: req.allow_commands,
            enrolled_at: crate::unix_now(),
            config: reg.config.clone(),
            config_etag: None,
            ssh: req.ssh.clone(),
        })?;
        Ok::<_, EnrollError>(reg.config)
    }
    .await;
    match registered {
        Ok(config) => Ok(Enrolled {
            device_id: config.device_id,
            address: config.address,
            trusted: Fingerprint::of(anchor.as_ref()),
            trusted_is_ca: is_ca,
        }),
        Err(e) => {
            dir.undo_enrollment(created);
            Err(e)
        }
    }
}

/// Looks at the hub without trusting it: its TLS chain and the CA it serves at
/// `/downloads/ca.crt`. Returns the certificate to pin and whether it is the CA.
async fn find_anchor(
    server: &str,
    trust: &Trust,
) -> Result<(CertificateDer<'static>, bool), EnrollError> {
    let recorder = Recorder::new();
    let probe = HubClient::new(server, recorder.clone())?;
    let (status, body) = probe.get_bytes("/downloads/ca.crt").await?;
    let chain = recorder.chain();
    let ca = status
        .is_success()
        .then(|| CertificateDer::from_pem_slice(&body).ok())
        .flatten();
    match trust {
        Trust::Pin(want) => {
            if let Some(ca) = ca.as_ref().filter(|c| Fingerprint::of(c) == *want) {
                return Ok((ca.clone(), true));
            }
            if let Some(pos) = chain.iter().position(|c| Fingerprint::of(c) == *want) {
                return Ok((chain[pos].clone(), pos > 0));
            }
            let mut presented: Vec<String> = chain
                .iter()
                .map(|c| format!("TLS {}", Fingerprint::of(c)))
                .collect();
            presented.extend(ca.iter().map(|c| format!("CA {}", Fingerprint::of(c))));
            Err(EnrollError::PinMismatch {
                expected: *want,
                presented: presented.join(", "),
            })
        }
        Trust::FirstUse => match (ca, chain.first()) {
            (Some(ca), _) => Ok((ca, true)),
            (None, Some(leaf)) => Ok((leaf.clone(), false)),
            (None, None) => Err(ClientError::Transport("no certificate seen".into()).into()),
        },
    }
}

/// This machine's name as registration takes it: letters, digits, '-' and '.', at
/// most 63 characters.
pub fn default_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(63)
        .collect();
    if clean.is_empty() {
        "agent".to_string()
    } else {
        clean
    }
}

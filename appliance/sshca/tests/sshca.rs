//! The CA's keys survive a restart and overlap in a rotation; certificates carry what
//! was asked and validate against the CA; bad requests are refused before signing.

use watchgrid_sshca::{CertKind, CertRequest, SshCa, SshCaError};

const NOW: u64 = 1_800_000_000;

fn subject() -> String {
    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("key");
    key.public_key().to_openssh().expect("openssh")
}

fn request(public_key: String) -> CertRequest {
    CertRequest {
        kind: CertKind::User,
        public_key,
        principals: vec!["alice".into(), "deploy".into()],
        valid_after: NOW - 60,
        valid_before: NOW + 3600,
        serial: 42,
        key_id: "alice@laptop".into(),
    }
}

#[test]
fn a_user_certificate_carries_the_request_and_validates_against_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = SshCa::open_or_create(&dir.path().join("ssh"), NOW).expect("ca");
    let issued = ca.sign(&request(subject()), NOW).expect("sign");
    let cert = ssh_key::Certificate::from_openssh(&issued.certificate).expect("parse");
    assert_eq!(cert.serial(), 42);
    assert_eq!(cert.key_id(), "alice@laptop");
    assert_eq!(cert.valid_principals(), ["alice", "deploy"]);
    assert_eq!(cert.cert_type(), ssh_key::certificate::CertType::User);
    assert!(cert.extensions().contains_key("permit-pty"));
    let ca_fp: ssh_key::Fingerprint = issued.ca_fingerprint.parse().expect("fingerprint");
    cert.validate_at(NOW, [&ca_fp])
        .expect("valid now under the CA");
    assert!(
        cert.validate_at(NOW + 7200, [&ca_fp]).is_err(),
        "valid after its end"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(format!("ssh/ca-{NOW}.key")))
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn keys_survive_a_restart_and_a_rotation_trusts_both_until_the_old_is_retired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ssh");
    let first = SshCa::open_or_create(&path, NOW).expect("ca").keys();
    let again = SshCa::open_or_create(&path, NOW + 10)
        .expect("reopen")
        .keys();
    assert_eq!(first, again, "a restart made a new CA");

    let ca = SshCa::open_or_create(&path, NOW + 20).expect("ca");
    let new = ca.rotate(NOW + 30).expect("rotate");
    let keys = ca.keys();
    assert_eq!(keys.len(), 2);
    assert!(keys[1].signing && !keys[0].signing);
    assert_eq!(ca.authorized_lines().lines().count(), 2);
    assert!(ca
        .known_hosts_lines()
        .lines()
        .all(|l| l.starts_with("@cert-authority * ssh-ed25519 ")));
    let issued = ca.sign(&request(subject()), NOW + 30).expect("sign");
    assert_eq!(issued.ca_fingerprint, new.fingerprint, "the new key signs");

    match ca.retire(&new.fingerprint) {
        Err(SshCaError::Conflict(_)) => {}
        other => panic!("retiring the signing key: {other:?}"),
    }
    ca.retire(&keys[0].fingerprint).expect("retire the old one");
    let reopened = SshCa::open_or_create(&path, NOW + 40)
        .expect("reopen")
        .keys();
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened[0].fingerprint, new.fingerprint);
}

#[test]
fn requests_without_principals_backwards_too_long_or_with_a_bad_key_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = SshCa::open_or_create(&dir.path().join("ssh"), NOW).expect("ca");
    let mut cases = Vec::new();
    let mut r = request(subject());
    r.principals.clear();
    cases.push(("no principals", r));
    let mut r = request(subject());
    r.principals = vec!["a,b".into()];
    cases.push(("a comma", r));
    let mut r = request(subject());
    r.principals = vec!["*".into()];
    cases.push(("a wildcard", r));
    let mut r = request(subject());
    r.valid_before = r.valid_after;
    cases.push(("empty window", r));
    let mut r = request(subject());
    r.valid_before = r.valid_after + 366 * 86_400;
    cases.push(("over a year", r));
    let mut r = request(subject());
    r.valid_after = NOW - 31 * 86_400;
    r.valid_before = NOW;
    cases.push(("too far back", r));
    cases.push(("not a key", request("ssh-ed25519 AAAAnotbase64".into())));
    for (what, r) in cases {
        match ca.sign(&r, NOW) {
            Err(SshCaError::Invalid(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn the_krl_lists_each_trusted_cas_serials_in_openssh_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = SshCa::open_or_create(&dir.path().join("ssh"), NOW).expect("ca");
    let krl = ca.krl(&[7, 3, 7], 5, NOW).expect("krl");
    assert!(krl.starts_with(b"SSHKRL\n\0"));
    // Header: magic 8, format 4, version 8, date 8, flags 8, reserved 4, comment 4+9.
    let header = 8 + 4 + 8 + 8 + 8 + 4 + 4 + 9;
    assert_eq!(krl[header], 1, "a certificate section");
    let tail = &krl[krl.len() - 16..];
    assert_eq!(
        tail,
        [3u64.to_be_bytes(), 7u64.to_be_bytes()].concat(),
        "sorted, once each"
    );
    assert_eq!(
        ca.krl(&[], 1, NOW).expect("krl").len(),
        header,
        "no serials, no sections"
    );
}

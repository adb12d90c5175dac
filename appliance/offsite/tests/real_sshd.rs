//! Uploads to OpenSSH's own sshd (its internal-sftp), run on 127.0.0.1 with a config,
//! host key and authorized_keys of this test's own. Needs root (sshd's privilege
//! separation) and openssh-server, as the CI machine has.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use watchgrid_offsite::{probe, upload, ClientKey, OffsiteError, PinnedHostKey, Target};

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    host_key_line: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_path() -> PathBuf {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("sshd is installed (openssh-server)")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("its address").port()
}

/// sshd accepting `authorized` (authorized_keys lines) for root.
fn start_sshd(authorized: &str) -> Sshd {
    let dir = tempfile::tempdir().expect("a temp dir");
    let host_key = dir.path().join("host_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&host_key)
        .status()
        .expect("ssh-keygen runs");
    assert!(made.success());
    let host_key_line = std::fs::read_to_string(host_key.with_extension("pub"))
        .expect("the host public key")
        .trim()
        .to_string();
    let auth = dir.path().join("authorized_keys");
    std::fs::write(&auth, authorized).expect("writing authorized_keys");
    std::fs::create_dir(dir.path().join("backups")).expect("the remote dir");
    let port = free_port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             Subsystem sftp internal-sftp\nPidFile none\n",
            host_key.display(),
            auth.display()
        ),
    )
    .expect("writing sshd_config");
    // sshd's privilege-separation directory, as openssh-server's unit creates it. It
    // stays: the tests here run side by side, and one removing it would break another.
    std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
    let child = Command::new(sshd_path())
        .arg("-D")
        .arg("-E")
        .arg(dir.path().join("sshd.log"))
        .arg("-f")
        .arg(&config)
        .spawn()
        .expect("sshd starts");
    let sshd = Sshd {
        child,
        port,
        dir,
        host_key_line,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not listen: {}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sshd
}

impl Sshd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    fn target(&self, host_key: &str, dir: &Path) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            dir: dir.display().to_string(),
            host_key: PinnedHostKey::parse(host_key).expect("a host key"),
        }
    }

    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.backups())
            .expect("the remote dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

fn key(n: u8) -> ClientKey {
    ClientKey::from_seed(&[n; 32], "watchgrid-backup@test")
}

/// A backup-sized payload that is not one repeated byte.
fn payload() -> Vec<u8> {
    (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test]
async fn a_copy_arrives_whole_under_its_name_and_replaces_an_earlier_one() {
    let key = key(1);
    let sshd = start_sshd(&key.authorized_line());
    let target = sshd.target(&sshd.host_key_line, &sshd.backups());
    let bytes = payload();
    let done = upload(&target, &key, "watchgrid-1.wgbackup", &bytes)
        .await
        .unwrap_or_else(|e| panic!("upload: {e}\n{}", sshd.log()));
    assert_eq!(done.bytes, bytes.len() as u64);
    let stored = std::fs::read(sshd.backups().join("watchgrid-1.wgbackup")).expect("the copy");
    assert!(stored == bytes, "the copy differs from what was sent");
    assert_eq!(sshd.listing(), vec!["watchgrid-1.wgbackup"]);

    upload(&target, &key, "watchgrid-1.wgbackup", b"second")
        .await
        .expect("the same name again");
    let again = std::fs::read(sshd.backups().join("watchgrid-1.wgbackup")).expect("the copy");
    assert_eq!(again, b"second");
    assert_eq!(sshd.listing(), vec!["watchgrid-1.wgbackup"]);

    let said = probe(&target, &key).await.expect("the probe");
    assert!(said.contains("root"), "{said}");
    assert_eq!(
        sshd.listing(),
        vec!["watchgrid-1.wgbackup"],
        "the probe cleans up"
    );
}

#[tokio::test]
async fn a_server_with_another_host_key_gets_nothing() {
    let key = key(2);
    let sshd = start_sshd(&key.authorized_line());
    let other = start_sshd("");
    let target = sshd.target(&other.host_key_line, &sshd.backups());
    let err = upload(&target, &key, "watchgrid-2.wgbackup", b"secret")
        .await
        .expect_err("a key that is not pinned");
    let real = PinnedHostKey::parse(&sshd.host_key_line).expect("a key");
    match &err {
        OffsiteError::HostKeyMismatch {
            presented, pinned, ..
        } => {
            assert_eq!(
                presented,
                &real.fingerprints()[0],
                "names the key presented"
            );
            assert_ne!(pinned, presented);
        }
        other => panic!("expected a host key mismatch, got {other}"),
    }
    assert!(sshd.listing().is_empty());
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "the client signed in to an unpinned server: {}",
        sshd.log()
    );
}

#[tokio::test]
async fn an_unauthorized_key_and_a_missing_directory_are_named() {
    let known = key(3);
    let sshd = start_sshd(&known.authorized_line());
    let target = sshd.target(&sshd.host_key_line, &sshd.backups());
    let stranger = key(4);
    match upload(&target, &stranger, "watchgrid-3.wgbackup", b"x").await {
        Err(OffsiteError::AuthRefused { fingerprint, .. }) => {
            assert_eq!(fingerprint, stranger.fingerprint());
        }
        other => panic!("expected a refused sign-in, got {other:?}"),
    }
    let missing = sshd.target(&sshd.host_key_line, &sshd.dir.path().join("nowhere"));
    let err = upload(&missing, &known, "watchgrid-3.wgbackup", b"x")
        .await
        .expect_err("a directory that does not exist");
    assert!(
        matches!(&err, OffsiteError::Sftp { step, .. } if step.contains("nowhere")),
        "{err}"
    );
    assert!(probe(&missing, &known).await.is_err());
    assert!(sshd.listing().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let sshd_less = Target {
        host: "127.0.0.1".into(),
        port: free_port(),
        user: "root".into(),
        dir: "/tmp".into(),
        host_key: PinnedHostKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIaSm1a12YtuYLZw4vHixGfKIiksPtc0T2afO+eXjnVX",
        )
        .expect("a key"),
    };
    let err = upload(&sshd_less, &key(5), "watchgrid-5.wgbackup", b"x")
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, OffsiteError::Connect { .. }), "{err}");
}

use super::*;
use serde_json::json;
use watchgrid_logstore::MAX_MESSAGE;

/// journalctl 252 (Debian 12), `-o json --all`, an sshd login.
const SSHD: &str = r#"{"__CURSOR":"s=5e4c6d3f0b1a4b2c9d8e7f6a5b4c3d2e;i=1a2b;b=0f1e2d3c4b5a69788796a5b4c3d2e1f0;m=3c4d5e6f;t=6128a3c5f2e40;x=9a8b7c6d5e4f3a2b","__REALTIME_TIMESTAMP":"1709287502123456","__MONOTONIC_TIMESTAMP":"1012345678","_BOOT_ID":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","_MACHINE_ID":"4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d","_HOSTNAME":"deb12","PRIORITY":"6","SYSLOG_FACILITY":"4","SYSLOG_IDENTIFIER":"sshd","SYSLOG_PID":"1234","SYSLOG_TIMESTAMP":"Mar  1 10:05:02 ","_PID":"1234","_UID":"0","_GID":"0","_COMM":"sshd","_EXE":"/usr/sbin/sshd","_CMDLINE":"sshd: alice [priv]","_CAP_EFFECTIVE":"1ffffffffff","_SYSTEMD_CGROUP":"/system.slice/ssh.service","_SYSTEMD_UNIT":"ssh.service","_SYSTEMD_SLICE":"system.slice","_SYSTEMD_INVOCATION_ID":"8c1e5b2a9d3f4e6a8b7c6d5e4f3a2b1c","_TRANSPORT":"syslog","_SOURCE_REALTIME_TIMESTAMP":"1709287502123400","MESSAGE":"Accepted publickey for alice from 192.0.2.10 port 50522 ssh2: ED25519 SHA256:Xb3n8v1Tt3uQ1k3zZr2cX9u5y0qJxjM9aLwYdE1tKqA"}"#;

const CURSOR: &str = "s=5e4c6d3f0b1a4b2c9d8e7f6a5b4c3d2e;i=1a2c;b=0f1e2d3c4b5a69788796a5b4c3d2e1f0;m=3c4d5e70;t=6128a3c5f2e41;x=1b2c3d4e5f6a7b8c";

/// An entry with the usual fields, `extra` over them.
fn entry(extra: serde_json::Value) -> Vec<u8> {
    let mut e = json!({
        "__CURSOR": CURSOR,
        "__REALTIME_TIMESTAMP": "1709287503000000",
        "__MONOTONIC_TIMESTAMP": "1013222333",
        "_BOOT_ID": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "_HOSTNAME": "deb12",
        "_TRANSPORT": "syslog",
        "PRIORITY": "6",
        "_PID": "4321",
    });
    if let (Some(map), serde_json::Value::Object(more)) = (e.as_object_mut(), extra) {
        map.extend(more);
    }
    serde_json::to_vec(&e).expect("json")
}

fn record(line: &[u8]) -> Record {
    parse_line(line).expect("parses").record.expect("a record")
}

#[test]
fn an_sshd_entry_becomes_a_record_and_a_login() {
    let parsed = parse_line(SSHD.as_bytes()).expect("parses");
    assert_eq!(
        parsed.cursor.as_deref(),
        Some("s=5e4c6d3f0b1a4b2c9d8e7f6a5b4c3d2e;i=1a2b;b=0f1e2d3c4b5a69788796a5b4c3d2e1f0;m=3c4d5e6f;t=6128a3c5f2e40;x=9a8b7c6d5e4f3a2b")
    );
    let r = parsed.record.expect("a record");
    assert_eq!(
        r.ts_us, 1_709_287_502_123_456,
        "journald's clock, not the sender's"
    );
    assert_eq!(r.source, "journal");
    assert_eq!(r.unit.as_deref(), Some("ssh.service"));
    assert_eq!(r.priority, Some(6));
    assert!(r
        .message
        .starts_with("Accepted publickey for alice from 192.0.2.10"));
    assert!(!r.truncated);
    let login = login::parse(&r).expect("a login");
    assert_eq!(
        (login.user.as_str(), login.service.as_str()),
        ("alice", "sshd")
    );
}

#[test]
fn a_binary_message_is_an_array_of_bytes() {
    // "hi", an invalid byte, " ok" — how journalctl prints a non-UTF-8 MESSAGE.
    let r = record(&entry(json!({
        "SYSLOG_IDENTIFIER": "app", "MESSAGE": [104, 105, 255, 32, 111, 107]
    })));
    assert_eq!(r.message, "hi\u{FFFD} ok");
    assert!(!r.truncated);
    // Control characters too come as bytes.
    let r = record(&entry(
        json!({"MESSAGE": [27, 91, 51, 49, 109, 114, 101, 100]}),
    ));
    assert_eq!(r.message, "\u{1b}[31mred");
}

#[test]
fn a_repeated_field_counts_by_its_first_value() {
    let r = record(&entry(json!({
        "MESSAGE": ["first", "second"], "SYSLOG_IDENTIFIER": [[97, 255], "b"], "PRIORITY": ["3", "6"]
    })));
    assert_eq!(r.message, "first");
    assert_eq!(r.unit.as_deref(), Some("a\u{FFFD}"));
    assert_eq!(r.priority, Some(3));
}

#[test]
fn a_withheld_or_missing_message() {
    let r = record(&entry(json!({"MESSAGE": null})));
    assert_eq!((r.message.as_str(), r.truncated), ("", true));
    let parsed =
        parse_line(&entry(json!({"SYSLOG_IDENTIFIER": "systemd-coredump"}))).expect("parses");
    assert_eq!(parsed.record, None, "no message, no record");
    assert_eq!(
        parsed.cursor.as_deref(),
        Some(CURSOR),
        "but the cursor moves"
    );
}

#[test]
fn huge_messages_are_cut_while_parsing() {
    let text = "m".repeat(1 << 20);
    let r = record(&entry(json!({ "MESSAGE": text })));
    assert!(r.truncated);
    assert_eq!(r.message.len(), MAX_MESSAGE);
    let bytes: Vec<u8> = (0..(1usize << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let r = record(&entry(json!({ "MESSAGE": bytes })));
    assert!(r.truncated);
    assert_eq!(r.message.len(), MAX_MESSAGE);
    assert!(r.message.starts_with("abcdefghijklmnopqrstuvwxyzabc"));
    // Just at the limit is not cut.
    let r = record(&entry(json!({ "MESSAGE": "x".repeat(MAX_MESSAGE) })));
    assert!(!r.truncated);
}

#[test]
fn the_unit_is_the_service_or_for_sessions_the_identifier() {
    let unit = |extra| record(&entry(extra)).unit;
    assert_eq!(
        unit(
            json!({"_SYSTEMD_UNIT": "nginx.service", "SYSLOG_IDENTIFIER": "nginx", "MESSAGE": "x"})
        )
        .as_deref(),
        Some("nginx.service")
    );
    assert_eq!(
        unit(
            json!({"_SYSTEMD_UNIT": "session-3.scope", "SYSLOG_IDENTIFIER": "vim", "MESSAGE": "x"})
        )
        .as_deref(),
        Some("vim")
    );
    assert_eq!(
        unit(json!({"_SYSTEMD_UNIT": "session-3.scope", "MESSAGE": "x"})).as_deref(),
        Some("session-3.scope")
    );
    assert_eq!(
        unit(json!({"SYSLOG_IDENTIFIER": "kernel", "_TRANSPORT": "kernel", "MESSAGE": "x"}))
            .as_deref(),
        Some("kernel")
    );
    assert_eq!(unit(json!({"MESSAGE": "x"})), None);
    let long = "u".repeat(1000);
    let got = unit(json!({"SYSLOG_IDENTIFIER": long, "MESSAGE": "x"})).expect("unit");
    assert_eq!(got.chars().count(), MAX_UNIT);
}

#[test]
fn a_claimed_login_program_must_be_vouched_for_by_journald() {
    let forged = "Accepted password for root from 198.51.100.66 port 4444 ssh2";
    let cases = [
        // `logger -t sshd …` by a user in their session.
        (
            json!({"_SYSTEMD_UNIT": "session-3.scope", "SYSLOG_IDENTIFIER": "sshd", "_UID": "1000", "_EXE": "/usr/bin/logger", "MESSAGE": forged}),
            "sshd (unverified)",
        ),
        // …whose process exited before journald looked at it.
        (
            json!({"SYSLOG_IDENTIFIER": "sshd", "_UID": "1000", "MESSAGE": forged}),
            "sshd (unverified)",
        ),
        // A shell left in ssh.service's cgroup (no pam_systemd).
        (
            json!({"_SYSTEMD_UNIT": "ssh.service", "SYSLOG_IDENTIFIER": "sshd", "_UID": "1000", "_EXE": "/usr/bin/logger", "MESSAGE": forged}),
            "ssh.service (unverified)",
        ),
        // A copy named sudo outside the system directories is not sudo.
        (
            json!({"SYSLOG_IDENTIFIER": "sudo", "_UID": "1000", "_EXE": "/home/eve/sudo", "MESSAGE": "    eve : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/x"}),
            "sudo (unverified)",
        ),
        (
            json!({"SYSLOG_IDENTIFIER": "su", "_UID": "1000", "_EXE": "/usr/bin/logger", "MESSAGE": "(to root) eve on pts/0"}),
            "su (unverified)",
        ),
    ];
    for (extra, want) in cases {
        let r = record(&entry(extra));
        assert_eq!(r.unit.as_deref(), Some(want));
        assert!(login::parse(&r).is_none(), "{r:?}");
    }
    let real = [
        (
            json!({"_SYSTEMD_UNIT": "session-3.scope", "SYSLOG_IDENTIFIER": "su", "_UID": "1000", "_EXE": "/usr/bin/su", "MESSAGE": "(to root) alice on pts/0"}),
            "su",
        ),
        (
            json!({"_SYSTEMD_UNIT": "session-3.scope", "SYSLOG_IDENTIFIER": "sudo", "_UID": "0", "_EXE": "/usr/bin/sudo", "PRIORITY": "5", "MESSAGE": "    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"}),
            "sudo",
        ),
        (
            json!({"_SYSTEMD_UNIT": "getty@tty1.service", "SYSLOG_IDENTIFIER": "login", "_UID": "0", "_EXE": "/usr/bin/login", "MESSAGE": "pam_unix(login:session): session opened for user root(uid=0) by LOGIN(uid=0)"}),
            "getty@tty1.service",
        ),
    ];
    for (extra, want) in real {
        let r = record(&entry(extra));
        assert_eq!(r.unit.as_deref(), Some(want));
        assert!(login::parse(&r).is_some(), "{r:?}");
    }
}

#[test]
fn malformed_lines_are_errors_and_odd_priorities_unknown() {
    assert!(parse_line(b"not json").is_err());
    assert!(parse_line(br#"{"MESSAGE": [300]}"#).is_err());
    let r = record(&entry(json!({"MESSAGE": "x", "PRIORITY": "9"})));
    assert_eq!(r.priority, None);
    let r = record(br#"{"MESSAGE":"no timestamp"}"#);
    assert!(r.ts_us > 1_600_000_000_000_000, "read time instead");
}

#[test]
fn the_filter_drops_debug_and_listed_units_but_never_logins() {
    let f = Filter::default();
    let at = |unit: &str, priority: Option<u8>, message: &str| Record {
        ts_us: 1,
        source: "journal".into(),
        unit: Some(unit.into()),
        priority,
        message: message.into(),
        truncated: false,
    };
    assert!(f.keep(&at("nginx.service", Some(6), "info")));
    assert!(f.keep(&at("nginx.service", None, "no priority")));
    assert!(!f.keep(&at("nginx.service", Some(7), "debug")));
    let file = Record {
        source: "/var/log/app.log".into(),
        unit: None,
        ..at("", Some(7), "x")
    };
    assert!(f.keep(&file), "files are not filtered");
    let login_line = "Failed password for root from 192.0.2.1 port 22 ssh2";
    assert!(f.keep(&at("ssh.service", Some(7), login_line)));
    let f = Filter {
        priority_max: 4,
        include_units: vec!["nginx.service".into(), "cron*".into()],
        exclude_units: vec!["cron-noisy.service".into()],
    };
    assert!(f.keep(&at("nginx.service", Some(3), "err")));
    assert!(!f.keep(&at("nginx.service", Some(5), "notice")));
    assert!(f.keep(&at("cron.service", Some(3), "err")));
    assert!(!f.keep(&at("cron-noisy.service", Some(3), "err")));
    assert!(!f.keep(&at("postfix.service", Some(3), "err")));
    assert!(
        f.keep(&at("ssh.service", Some(6), login_line)),
        "logins pass any filter"
    );
}

#[tokio::test]
async fn lines_are_read_with_a_cap() {
    let mut input: &[u8] = b"short\n";
    let mut buf = Vec::new();
    assert_eq!(
        read_capped_line(&mut input, &mut buf, 10)
            .await
            .expect("read"),
        LineRead::Line
    );
    assert_eq!(buf, b"short");
    let mut input2: &[u8] = b"this one is too long\nok\n";
    let mut buf2 = Vec::new();
    assert_eq!(
        read_capped_line(&mut input2, &mut buf2, 10)
            .await
            .expect("read"),
        LineRead::Overlong
    );
    assert!(buf2.is_empty());
    assert_eq!(
        read_capped_line(&mut input2, &mut buf2, 10)
            .await
            .expect("read"),
        LineRead::Line
    );
    assert_eq!(buf2, b"ok");
    assert_eq!(
        read_capped_line(&mut input2, &mut buf2, 10)
            .await
            .expect("read"),
        LineRead::Eof
    );
    let mut input3: &[u8] = b"\nunfinished";
    assert_eq!(
        read_capped_line(&mut input3, &mut buf2, 10)
            .await
            .expect("read"),
        LineRead::Line
    );
    assert!(buf2.is_empty());
    assert_eq!(
        read_capped_line(&mut input3, &mut buf2, 10)
            .await
            .expect("read"),
        LineRead::Eof
    );
}

#[test]
fn cursors_and_arguments() {
    assert!(plausible_cursor(CURSOR));
    for bad in ["", "--output=cat", "s=1 i=2", "s=1;\n", &"s=1".repeat(200)] {
        assert!(!plausible_cursor(bad), "{bad:?}");
    }
    let args = JournalSource::new(None).args();
    assert_eq!(
        args,
        [
            "--output=json",
            "--follow",
            "--no-pager",
            "--all",
            "--lines=0"
        ]
    );
    let args = JournalSource::new(Some(CURSOR.into())).args();
    assert_eq!(
        args[args.len() - 2..],
        ["--no-tail".to_string(), format!("--after-cursor={CURSOR}")]
    );
    let args = JournalSource::new(None)
        .in_directory(Some("/srv/ct/var/log/journal".into()))
        .args();
    assert!(args.contains(&"--directory=/srv/ct/var/log/journal".to_string()));
    let src = JournalSource::new(Some("--since=yesterday".into()));
    assert_eq!(src.cursor(), None, "a malformed cursor is not passed on");
}

#[tokio::test]
async fn a_missing_journalctl_is_a_clear_error() {
    let mut src = JournalSource::with_program("/nonexistent/journalctl", None);
    let err = src.next().await.expect_err("no journalctl");
    assert!(matches!(err, JournalError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("not found"));
}

#[tokio::test]
async fn journalctl_is_followed_and_restarted_from_the_last_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("journalctl");
    let args = dir.path().join("args");
    let mut entries = SSHD.as_bytes().to_vec();
    entries.push(b'\n');
    entries.extend(entry(json!({"SYSLOG_IDENTIFIER": "systemd-coredump"})));
    entries.push(b'\n');
    std::fs::write(dir.path().join("entries.jsonl"), &entries).expect("entries");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncat {}\n",
            args.display(),
            dir.path().join("entries.jsonl").display()
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let mut src = JournalSource::with_program(&script, None);
    let (r, position) = next_in_time(&mut src).await;
    assert!(r.message.starts_with("Accepted publickey"));
    assert!(position.contains("i=1a2b"));
    // The entry without a message moves the cursor; the script then exits, and
    // journalctl is started again after the last cursor.
    let (again, position) = next_in_time(&mut src).await;
    assert_eq!(
        again.message, r.message,
        "the fake journalctl prints the same again"
    );
    assert!(position.contains("i=1a2b"));
    let calls = std::fs::read_to_string(&args).expect("args");
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls[0],
        "--output=json --follow --no-pager --all --lines=0"
    );
    assert_eq!(
        calls[1],
        format!("--output=json --follow --no-pager --all --no-tail --after-cursor={CURSOR}")
    );
}

async fn next_in_time(src: &mut JournalSource) -> (Record, String) {
    tokio::time::timeout(std::time::Duration::from_secs(10), src.next())
        .await
        .expect("in time")
        .expect("a record")
}

use super::*;
use LoginOutcome::*;

fn journal(unit: &str, message: &str) -> Record {
    Record {
        ts_us: 1_700_000_000_000_000,
        source: "journal".into(),
        unit: (!unit.is_empty()).then(|| unit.to_string()),
        priority: Some(6),
        message: message.into(),
        truncated: false,
    }
}

fn file(line: &str) -> Record {
    Record {
        source: "/var/log/auth.log".into(),
        unit: None,
        priority: None,
        ..journal("", line)
    }
}

/// (outcome, user, ip, port, method, service)
type Want = (
    LoginOutcome,
    &'static str,
    Option<&'static str>,
    Option<u16>,
    Option<&'static str>,
    &'static str,
);

fn check(r: &Record, want: Option<Want>) {
    let got = parse(r);
    let Some((outcome, user, ip, port, method, service)) = want else {
        assert!(got.is_none(), "{:?} read as {got:?}", r.message);
        return;
    };
    let got = got.unwrap_or_else(|| panic!("{:?} not read as a login", r.message));
    assert_eq!(got.outcome, outcome, "{:?}", r.message);
    assert_eq!(got.user, user, "{:?}", r.message);
    assert_eq!(
        got.source_ip,
        ip.map(|i| i.parse().expect("test ip")),
        "{:?}",
        r.message
    );
    assert_eq!(got.source_port, port, "{:?}", r.message);
    assert_eq!(got.method.as_deref(), method, "{:?}", r.message);
    assert_eq!(got.service, service, "{:?}", r.message);
    assert_eq!(got.raw.as_deref(), Some(r.message.as_str()));
    assert_eq!(got.ts_us, r.ts_us);
}

#[test]
fn debian_12_journal_lines() {
    let ip = Some("203.0.113.9");
    let cases: &[(&str, &str, Option<Want>)] = &[
        ("ssh.service", "Accepted publickey for alice from 192.0.2.10 port 50522 ssh2: ED25519 SHA256:Xb3n8v1Tt3uQ1k3zZr2cX9u5y0qJxjM9aLwYdE1tKqA",
            Some((Accepted, "alice", Some("192.0.2.10"), Some(50522), Some("publickey"), "sshd"))),
        ("ssh.service", "Accepted password for root from 2001:db8::7 port 41230 ssh2",
            Some((RootSession, "root", Some("2001:db8::7"), Some(41230), Some("password"), "sshd"))),
        ("sshd", "Accepted keyboard-interactive/pam for bob from 198.51.100.4 port 2222 ssh2",
            Some((Accepted, "bob", Some("198.51.100.4"), Some(2222), Some("keyboard-interactive"), "sshd"))),
        ("ssh.service", "Failed password for alice from 203.0.113.9 port 55012 ssh2",
            Some((Failed, "alice", ip, Some(55012), Some("password"), "sshd"))),
        ("ssh.service", "Failed password for invalid user admin from 203.0.113.9 port 55013 ssh2",
            Some((InvalidUser, "admin", ip, Some(55013), Some("password"), "sshd"))),
        ("ssh.service", "Invalid user admin from 203.0.113.9 port 55013",
            Some((InvalidUser, "admin", ip, Some(55013), None, "sshd"))),
        ("sshd@3-192.0.2.1:22-203.0.113.9:55014.service", "Failed password for root from ::ffff:203.0.113.9 port 55014 ssh2",
            Some((Failed, "root", Some("::ffff:203.0.113.9"), Some(55014), Some("password"), "sshd"))),
        ("getty@tty1.service", "pam_unix(login:session): session opened for user root(uid=0) by LOGIN(uid=0)",
            Some((RootSession, "root", None, None, None, "login"))),
        ("login", "ROOT LOGIN ON tty1", Some((RootSession, "root", None, None, None, "login"))),
        ("su", "pam_unix(su-l:session): session opened for user root(uid=0) by alice(uid=1000)",
            Some((RootSession, "alice", None, None, None, "su"))),
        ("su", "pam_unix(su:session): session opened for user root(uid=0) by (uid=1000)",
            Some((RootSession, "root", None, None, None, "su"))),
        ("su", "(to root) alice on pts/0", Some((RootSession, "alice", None, None, None, "su"))),
        ("sudo", "    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
            Some((SudoRoot, "alice", None, None, None, "sudo"))),
        ("sudo", "alice : TTY=unknown ; PWD=/ ; USER=root ; ENV=A=1 ; COMMAND=/usr/bin/env",
            Some((SudoRoot, "alice", None, None, None, "sudo"))),
    ];
    for (unit, message, want) in cases {
        check(&journal(unit, message), *want);
    }
}

#[test]
fn lines_that_look_similar_are_not_logins() {
    let cases: &[(&str, &str)] = &[
        ("ssh.service", "Connection closed by invalid user admin 203.0.113.9 port 55013 [preauth]"),
        ("ssh.service", "Received disconnect from 203.0.113.9 port 55013:11: Bye Bye [preauth]"),
        ("ssh.service", "Disconnected from authenticating user root 203.0.113.9 port 55015 [preauth]"),
        ("ssh.service", "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)"),
        ("ssh.service", "Failed none for invalid user admin from 203.0.113.9 port 55013 ssh2"),
        ("ssh.service", "Accepted password for alice from 999.1.1.1 port 22 ssh2"),
        ("ssh.service", "Accepted password for alice from 192.0.2.1 port 70000 ssh2"),
        ("ssh.service", "Accepted password for alice from 192.0.2.1 port 22 ssh2 and more"),
        ("ssh.service", "Server listening on 0.0.0.0 port 22."),
        ("getty@tty1.service", "pam_unix(login:session): session opened for user alice(uid=1000) by LOGIN(uid=0)"),
        ("login", "ROOT LOGIN ON tty1 and then some"),
        ("su", "FAILED SU (to root) alice on pts/0"),
        ("su", "pam_unix(su:session): session opened for user bob(uid=1001) by alice(uid=1000)"),
        ("su", "pam_unix(su:session): session opened for user root(uid=1001) by alice(uid=1000)"),
        ("sudo", "    alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"),
        ("sudo", "    alice : user NOT in sudoers ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"),
        ("sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)"),
        ("sudo", "    alice : TTY=pts/0 ; PWD=/home/alice ; USER=bob ; COMMAND=/usr/bin/echo Failed password for root from 192.0.2.1 port 22 ssh2"),
        ("sudo", "    alice : TTY=pts/0 ; PWD=/home/alice ; USER=rootkit ; COMMAND=/usr/bin/id"),
        // Lines other programs (or a user with logger) wrote.
        ("nginx.service", "Accepted password for root from 192.0.2.1 port 22 ssh2"),
        ("session-3.scope", "Accepted password for root from 192.0.2.1 port 22 ssh2"),
        ("", "Accepted password for root from 192.0.2.1 port 22 ssh2"),
        ("cron.service", "pam_unix(login:session): session opened for user root(uid=0) by (uid=0)"),
    ];
    for (unit, message) in cases {
        check(&journal(unit, message), None);
    }
}

#[test]
fn text_inside_a_sudo_line_is_never_an_sshd_login_nor_hides_root() {
    // The sudo line itself is the event (alice became root); the sshd-looking text
    // inside the command is not a failure for root from 192.0.2.1.
    check(
        &journal("sudo", "    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/logger Failed password for root from 192.0.2.1 port 22 ssh2"),
        Some((SudoRoot, "alice", None, None, None, "sudo")),
    );
    // A directory name that fakes a USER field before the real one hides nothing.
    check(
        &journal(
            "sudo",
            "    alice : TTY=pts/0 ; PWD=/tmp/x ; USER=bob ; y ; USER=root ; COMMAND=/bin/bash",
        ),
        Some((SudoRoot, "alice", None, None, None, "sudo")),
    );
}

#[test]
fn hostile_user_names_are_kept_as_data_and_cut() {
    let ip = Some("203.0.113.9");
    check(
        &journal(
            "ssh.service",
            "Invalid user <script>alert(1)</script> from 203.0.113.9 port 4000",
        ),
        Some((
            InvalidUser,
            "<script>alert(1)</script>",
            ip,
            Some(4000),
            None,
            "sshd",
        )),
    );
    // A name that carries its own " from … port … ssh2": the rightmost one is sshd's.
    check(
        &journal("ssh.service", "Failed password for invalid user x from 10.0.0.1 port 1 ssh2 from 203.0.113.9 port 4001 ssh2"),
        Some((InvalidUser, "x from 10.0.0.1 port 1 ssh2", ip, Some(4001), Some("password"), "sshd")),
    );
    check(
        &journal(
            "ssh.service",
            "Invalid user a\u{1b}[31mred\u{7}\u{0} from 203.0.113.9 port 4002",
        ),
        Some((
            InvalidUser,
            "a\u{1b}[31mred\u{7}\u{0}",
            ip,
            Some(4002),
            None,
            "sshd",
        )),
    );
    check(
        &journal("ssh.service", "Invalid user  from 203.0.113.9 port 4003"),
        Some((InvalidUser, "", ip, Some(4003), None, "sshd")),
    );
    // A valid user literally named "invalid user x" cannot be told apart from sshd's
    // prefix; "Accepted" has no such prefix, so there it is the name.
    check(
        &journal(
            "ssh.service",
            "Accepted password for invalid user x from 203.0.113.9 port 4004 ssh2",
        ),
        Some((
            Accepted,
            "invalid user x",
            ip,
            Some(4004),
            Some("password"),
            "sshd",
        )),
    );
    let long = "é".repeat(300);
    let got = parse(&journal(
        "ssh.service",
        &format!("Invalid user {long} from 203.0.113.9 port 4005"),
    ))
    .expect("a login");
    assert_eq!(got.user.chars().count(), MAX_USER);
    let huge = "u".repeat(10_000);
    let got = parse(&journal(
        "ssh.service",
        &format!("Invalid user {huge} from 203.0.113.9 port 4006"),
    ))
    .expect("a login");
    assert_eq!(got.raw.map(|r| r.len()), Some(MAX_RAW));
}

#[test]
fn file_lines_take_the_service_from_the_syslog_tag() {
    let r = file("2024-03-01T10:15:02.123456+00:00 deb12 sshd[1234]: Accepted password for alice from 192.0.2.10 port 50522 ssh2");
    check(
        &r,
        Some((
            Accepted,
            "alice",
            Some("192.0.2.10"),
            Some(50522),
            Some("password"),
            "sshd",
        )),
    );
    check(
        &file("Mar  1 10:15:02 deb12 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"),
        Some((SudoRoot, "alice", None, None, None, "sudo")),
    );
    check(
        &file("Mar 11 10:15:02 deb12 su[88]: (to root) alice on pts/1"),
        Some((RootSession, "alice", None, None, None, "su")),
    );
    // `sshd -E FILE` (OpenSSH 9.2) writes bare messages.
    let ip = Some("127.0.0.1");
    check(
        &file("Invalid user nosuchuser from 127.0.0.1 port 48898"),
        Some((InvalidUser, "nosuchuser", ip, Some(48898), None, "sshd")),
    );
    check(
        &file("Failed password for root from 127.0.0.1 port 48902 ssh2"),
        Some((Failed, "root", ip, Some(48902), Some("password"), "sshd")),
    );
    check(
        &file("Accepted publickey for root from 127.0.0.1 port 48910 ssh2: ED25519 SHA256:Xb3n8v1Tt3uQ1k3zZr2cX9u5y0qJxjM9aLwYdE1tKqA"),
        Some((RootSession, "root", ip, Some(48910), Some("publickey"), "sshd")),
    );
    // A user name that looks like a syslog tag does not hide the login.
    check(
        &file("Invalid user sudo: from 127.0.0.1 port 48911"),
        Some((InvalidUser, "sudo:", ip, Some(48911), None, "sshd")),
    );
    for line in [
        "Server listening on 127.0.0.1 port 22222.",
        "Connection closed by invalid user nosuchuser 127.0.0.1 port 48898 [preauth]",
        "Could not get shadow information for NOUSER",
        "2024-03-01T10:15:02+00:00 deb12 CRON[99]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
        "2024-03-01T10:15:02+00:00 deb12 myapp[1]: sshd[1]: Accepted password for root from 192.0.2.1 port 22 ssh2",
        "2024-03-01T10:15:02+00:00 deb12 sshd[x]: Accepted password for root from 192.0.2.1 port 22 ssh2",
        "",
    ] {
        check(&file(line), None);
    }
}

#[test]
fn events_leave_the_seq_to_the_shipper() {
    let event = parse(&journal(
        "ssh.service",
        "Invalid user a from 192.0.2.1 port 1",
    ))
    .expect("login");
    assert_eq!((event.seq, event.user.as_str()), (0, "a"));
}

#[test]
fn companions_fold_the_two_lines_of_one_root_session() {
    let mut c = Companions::default();
    let at = |ts: u64, unit: &str, m: &str| Record {
        ts_us: ts,
        ..journal(unit, m)
    };
    let pam = "pam_unix(login:session): session opened for user root(uid=0) by LOGIN(uid=0)";
    assert!(c.feed(&at(1_000_000, "getty@tty1.service", pam)).is_some());
    assert!(
        c.feed(&at(1_200_000, "login", "ROOT LOGIN ON tty1"))
            .is_none(),
        "companion"
    );
    // A later login is a new session, whichever line comes first.
    assert!(c
        .feed(&at(60_000_000, "login", "ROOT LOGIN ON tty2"))
        .is_some());
    assert!(c.feed(&at(60_100_000, "getty@tty2.service", pam)).is_none());
    // Two su's by different users are two events; sshd is never folded.
    let su = |user: &str| {
        format!("pam_unix(su-l:session): session opened for user root(uid=0) by {user}(uid=1000)")
    };
    assert!(c.feed(&at(90_000_000, "su", &su("alice"))).is_some());
    assert!(c
        .feed(&at(90_000_001, "su", "(to root) bob on pts/0"))
        .is_some());
    let ssh = "Accepted password for root from 192.0.2.1 port 22 ssh2";
    assert!(c.feed(&at(91_000_000, "ssh.service", ssh)).is_some());
    assert!(c.feed(&at(91_000_001, "ssh.service", ssh)).is_some());
    assert!(c
        .feed(&at(92_000_000, "ssh.service", "Server listening"))
        .is_none());
}

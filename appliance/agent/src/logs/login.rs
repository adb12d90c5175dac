//! Sign-in events read from log lines: sshd's `Accepted …`, `Failed …` and
//! `Invalid user …`, root sessions opened by `login` and `su`, and `sudo` to root.
//!
//! Which program wrote a line decides which patterns apply, so that text a user can put
//! inside a line (a sudo command, a directory name, a user name) never reads as a
//! login of another kind:
//! - journald records: the record's unit only. The journal source sets it from fields
//!   journald itself records (the unit's cgroup; the syslog identifier only when the
//!   writer's uid or executable vouches for it, see `journal.rs`), so `logger -t sshd`
//!   run by a user does not make sshd lines.
//! - file records: a line that starts with one of the patterns is the program's own
//!   log (`sshd -E FILE` writes bare messages); otherwise the syslog tag in the line
//!   (`/var/log/auth.log`: `… host sshd[42]: …`). A file is only as trustworthy as
//!   whoever can write to it; rsyslog writes the identifier a process claims.
//!
//! User names and everything else in a line are data: they are cut (user to 256
//! characters, raw line to 4096 bytes) and never interpreted. Parsing from the right
//! (`… from IP port PORT ssh2`) keeps a user name that itself contains `from 1.2.3.4`
//! whole.
//!
//! [`parse`] returns a [`LoginEvent`] with `seq` 0: the sequence number is the
//! shipper's to set (from the spool), e.g. `LoginEvent { seq, ..event }`. For su and
//! sudo its `user` is the user who became root; otherwise the user who logged in (or
//! tried to).
//!
//! On Debian a console root login writes two lines (`pam_unix(login:session) … root` and
//! `ROOT LOGIN ON tty1`), as does `su` (`pam_unix(su:session)` and `(to root) alice on
//! pts/0`); [`Companions`] folds each such pair into one event. Known gaps: sudo to a
//! uid-0 account not named root (`USER=toor`) is not seen as root; a sudoer who puts
//! ` ; USER=root` in a directory name or command argument makes a false `sudo_root`
//! (chosen over letting such text hide a real one).

use super::record::{cut_chars, cut_str, Record};
use std::net::IpAddr;
use watchgrid_api::dto::{LoginEvent, LoginOutcome};

/// The longest user name kept, in characters.
pub const MAX_USER: usize = 256;
/// The longest raw line kept, in bytes.
pub const MAX_RAW: usize = 4096;
/// How close together the two lines of one root session are, to be folded.
const COMPANION_US: u64 = 5_000_000;

/// The programs whose lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sshd,
    Login,
    Su,
    Sudo,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Sshd => "sshd",
            Service::Login => "login",
            Service::Su => "su",
            Service::Sudo => "sudo",
        }
    }

    /// The service a unit name or syslog identifier stands for.
    pub fn of_unit(unit: &str) -> Option<Service> {
        let templated = |prefix: &str| unit.starts_with(prefix) && unit.ends_with(".service");
        match unit {
            "sshd" | "sshd-session" | "sshd-auth" | "ssh.service" | "sshd.service" => {
                Some(Service::Sshd)
            }
            "login" | "console-getty.service" => Some(Service::Login),
            "su" => Some(Service::Su),
            "sudo" => Some(Service::Sudo),
            // Socket-activated sshd runs one unit per connection.
            _ if templated("sshd@") || templated("ssh@") => Some(Service::Sshd),
            // login runs in its getty's unit until pam_systemd moves it to a session.
            _ if templated("getty@")
                || templated("serial-getty@")
                || templated("container-getty@") =>
            {
                Some(Service::Login)
            }
            _ => None,
        }
    }

    /// The executables that may write lines under this identifier.
    pub fn executables(self) -> &'static [&'static str] {
        match self {
            Service::Sshd => &["sshd", "sshd-session", "sshd-auth"],
            Service::Login => &["login"],
            Service::Su => &["su"],
            Service::Sudo => &["sudo"],
        }
    }
}

/// The login event in `r`, if it is one, with `seq` 0.
pub fn parse(r: &Record) -> Option<LoginEvent> {
    let (service, body) = if r.source == super::JOURNAL {
        (Service::of_unit(r.unit.as_deref()?)?, r.message.as_str())
    } else {
        untagged(&r.message).or_else(|| split_syslog_tag(&r.message))?
    };
    let found = match service {
        Service::Sshd => sshd(body),
        Service::Login => login(body),
        Service::Su => su(body),
        Service::Sudo => sudo(body),
    }?;
    Some(LoginEvent {
        seq: 0,
        ts_us: r.ts_us,
        outcome: found.outcome,
        user: cut_chars(found.user, MAX_USER).to_string(),
        source_ip: found.ip,
        source_port: found.port,
        method: found.method.map(|m| cut_str(m, 64).to_string()),
        service: service.as_str().to_string(),
        raw: Some(cut_str(&r.message, MAX_RAW).to_string()),
    })
}

/// What one pattern found, borrowed from the line.
struct Found<'a> {
    outcome: LoginOutcome,
    user: &'a str,
    ip: Option<IpAddr>,
    port: Option<u16>,
    method: Option<&'a str>,
}

impl<'a> Found<'a> {
    fn local(outcome: LoginOutcome, user: &'a str) -> Found<'a> {
        Found {
            outcome,
            user,
            ip: None,
            port: None,
            method: None,
        }
    }
}

/// A syslog file line (`2024-03-01T10:00:00+00:00 host sshd[42]: body`, or the
/// traditional `Mar  1 10:00:00 host sshd[42]: body`): the service of its tag and the
/// body. The tag is looked for among the first tokens only, never inside the body.
fn split_syslog_tag(line: &str) -> Option<(Service, &str)> {
    let mut rest = line;
    // Timestamps (`10:00:00`, `+00:00`) and host names do not end in ':'; the first
    // token that does is the tag.
    for _ in 0..6 {
        rest = rest.trim_start_matches(' ');
        let (token, after) = rest.split_once(' ').unwrap_or((rest, ""));
        if let Some(tag) = token.strip_suffix(':') {
            let name = match tag.split_once('[') {
                Some((name, pid)) if pid.strip_suffix(']').is_some_and(is_digits) => name,
                Some(_) => return None,
                None => tag,
            };
            return Service::of_unit(name).map(|s| (s, after));
        }
        rest = after;
    }
    None
}

/// A line a program wrote to its own log file, without a syslog prefix: the service
/// its first words stand for.
fn untagged(line: &str) -> Option<(Service, &str)> {
    const STARTS: [(&str, Service); 8] = [
        ("Accepted ", Service::Sshd),
        ("Failed ", Service::Sshd),
        ("Invalid user ", Service::Sshd),
        ("ROOT LOGIN ON ", Service::Login),
        ("pam_unix(login:", Service::Login),
        ("(to root) ", Service::Su),
        ("pam_unix(su:", Service::Su),
        ("pam_unix(su-l:", Service::Su),
    ];
    STARTS
        .iter()
        .find(|(start, _)| line.starts_with(start))
        .map(|(_, service)| (*service, line))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn sshd(body: &str) -> Option<Found<'_>> {
    if let Some(rest) = body.strip_prefix("Invalid user ") {
        let (user, ip, port) = split_remote(rest, false)?;
        return Some(Found {
            outcome: LoginOutcome::InvalidUser,
            user,
            ip: Some(ip),
            port: Some(port),
            method: None,
        });
    }
    let (accepted, rest) = if let Some(rest) = body.strip_prefix("Accepted ") {
        (true, rest)
    } else {
        (false, body.strip_prefix("Failed ")?)
    };
    let (method, rest) = rest.split_once(" for ")?;
    let method = auth_method(method)?;
    let (invalid, rest) = match rest.strip_prefix("invalid user ") {
        Some(r) if !accepted => (true, r),
        _ => (false, rest),
    };
    let (user, ip, port) = split_remote(rest, true)?;
    let outcome = match (accepted, invalid) {
        (true, _) if user == "root" => LoginOutcome::RootSession,
        (true, _) => LoginOutcome::Accepted,
        (false, true) => LoginOutcome::InvalidUser,
        (false, false) => LoginOutcome::Failed,
    };
    Some(Found {
        outcome,
        user,
        ip: Some(ip),
        port: Some(port),
        method: Some(method),
    })
}

/// sshd's method names; `keyboard-interactive/pam` is reported without the submethod.
/// `none` (a client probing) is not a sign-in attempt.
fn auth_method(m: &str) -> Option<&str> {
    let base = m.split_once('/').map_or(m, |(b, _)| b);
    matches!(
        base,
        "password" | "publickey" | "keyboard-interactive" | "hostbased" | "gssapi-with-mic"
    )
    .then_some(base)
}

/// `USER from IP port PORT[ ssh2[: extra]]`: the rightmost ` from ` whose tail parses,
/// so a user name containing ` from …` stays part of the name.
fn split_remote(s: &str, ssh2: bool) -> Option<(&str, IpAddr, u16)> {
    for (at, _) in s.rmatch_indices(" from ") {
        let tail = &s[at + " from ".len()..];
        if let Some((ip, port)) = remote_tail(tail, ssh2) {
            return Some((&s[..at], ip, port));
        }
    }
    None
}

fn remote_tail(tail: &str, ssh2: bool) -> Option<(IpAddr, u16)> {
    let (ip, rest) = tail.split_once(" port ")?;
    let ip: IpAddr = ip.parse().ok()?;
    let (port, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let port: u16 = port.parse().ok()?;
    let end_ok = if ssh2 {
        // publickey lines go on with `: ED25519 SHA256:…`.
        rest == "ssh2" || rest.starts_with("ssh2: ")
    } else {
        rest.is_empty()
    };
    end_ok.then_some((ip, port))
}

fn login(body: &str) -> Option<Found<'_>> {
    if let Some(rest) = body.strip_prefix("ROOT LOGIN ON ") {
        // `ROOT LOGIN ON tty1` or `ROOT LOGIN ON pts/0 FROM host`.
        let (tty, from) = rest.split_once(" FROM ").unwrap_or((rest, ""));
        if tty.is_empty() || tty.contains(' ') {
            return None;
        }
        let mut found = Found::local(LoginOutcome::RootSession, "root");
        found.ip = from.parse().ok();
        return Some(found);
    }
    let session = pam_session(body, &["login"])?;
    session
        .root
        .then(|| Found::local(LoginOutcome::RootSession, session.target))
}

fn su(body: &str) -> Option<Found<'_>> {
    if let Some(rest) = body.strip_prefix("(to root) ") {
        // `(to root) alice on pts/0`; a failure starts `FAILED SU (to root)`.
        let (user, tty) = rest.rsplit_once(" on ")?;
        if tty.is_empty() || tty.contains(' ') {
            return None;
        }
        return Some(Found::local(LoginOutcome::RootSession, user));
    }
    let session = pam_session(body, &["su", "su-l"])?;
    // The user who became root; the target when pam_unix had no name for them.
    let user = session
        .by
        .filter(|b| !b.is_empty())
        .unwrap_or(session.target);
    session
        .root
        .then(|| Found::local(LoginOutcome::RootSession, user))
}

struct PamSession<'a> {
    target: &'a str,
    root: bool,
    by: Option<&'a str>,
}

/// `pam_unix(SERVICE:session): session opened for user root(uid=0) by alice(uid=1000)`
/// (older pam: `for user root by alice(uid=1000)`), for one of `services`.
fn pam_session<'a>(body: &'a str, services: &[&str]) -> Option<PamSession<'a>> {
    let rest = body.strip_prefix("pam_unix(")?;
    let (service, rest) = rest.split_once(":session): session opened for user ")?;
    if !services.contains(&service) {
        return None;
    }
    let (target, by) = match rest.split_once(" by ") {
        Some((t, b)) => (t, Some(b)),
        None => (rest, None),
    };
    let (name, uid) = name_uid(target);
    let root = match uid {
        Some(uid) => uid == "0",
        None => name == "root",
    };
    Some(PamSession {
        target: name,
        root,
        by: by.map(|b| name_uid(b).0),
    })
}

/// `alice(uid=1000)` → (`alice`, Some("1000")); `alice` → (`alice`, None).
fn name_uid(s: &str) -> (&str, Option<&str>) {
    match s.strip_suffix(')').and_then(|s| s.rsplit_once("(uid=")) {
        Some((name, uid)) if is_digits(uid) => (name, Some(uid)),
        _ => (s, None),
    }
}

/// `alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id`. Failures
/// put their reason first (`alice : 3 incorrect password attempts ; TTY=…`) and are not
/// sessions. Any field `USER=root` counts: PWD and COMMAND may hold ` ; USER=…` text,
/// and no such text may hide the real field.
fn sudo(body: &str) -> Option<Found<'_>> {
    // sudo pads the user name with leading spaces.
    let (user, fields) = body.trim_start_matches(' ').split_once(" : ")?;
    let mut fields = fields.split(" ; ");
    if !fields.next()?.starts_with("TTY=") {
        return None;
    }
    fields
        .any(|f| f == "USER=root")
        .then(|| Found::local(LoginOutcome::SudoRoot, user))
}

/// Folds the two lines login and su write for one root session into one event.
#[derive(Debug, Default)]
pub struct Companions {
    /// The last root session from login or su: service, user, time, from a pam line.
    last: Option<(String, String, u64, bool)>,
}

impl Companions {
    /// [`parse`], without the second line of a pair.
    pub fn feed(&mut self, r: &Record) -> Option<LoginEvent> {
        let login = parse(r)?;
        let paired = login.outcome == LoginOutcome::RootSession
            && matches!(login.service.as_str(), "login" | "su");
        if !paired {
            return Some(login);
        }
        let pam = r.message.contains("pam_unix(");
        if let Some((service, user, ts, was_pam)) = self.last.take() {
            let companion = service == login.service
                && user == login.user
                && was_pam != pam
                && login.ts_us.abs_diff(ts) <= COMPANION_US;
            if companion {
                return None;
            }
        }
        self.last = Some((login.service.clone(), login.user.clone(), login.ts_us, pam));
        Some(login)
    }
}

#[cfg(test)]
mod tests;

use crate::{OffsiteError, PinnedHostKey};

/// Where copies go: an account on an SSH server and a directory there.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The remote directory; it must exist. Relative paths start at the account's home.
    pub dir: String,
    pub host_key: PinnedHostKey,
}

impl Target {
    /// Checks the parts a server cannot: names and a path that a protocol line can carry.
    pub fn check(&self) -> Result<(), OffsiteError> {
        let host_ok = !self.host.is_empty()
            && self.host.len() <= 253
            && self
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !host_ok {
            return Err(OffsiteError::Invalid(format!(
                "host {:?}: a DNS name or an IP address",
                self.host
            )));
        }
        if self.port == 0 {
            return Err(OffsiteError::Invalid("port: 1 to 65535".into()));
        }
        let user_ok = !self.user.is_empty()
            && self.user.len() <= 64
            && self
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !user_ok {
            return Err(OffsiteError::Invalid(format!(
                "user {:?}: 1 to 64 letters, digits, '.', '-' or '_'",
                self.user
            )));
        }
        if self.dir.is_empty() || self.dir.len() > 1024 || self.dir.chars().any(char::is_control) {
            return Err(OffsiteError::Invalid(
                "dir: a path of 1 to 1024 characters without control characters".into(),
            ));
        }
        Ok(())
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `name` inside the remote directory.
    pub(crate) fn remote_path(&self, name: &str) -> String {
        let dir = self.dir.trim_end_matches('/');
        if dir.is_empty() {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, user: &str, dir: &str) -> Target {
        Target {
            host: host.into(),
            port: 22,
            user: user.into(),
            dir: dir.into(),
            host_key: PinnedHostKey::parse(crate::host_key::tests::ED25519_LINE)
                .expect("a valid key"),
        }
    }

    #[test]
    fn names_and_paths_are_checked() {
        assert!(target("backup.example.net", "wg", "backups")
            .check()
            .is_ok());
        assert!(target("fd00::1", "wg", "/srv/b").check().is_ok());
        for (host, user, dir) in [
            ("", "wg", "d"),
            ("a b", "wg", "d"),
            ("h", "", "d"),
            ("h", "root;rm", "d"),
            ("h", "wg", ""),
            ("h", "wg", "d\nx"),
        ] {
            let err = target(host, user, dir).check();
            assert!(
                matches!(err, Err(OffsiteError::Invalid(_))),
                "{host:?} {user:?} {dir:?}"
            );
        }
    }

    #[test]
    fn remote_paths_join_once() {
        assert_eq!(target("h", "u", "b/").remote_path("x"), "b/x");
        assert_eq!(target("h", "u", "/srv/b").remote_path("x"), "/srv/b/x");
        assert_eq!(target("h", "u", "/").remote_path("x"), "/x");
        assert_eq!(target("fd00::1", "u", "/").addr(), "[fd00::1]:22");
    }
}

use crate::OffsiteError;
use russh::keys::{HashAlg, PublicKey};

/// The most keys one pin holds (`ssh-keyscan` prints one per host key algorithm).
const MAX_KEYS: usize = 8;

/// The server's host keys as the operator pinned them; the server must present one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedHostKey {
    keys: Vec<PublicKey>,
}

impl PinnedHostKey {
    /// Reads OpenSSH public keys, one per line: `ssh-ed25519 AAAA… [comment]`, or
    /// `known_hosts` / `ssh-keyscan` lines with the host names in front. Empty lines and
    /// `#` comments are skipped; any other line that is not a key is an error.
    pub fn parse(text: &str) -> Result<PinnedHostKey, OffsiteError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut key = parse_line(line).ok_or_else(|| {
                OffsiteError::Invalid(format!(
                    "host key, line {}: not an OpenSSH public key (paste the server's \
                     /etc/ssh/ssh_host_ed25519_key.pub or `ssh-keyscan` output)",
                    n + 1
                ))
            })?;
            key.set_comment("");
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(OffsiteError::Invalid("host key: no key given".into()));
        }
        if keys.len() > MAX_KEYS {
            return Err(OffsiteError::Invalid(format!(
                "host key: at most {MAX_KEYS} keys"
            )));
        }
        Ok(PinnedHostKey { keys })
    }

    /// Whether `key` is one of the pinned keys (comments aside).
    pub fn accepts(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k.key_data() == key.key_data())
    }

    /// The pinned keys' SHA256 fingerprints, as `ssh-keygen -l` prints them.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(fingerprint).collect()
    }

    /// One `ALGORITHM BASE64` line per key, without comments: what is stored.
    pub fn to_openssh(&self) -> String {
        self.keys
            .iter()
            .filter_map(|k| k.to_openssh().ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A key line, or a `known_hosts` line whose first field names the hosts.
fn parse_line(line: &str) -> Option<PublicKey> {
    if let Ok(key) = PublicKey::from_openssh(line) {
        return Some(key);
    }
    let (_hosts, rest) = line.split_once(char::is_whitespace)?;
    PublicKey::from_openssh(rest.trim_start()).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const ED25519_LINE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIaSm1a12YtuYLZw4vHixGfKIiksPtc0T2afO+eXjnVX test";
    const ECDSA_LINE: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKRHHhWyyZNT7VBX3xl7mk1NTMulqJFxeAw/KC0zQvtTkiRaA5p6F3Pi9KZrzNGMUUIj9hQlppL+Om+hkibMe+s=";

    #[test]
    fn reads_key_lines_and_keyscan_output() {
        let one = PinnedHostKey::parse(ED25519_LINE).expect("a key line");
        let scan = format!(
            "# backup:22 SSH-2.0-OpenSSH_9.2\n[backup]:2222 {ED25519_LINE}\n\nbackup {ECDSA_LINE}\n"
        );
        let two = PinnedHostKey::parse(&scan).expect("keyscan output");
        assert_eq!(one.fingerprints().len(), 1);
        assert_eq!(two.fingerprints().len(), 2);
        assert!(one.fingerprints()[0].starts_with("SHA256:"));
        assert_eq!(two.fingerprints()[0], one.fingerprints()[0]);
        let stored = PinnedHostKey::parse(&two.to_openssh()).expect("stored form reads back");
        assert_eq!(stored, two);
        assert!(!two.to_openssh().contains("test"));
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        for text in [
            "",
            "# only a comment",
            "ssh-ed25519 AAAAnotbase64!!",
            "hello world",
            &format!("{ED25519_LINE}\ngarbage line"),
        ] {
            assert!(
                matches!(PinnedHostKey::parse(text), Err(OffsiteError::Invalid(_))),
                "{text:?}"
            );
        }
        let many = (0..9)
            .map(|_| ECDSA_LINE)
            .chain([ED25519_LINE])
            .collect::<Vec<_>>()
            .join("\n");
        assert!(PinnedHostKey::parse(&many).is_ok(), "duplicates count once");
    }

    #[test]
    fn accepts_only_pinned_keys() {
        let pin = PinnedHostKey::parse(ED25519_LINE).expect("a key");
        let same = PublicKey::from_openssh(&ED25519_LINE.replace(" test", " other comment"))
            .expect("a key");
        let other = PublicKey::from_openssh(ECDSA_LINE).expect("a key");
        assert!(pin.accepts(&same));
        assert!(!pin.accepts(&other));
    }
}

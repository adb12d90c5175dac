//! The OpenSSH key revocation list (PROTOCOL.krl): the serials of revoked certificates,
//! one certificate section per CA. `sshd`'s `RevokedKeys` and `ssh-keygen -Q` read it.

/// The serials one CA revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The CA's public key blob (wire format).
    pub ca_key: Vec<u8>,
    pub serials: Vec<u64>,
}

const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SECTION_SERIAL_LIST: u8 = 0x20;

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_be_bytes());
    out.extend(bytes);
}

/// Encodes a KRL. `version` must grow with every change (sshd does not care; tools that
/// compare lists do); `generated` is unix seconds.
pub fn encode(revoked: &[Revoked], version: u64, generated: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(FORMAT_VERSION.to_be_bytes());
    out.extend(version.to_be_bytes());
    out.extend(generated.to_be_bytes());
    out.extend(0u64.to_be_bytes()); // flags
    string(&mut out, b""); // reserved
    string(&mut out, b"watchgrid");
    for r in revoked.iter().filter(|r| !r.serials.is_empty()) {
        let mut serials = r.serials.clone();
        serials.sort_unstable();
        serials.dedup();
        let mut list = Vec::new();
        for s in serials {
            list.extend(s.to_be_bytes());
        }
        let mut section = Vec::new();
        string(&mut section, &r.ca_key);
        string(&mut section, b""); // reserved
        section.push(CERT_SECTION_SERIAL_LIST);
        string(&mut section, &list);
        out.push(SECTION_CERTIFICATES);
        string(&mut out, &section);
    }
    out
}

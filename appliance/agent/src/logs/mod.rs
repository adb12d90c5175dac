//! Log shipping (draft).
pub mod file;
pub mod login;
pub mod record;
pub mod spool;

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
pub mod journal;

//! A wrapper for values that must not reach logs: `Debug` prints `[redacted]`.
//!
//! Serde sees straight through it, so records keep their exact on-disk form. Reading
//! the value takes an explicit [`Sensitive::expose`], which makes every use visible.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret (session signing key, TOTP secret, password hash, agent key) that
/// `{:?}` never prints.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    pub fn new(value: T) -> Sensitive<T> {
        Sensitive(value)
    }

    /// The secret itself.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Sensitive<T> {
        Sensitive(value)
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_serde_does_not() {
        let s = Sensitive::new("hunter2-hunter2".to_string());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        let json = serde_json::to_string(&s).expect("encode");
        assert_eq!(json, "\"hunter2-hunter2\"");
        let back: Sensitive<String> = serde_json::from_str(&json).expect("decode");
        assert_eq!(back.expose(), "hunter2-hunter2");
    }
}

//! Hands a rendered transaction to `nft -j -f -`, which the kernel applies atomically.

use nftables::helper::{self, NftablesError};
use nftables::schema::Nftables;

/// Why the ruleset could not be applied, with what `nft` said.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("running {program}: {reason}")]
    Nft { program: String, reason: String },
}

/// Applies `ruleset` with the `nft` program (a path, or `nft` from PATH).
pub fn apply(program: &str, ruleset: &Nftables) -> Result<(), ApplyError> {
    let no_args: [&str; 0] = [];
    helper::apply_ruleset_with_args(ruleset, Some(program), no_args).map_err(|e| ApplyError::Nft {
        program: program.to_string(),
        reason: describe(e),
    })
}

/// Removes our table, leaving every other table alone.
pub fn remove(program: &str) -> Result<(), ApplyError> {
    apply(program, &crate::ruleset::removal())
}

fn describe(e: NftablesError) -> String {
    match e {
        NftablesError::NftExecution { program, inner } => {
            format!("could not start {program:?}: {inner}")
        }
        NftablesError::NftFailed { stderr, .. } => {
            let msg = stderr.trim();
            if msg.is_empty() {
                "nft failed without a message".into()
            } else {
                msg.lines().take(6).collect::<Vec<_>>().join(" | ")
            }
        }
        other => other.to_string(),
    }
}

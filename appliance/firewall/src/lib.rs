//! The appliance's firewall: one `table inet watchgrid` that the daemon owns.
//!
//! [`policy`] holds what the operator decides (forward rules between groups, egress),
//! [`rule_form`] reads and writes rules in their written (stored, JSON) form,
//! [`ruleset`] turns it into nftables JSON without touching the system, and [`apply`]
//! replaces the table in one `nft -j -f -` transaction. User-chosen names (groups,
//! devices) never appear in the ruleset: groups become numbered address sets.

pub mod apply;
pub mod policy;
pub mod rule_form;
pub mod ruleset;

pub use apply::{apply, remove, ApplyError};
pub use policy::{Member, Node, Policy, PortRange, Protocol, Rule, Target};
pub use rule_form::{InvalidRule, RuleError, RuleSpec};
pub use ruleset::{removal, render, TABLE};

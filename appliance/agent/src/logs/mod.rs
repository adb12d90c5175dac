//! Log shipping (draft).
pub mod login;
pub mod record;
pub mod spool;

//! The subcommands: `wg` (a wireguard-go drop-in), `serve` (the appliance daemon) and
//! `admin` (offline maintenance of a data dir), `agent` (a managed machine) and `update`
//! (signed bundles into the inactive root slot).

pub mod admin;
pub mod agent;
pub mod backup;
pub mod serve;
pub mod update;
pub mod wg;

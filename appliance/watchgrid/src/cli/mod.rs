//! The subcommands: `wg` (a wireguard-go drop-in), `serve` (the appliance daemon) and
//! `admin` (offline maintenance of a data dir) and `agent` (a managed machine).

pub mod admin;
pub mod agent;
pub mod backup;
pub mod serve;
pub mod wg;

//! The subcommands: `wg` (a wireguard-go drop-in), `serve` (the appliance daemon) and
//! `admin` (offline maintenance of a data dir).

pub mod admin;
pub mod serve;
pub mod wg;

//! The control plane around the API crate: its listeners, the certificate it serves
//! (internal CA, upload or ACME), the nftables reconciler, the periodic jobs, and the
//! handle through which the API reaches the dataplane.

pub mod acme;
pub mod acme_cache;
pub mod backup;
pub mod ca_scope;
pub mod connections;
pub mod firewall;
pub mod hub;
pub mod listeners;
pub mod maintenance;
pub mod tls;
pub mod tls_switch;

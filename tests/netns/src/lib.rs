//! Test harness: network namespaces, veth links and peer processes that clean up on drop.

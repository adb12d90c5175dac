//! The rendered ruleset, compared with reviewed files in tests/golden/. After an
//! intended change, regenerate with WATCHGRID_UPDATE_GOLDEN=1 and review the diff.

use std::net::IpAddr;
use watchgrid_core::IpPrefix;
use watchgrid_firewall::{render, Member, Node, Policy, PortRange, Protocol, Rule, Target};

fn node() -> Node {
    Node {
        wg_interface: "wg0".into(),
        wg_port: 51820,
        public_tcp_ports: vec![443, 80],
        metrics_port: Some(9100),
        vpn_v4: "10.100.0.0/16".parse().expect("v4"),
        vpn_v6: Some("fd12:3456:789a:1::/64".parse().expect("v6")),
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn member(addrs: &[&str], groups: &[&str]) -> Member {
    Member {
        addresses: addrs.iter().map(|a| addr(a)).collect(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// Two groups, a port rule, a range, a LAN target, ICMP, egress on.
fn policy(laptops: &str, servers: &str) -> (Policy, Vec<Member>) {
    let lan: IpPrefix = "192.168.60.0/24".parse().expect("lan");
    let policy = Policy {
        egress: true,
        rules: vec![
            Rule {
                from_group: laptops.into(),
                to: Target::Group(servers.into()),
                protocol: Protocol::Tcp,
                ports: vec![
                    PortRange {
                        first: 8080,
                        last: 8080,
                    },
                    PortRange {
                        first: 9000,
                        last: 9100,
                    },
                ],
            },
            Rule {
                from_group: laptops.into(),
                to: Target::Group(servers.into()),
                protocol: Protocol::Icmp,
                ports: vec![],
            },
            Rule {
                from_group: servers.into(),
                to: Target::Cidr(lan),
                protocol: Protocol::Any,
                ports: vec![],
            },
        ],
    };
    let members = vec![
        member(&["10.100.0.2", "fd12:3456:789a:1::2"], &[laptops]),
        member(&["10.100.0.3", "fd12:3456:789a:1::3"], &[servers, "unused"]),
        member(&["10.100.0.4"], &[laptops, servers]),
        member(&["10.100.0.5"], &[]),
    ];
    (policy, members)
}

fn check_golden(name: &str, ruleset: &nftables::schema::Nftables) {
    let rendered = serde_json::to_string_pretty(ruleset).expect("json") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("WATCHGRID_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).expect("write golden");
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate with WATCHGRID_UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(rendered, golden, "{name} differs from the reviewed ruleset");
}

#[test]
fn default_policy_opens_only_the_public_services() {
    check_golden("default.json", &render(&node(), &Policy::default(), &[]));
}

#[test]
fn group_rules_and_egress_render_as_reviewed() {
    let (p, m) = policy("laptops", "servers");
    check_golden("rules-egress.json", &render(&node(), &p, &m));
}

#[test]
fn without_ipv6_there_is_no_ipv6_masquerade() {
    let mut n = node();
    n.vpn_v6 = None;
    n.metrics_port = None;
    n.public_tcp_ports = vec![443];
    let p = Policy {
        egress: true,
        rules: vec![],
    };
    check_golden("v4-only-egress.json", &render(&n, &p, &[]));
}

#[test]
fn hostile_group_names_render_exactly_like_plain_ones() {
    // Sorted like "laptops" < "servers", so they get the same set numbers.
    let hostile_a = "a\"; flush ruleset; add table ip x {\n}";
    let hostile_b = "b} ; delete table inet other ; @g0_v4 '";
    let (plain_policy, plain_members) = policy("laptops", "servers");
    let (hostile_policy, hostile_members) = policy(hostile_a, hostile_b);
    let plain =
        serde_json::to_string(&render(&node(), &plain_policy, &plain_members)).expect("json");
    let hostile =
        serde_json::to_string(&render(&node(), &hostile_policy, &hostile_members)).expect("json");
    assert_eq!(plain, hostile);
    for fragment in [
        "flush",
        "delete table inet other",
        "laptops",
        "servers",
        "unused",
    ] {
        assert!(
            !hostile.contains(fragment),
            "{fragment:?} reached the ruleset"
        );
    }
}

#[test]
fn rules_naming_groups_without_members_still_render_empty_sets() {
    let p = Policy {
        egress: false,
        rules: vec![Rule {
            from_group: "nobody".into(),
            to: Target::Group("nobody-either".into()),
            protocol: Protocol::Udp,
            ports: vec![PortRange {
                first: 53,
                last: 53,
            }],
        }],
    };
    let json = serde_json::to_value(render(&node(), &p, &[])).expect("json");
    let sets: Vec<&serde_json::Value> = json["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o["add"].get("set"))
        .collect();
    assert_eq!(sets.len(), 4);
    assert!(sets.iter().all(|s| s.get("elem").is_none()));
}

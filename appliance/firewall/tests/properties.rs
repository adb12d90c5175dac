//! Property tests of the firewall's parsers and of the policy -> ruleset renderer: port
//! ranges and written rules round-trip and accept exactly what they document, and every
//! valid policy renders a transaction with the structure the renderer promises (and, where
//! `nft` can check it here, one that `nft -c` accepts).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use watchgrid_core::IpPrefix;
use watchgrid_firewall::{
    render, Member, Node, Policy, PortRange, Protocol, Rule, RuleError, RuleSpec, Target, TABLE,
};

// ---------------------------------------------------------------- strategies

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1u16), Just(65535u16), 1u16..=65535]
}

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        port().prop_map(|p| PortRange { first: p, last: p }),
        (port(), port()).prop_map(|(a, b)| PortRange {
            first: a.min(b),
            last: a.max(b)
        }),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    select(vec![
        Protocol::Any,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Icmp,
    ])
}

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<u32>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b)))
}

fn v6() -> impl Strategy<Value = IpAddr> {
    any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
}

fn prefix() -> impl Strategy<Value = IpPrefix> {
    prop_oneof![
        (v4(), 0u8..=32).prop_map(|(a, l)| IpPrefix::new(a, l).expect("in range")),
        (v6(), 0u8..=128).prop_map(|(a, l)| IpPrefix::new(a, l).expect("in range")),
    ]
}

/// Group names carry a marker that nothing else in a ruleset contains (`Q0Q`…), then
/// anything at all, hostile text included.
const GROUPS: usize = 4;
fn group_name(i: usize, tail: &str) -> String {
    format!("Q{i}Q{tail}")
}

fn group() -> impl Strategy<Value = String> {
    (
        0..GROUPS,
        prop_oneof![
            Just(String::new()),
            Just("\"; flush ruleset; add table ip x {\n}".to_string()),
            Just("@g0_v4".to_string()),
            any::<String>(),
        ],
    )
        .prop_map(|(i, tail)| group_name(i, &tail))
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        group(),
        prop_oneof![
            group().prop_map(Target::Group),
            prefix().prop_map(Target::Cidr)
        ],
        protocol(),
        vec(port_range(), 0..5),
    )
        .prop_map(|(from_group, to, protocol, ports)| Rule {
            from_group,
            to,
            ports: if matches!(protocol, Protocol::Tcp | Protocol::Udp) {
                ports
            } else {
                Vec::new()
            },
            protocol,
        })
}

fn node() -> impl Strategy<Value = Node> {
    (
        "[a-z][a-z0-9]{0,14}",
        port(),
        vec(port(), 0..4),
        proptest::option::of(port()),
        (v4(), 8u8..=30),
        proptest::option::of((v6(), 48u8..=64)),
    )
        .prop_map(|(ifname, wg_port, tcp, metrics, (a4, l4), v6)| Node {
            wg_interface: ifname,
            wg_port,
            public_tcp_ports: tcp,
            metrics_port: metrics,
            vpn_v4: IpPrefix::new(a4, l4).expect("v4"),
            vpn_v6: v6.map(|(a, l)| IpPrefix::new(a, l).expect("v6")),
        })
}

fn member() -> impl Strategy<Value = Member> {
    (vec(prop_oneof![v4(), v6()], 0..3), vec(group(), 0..3))
        .prop_map(|(addresses, groups)| Member { addresses, groups })
}

fn policy() -> impl Strategy<Value = (Policy, Vec<Member>)> {
    (any::<bool>(), vec(rule(), 0..6), vec(member(), 0..6))
        .prop_map(|(egress, rules, members)| (Policy { egress, rules }, members))
}

// ---------------------------------------------------------------- port ranges and rules

proptest! {
    /// A range prints as `22` or `9000-9100` and parses back to itself.
    #[test]
    fn port_ranges_print_and_parse_back(r in port_range()) {
        prop_assert_eq!(r.to_string().parse::<PortRange>(), Ok(r));
        let json = serde_json::to_string(&r).expect("encode");
        prop_assert_eq!(serde_json::from_str::<PortRange>(&json).expect("decode"), r);
    }

    /// `A` and `A-B` are accepted exactly for 1 <= A <= B <= 65535.
    #[test]
    fn port_ranges_accept_exactly_lo_le_hi_within_1_to_65535(
        a in prop_oneof![-2i64..=70000, Just(0), Just(65535), Just(65536)],
        b in prop_oneof![-2i64..=70000, Just(0), Just(65535), Just(65536)],
        single in any::<bool>(),
    ) {
        let in_range = |p: i64| (1..=65535).contains(&p);
        let (text, ok, first, last) = if single {
            (a.to_string(), in_range(a), a, a)
        } else {
            (format!("{a}-{b}"), in_range(a) && in_range(b) && a <= b, a, b)
        };
        match text.parse::<PortRange>() {
            Ok(r) => {
                prop_assert!(ok, "{} accepted", text);
                prop_assert_eq!((i64::from(r.first), i64::from(r.last)), (first, last));
            }
            Err(e) => {
                prop_assert!(!ok, "{} refused", text);
                prop_assert_eq!(e, RuleError::Port(text));
            }
        }
    }

    /// Any text: no panic; what parses is an ordered range in 1..=65535 that prints in
    /// the canonical form.
    #[test]
    fn arbitrary_port_text_parses_or_is_refused(
        s in prop_oneof![any::<String>(), "[ 0-9+-]{0,12}"]
    ) {
        if let Ok(r) = s.parse::<PortRange>() {
            prop_assert!(1 <= r.first && r.first <= r.last);
            prop_assert_eq!(r.to_string().parse::<PortRange>(), Ok(r));
        }
    }

    /// A rule written out (as the API and the store keep it) reads back as itself, as
    /// text and as JSON.
    #[test]
    fn rules_write_and_read_back(r in rule()) {
        let spec = RuleSpec::from(&r);
        prop_assert_eq!(Rule::try_from(spec.clone()), Ok(r.clone()));
        let json = serde_json::to_string(&r).expect("encode");
        prop_assert_eq!(serde_json::from_str::<Rule>(&json).expect("decode"), r);
        prop_assert_eq!(serde_json::from_str::<RuleSpec>(&json).expect("spec"), spec);
    }

    /// Any written rule: no panic; accepted exactly when it has one target, a known
    /// protocol, ports only with tcp/udp, and every port valid.
    #[test]
    fn written_rules_are_accepted_exactly_when_valid(
        from_group in any::<String>(),
        to_group in proptest::option::of(any::<String>()),
        to_cidr in proptest::option::of(prop_oneof![
            prefix().prop_map(|p| p.to_string()),
            "[0-9a-f.:/ ]{0,20}",
        ]),
        protocol in prop_oneof![
            select(vec!["tcp", "udp", "icmp", "any"]).prop_map(String::from),
            any::<String>(),
        ],
        ports in vec(prop_oneof![port_range().prop_map(|r| r.to_string()), "[0-9-]{0,7}"], 0..3),
    ) {
        let spec = RuleSpec { from_group, to_group, to_cidr, protocol, ports };
        let valid = (spec.to_group.is_some() != spec.to_cidr.is_some())
            && spec.to_cidr.as_ref().is_none_or(|c| c.trim().parse::<IpPrefix>().is_ok())
            && ["tcp", "udp", "icmp", "any"].contains(&spec.protocol.as_str())
            && (spec.ports.is_empty() || ["tcp", "udp"].contains(&spec.protocol.as_str()))
            && spec.ports.iter().all(|p| p.parse::<PortRange>().is_ok());
        match Rule::try_from(spec.clone()) {
            Ok(rule) => {
                prop_assert!(valid, "{:?} accepted", spec);
                prop_assert_eq!(rule.from_group, spec.from_group);
                prop_assert_eq!(rule.ports.len(), spec.ports.len());
            }
            Err(e) => prop_assert!(!valid, "{:?} refused: {}", spec, e),
        }
    }
}

// ---------------------------------------------------------------- policy -> ruleset

/// `nft -c` where it can check a known-good ruleset here (the program exists and may
/// talk to netfilter); `None` elsewhere, said once on stderr.
fn nft_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let probe = watchgrid_firewall::removal();
        match nft_check(&serde_json::to_string(&probe).expect("json")) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("nft -c cannot check rulesets here ({e}); structural checks only");
                false
            }
        }
    })
}

fn nft_check(json: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-c", "-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(json.as_bytes())
        .map_err(|e| format!("writing to nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every string anywhere in `v`.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any valid policy renders one transaction on our table only: the table recreated
    /// whole, a pair of address sets per group holding exactly its members' addresses,
    /// every set a rule names defined, one forward rule per rule and family it applies
    /// to, no group name anywhere; and `nft -c` accepts it.
    #[test]
    fn every_valid_policy_renders_a_ruleset_nft_accepts((policy, members) in policy(), node in node()) {
        let ruleset = render(&node, &policy, &members);
        let json = serde_json::to_value(&ruleset).expect("json");
        let text = json.to_string();
        let objects = json["nftables"].as_array().expect("objects");

        // Create, delete, create: the table is replaced whole, and nothing else is named.
        let first: Vec<String> = objects.iter().take(3).map(|o| {
            let (cmd, body) = o.as_object().and_then(|m| m.iter().next()).expect("command");
            format!("{cmd} {}", body["table"]["name"].as_str().unwrap_or("?"))
        }).collect();
        prop_assert_eq!(first, vec![format!("add {TABLE}"), format!("delete {TABLE}"), format!("add {TABLE}")]);
        for o in objects {
            let (_, body) = o.as_object().and_then(|m| m.iter().next()).expect("command");
            let (_, inner) = body.as_object().and_then(|m| m.iter().next()).expect("object");
            let table = inner.get("table").and_then(Value::as_str).or(inner["name"].as_str());
            prop_assert_eq!(table, Some(TABLE), "{}", o);
            prop_assert_eq!(inner["family"].as_str(), Some("inet"));
        }

        // No group name (nor any part of one that is ours) reaches the ruleset.
        for i in 0..GROUPS {
            prop_assert!(!text.contains(&format!("Q{i}Q")), "group {} leaked", i);
        }

        // One pair of sets per group that a rule names, numbered in name order, holding
        // exactly the addresses of that group's members in each family.
        let mut names = BTreeSet::new();
        for r in &policy.rules {
            names.insert(r.from_group.clone());
            if let Target::Group(g) = &r.to {
                names.insert(g.clone());
            }
        }
        let index: BTreeMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (n, i)).collect();
        let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in objects {
            if let Some(set) = o["add"].get("set") {
                let name = set["name"].as_str().expect("set name").to_string();
                let elems = set["elem"].as_array().map(|e| {
                    e.iter().map(|x| x.as_str().expect("address").to_string()).collect()
                });
                prop_assert!(sets.insert(name, elems.unwrap_or_default()).is_none(), "a set defined twice");
            }
        }
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, i) in &index {
            for fam in ["v4", "v6"] {
                let addrs = members
                    .iter()
                    .filter(|m| m.groups.contains(name))
                    .flat_map(|m| m.addresses.iter())
                    .filter(|a| a.is_ipv4() == (fam == "v4"))
                    .map(|a| a.to_string())
                    .collect();
                expected.insert(format!("g{i}_{fam}"), addrs);
            }
        }
        prop_assert_eq!(&sets, &expected);
        let mut referenced = Vec::new();
        strings(&json, &mut referenced);
        for s in referenced.iter().filter_map(|s| s.strip_prefix('@')) {
            prop_assert!(sets.contains_key(s), "@{} is not defined", s);
        }

        // Forward rules: established/invalid, one per rule and family it applies to, egress.
        let forward = objects
            .iter()
            .filter(|o| o["add"].get("rule").is_some_and(|r| r["chain"] == "forward"))
            .count();
        let per_rule: usize = policy
            .rules
            .iter()
            .map(|r| match r.to {
                Target::Group(_) => 2,
                Target::Cidr(_) => 1,
            })
            .sum();
        prop_assert_eq!(forward, 2 + per_rule + usize::from(policy.egress));
        let masquerading = text.contains("masquerade");
        prop_assert_eq!(masquerading, policy.egress);

        if nft_usable() {
            if let Err(e) = nft_check(&text) {
                prop_assert!(false, "nft -c refused the ruleset: {}\n{}", e, text);
            }
        }
    }
}

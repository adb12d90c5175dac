//! Policy -> nftables JSON, with no side effects.
//!
//! The output is one transaction: create-then-delete our table (so the delete cannot
//! fail when the table is absent), then add it back whole. `nft` applies a file as
//! one netlink batch, so the kernel never sees a half-built table.
//!
//! Group names chosen by users never reach the ruleset: every group a rule refers to
//! becomes a pair of address sets named by its position (`g0_v4`, `g0_v6`), and
//! devices enter those sets as addresses.

use crate::policy::{Member, Node, Policy, PortRange, Protocol, Rule, Target};
use nftables::expr::{self, Expression, NamedExpression};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, Nftables, SetTypeValue};
use nftables::stmt::{self, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use watchgrid_core::IpPrefix;

/// The one table the daemon owns (family `inet`).
pub const TABLE: &str = "watchgrid";

/// ICMP errors the host needs to work (path MTU discovery among them) and to be
/// diagnosable.
const ICMP_ERRORS: &[&str] = &[
    "destination-unreachable",
    "time-exceeded",
    "parameter-problem",
];
const ICMPV6_ERRORS: &[&str] = &[
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
];
/// Neighbour and router discovery, without which IPv6 does not work at all; not
/// rate-limited, as dropping them breaks the link rather than slowing a flood.
const ICMPV6_DISCOVERY: &[&str] = &[
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
];
/// ICMP errors accepted per second (burst in packets), in their own bucket so that a
/// ping flood cannot starve path MTU discovery.
const ERROR_RATE: u32 = 100;
const ERROR_BURST: u32 = 100;
/// Echo requests per second (burst in packets) the host answers.
const PING_RATE: u32 = 20;
const PING_BURST: u32 = 50;

/// Renders the whole transaction that replaces our table.
pub fn render(node: &Node, policy: &Policy, members: &[Member]) -> Nftables<'static> {
    let groups = GroupSets::new(&policy.rules, members);
    let mut objects = vec![
        add(NfListObject::Table(table())),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
        add(NfListObject::Table(table())),
    ];
    objects.extend(groups.sets());
    objects.push(add(base_chain(
        "input",
        NfChainType::Filter,
        NfHook::Input,
        0,
        NfChainPolicy::Drop,
    )));
    for r in input_rules(node) {
        objects.push(add(rule("input", r)));
    }
    objects.push(add(base_chain(
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
        NfChainPolicy::Drop,
    )));
    for r in forward_rules(node, policy, &groups) {
        objects.push(add(rule("forward", r)));
    }
    if policy.egress {
        // srcnat priority: after filtering, as masquerade must be.
        objects.push(add(base_chain(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            100,
            NfChainPolicy::Accept,
        )));
        for r in masquerade_rules(node) {
            objects.push(add(rule("postrouting", r)));
        }
    }
    Nftables {
        objects: objects.into(),
    }
}

/// The transaction that removes our table (and nothing else).
pub fn removal() -> Nftables<'static> {
    Nftables {
        objects: vec![
            add(NfListObject::Table(table())),
            NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
        ]
        .into(),
    }
}

fn input_rules(node: &Node) -> Vec<Vec<Statement<'static>>> {
    let wg = node.wg_interface.as_str();
    let mut rules = vec![
        vec![eq(meta(expr::MetaKey::Iifname), s("lo")), accept()],
        // Before the conntrack shortcut: a ping's echo requests after the first belong
        // to an established ICMP flow and would otherwise skip the limit.
        vec![
            eq(meta(expr::MetaKey::L4proto), s("icmp")),
            eq(payload("icmp", "type"), s("echo-request")),
            limit_over(PING_RATE, PING_BURST),
            drop(),
        ],
        vec![
            eq(meta(expr::MetaKey::L4proto), s("ipv6-icmp")),
            eq(payload("icmpv6", "type"), s("echo-request")),
            limit_over(PING_RATE, PING_BURST),
            drop(),
        ],
        vec![ct_state(&["established", "related"]), accept()],
        vec![ct_state(&["invalid"]), drop()],
        vec![
            eq(meta(expr::MetaKey::L4proto), s("icmp")),
            eq(
                payload("icmp", "type"),
                set_of(ICMP_ERRORS.iter().map(|t| s(t))),
            ),
            limit(ERROR_RATE, ERROR_BURST),
            accept(),
        ],
        vec![
            eq(meta(expr::MetaKey::L4proto), s("icmp")),
            eq(payload("icmp", "type"), s("echo-request")),
            accept(),
        ],
        vec![
            eq(meta(expr::MetaKey::L4proto), s("ipv6-icmp")),
            eq(
                payload("icmpv6", "type"),
                set_of(ICMPV6_ERRORS.iter().map(|t| s(t))),
            ),
            limit(ERROR_RATE, ERROR_BURST),
            accept(),
        ],
        vec![
            eq(meta(expr::MetaKey::L4proto), s("ipv6-icmp")),
            eq(
                payload("icmpv6", "type"),
                set_of(ICMPV6_DISCOVERY.iter().map(|t| s(t))),
            ),
            accept(),
        ],
        vec![
            eq(meta(expr::MetaKey::L4proto), s("ipv6-icmp")),
            eq(payload("icmpv6", "type"), s("echo-request")),
            accept(),
        ],
        vec![eq(payload("udp", "dport"), num(node.wg_port)), accept()],
    ];
    if !node.public_tcp_ports.is_empty() {
        let mut ports = node.public_tcp_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        rules.push(vec![
            eq(payload("tcp", "dport"), set_of(ports.into_iter().map(num))),
            accept(),
        ]);
    }
    if let Some(port) = node.metrics_port {
        // Metrics are for the VPN (and loopback, accepted above), never the WAN.
        rules.push(vec![
            eq(meta(expr::MetaKey::Iifname), s(wg)),
            eq(payload("tcp", "dport"), num(port)),
            accept(),
        ]);
    }
    // DHCP answers to the appliance's own lease requests: broadcast replies that
    // conntrack cannot match to the request.
    rules.push(vec![
        eq(payload("udp", "sport"), num(67)),
        eq(payload("udp", "dport"), num(68)),
        accept(),
    ]);
    rules.push(vec![
        eq(payload("ip6", "saddr"), link_local()),
        eq(payload("udp", "sport"), num(547)),
        eq(payload("udp", "dport"), num(546)),
        accept(),
    ]);
    rules
}

fn forward_rules(node: &Node, policy: &Policy, groups: &GroupSets) -> Vec<Vec<Statement<'static>>> {
    let wg = node.wg_interface.as_str();
    let mut rules = vec![
        vec![ct_state(&["established", "related"]), accept()],
        vec![ct_state(&["invalid"]), drop()],
    ];
    for r in &policy.rules {
        let Some(from) = groups.index(&r.from_group) else {
            continue;
        };
        for v6 in [false, true] {
            let (family, set_suffix) = if v6 { ("ip6", "v6") } else { ("ip", "v4") };
            let dest = match &r.to {
                Target::Group(g) => match groups.index(g) {
                    Some(i) => s(&format!("@g{i}_{set_suffix}")),
                    None => continue,
                },
                Target::Cidr(p) => {
                    if p.addr().is_ipv6() != v6 {
                        continue;
                    }
                    prefix(*p)
                }
            };
            let mut stmts = vec![
                eq(meta(expr::MetaKey::Iifname), s(wg)),
                eq(
                    payload(family, "saddr"),
                    s(&format!("@g{from}_{set_suffix}")),
                ),
                eq(payload(family, "daddr"), dest),
            ];
            stmts.extend(protocol_match(r, v6));
            stmts.push(accept());
            rules.push(stmts);
        }
    }
    if policy.egress {
        rules.push(vec![
            eq(meta(expr::MetaKey::Iifname), s(wg)),
            neq(meta(expr::MetaKey::Oifname), s(wg)),
            accept(),
        ]);
    }
    rules
}

fn protocol_match(r: &Rule, v6: bool) -> Vec<Statement<'static>> {
    let l4 = |name: &str| eq(meta(expr::MetaKey::L4proto), s(name));
    let ports = |proto: &str| {
        if r.ports.is_empty() {
            return vec![l4(proto)];
        }
        let items = merged(&r.ports).into_iter().map(|p| {
            if p.first == p.last {
                num(p.first)
            } else {
                Expression::Range(Box::new(expr::Range {
                    range: [num(p.first), num(p.last)],
                }))
            }
        });
        vec![l4(proto), eq(payload(proto, "dport"), set_of(items))]
    };
    match r.protocol {
        Protocol::Any => Vec::new(),
        Protocol::Tcp => ports("tcp"),
        Protocol::Udp => ports("udp"),
        Protocol::Icmp => vec![l4(if v6 { "ipv6-icmp" } else { "icmp" })],
    }
}

/// Sorted, with overlapping and adjacent ranges joined: nft refuses overlapping
/// intervals in one set, and the operator may well list `80` and `1-1024` together.
fn merged(ports: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ports.to_vec();
    sorted.sort_by_key(|p| (p.first, p.last));
    let mut out: Vec<PortRange> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some(last) if u32::from(p.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(p.last);
            }
            _ => out.push(p),
        }
    }
    out
}

fn masquerade_rules(node: &Node) -> Vec<Vec<Statement<'static>>> {
    let wg = node.wg_interface.as_str();
    let mut nets = vec![("ip", node.vpn_v4)];
    if let Some(v6) = node.vpn_v6 {
        nets.push(("ip6", v6));
    }
    nets.into_iter()
        .map(|(family, net)| {
            vec![
                eq(payload(family, "saddr"), prefix(net)),
                neq(meta(expr::MetaKey::Oifname), s(wg)),
                Statement::Masquerade(None),
            ]
        })
        .collect()
}

/// Groups that rules refer to, numbered in name order, with their members' addresses.
struct GroupSets {
    index: BTreeMap<String, usize>,
    v4: Vec<BTreeSet<IpAddr>>,
    v6: Vec<BTreeSet<IpAddr>>,
}

impl GroupSets {
    fn new(rules: &[Rule], members: &[Member]) -> GroupSets {
        let mut names = BTreeSet::new();
        for r in rules {
            names.insert(r.from_group.clone());
            if let Target::Group(g) = &r.to {
                names.insert(g.clone());
            }
        }
        let index: BTreeMap<String, usize> =
            names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        let mut v4 = vec![BTreeSet::new(); index.len()];
        let mut v6 = vec![BTreeSet::new(); index.len()];
        for m in members {
            for g in &m.groups {
                let Some(&i) = index.get(g) else { continue };
                for a in &m.addresses {
                    match a {
                        IpAddr::V4(_) => v4[i].insert(*a),
                        IpAddr::V6(_) => v6[i].insert(*a),
                    };
                }
            }
        }
        GroupSets { index, v4, v6 }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn sets(&self) -> Vec<NfObject<'static>> {
        let mut out = Vec::new();
        for i in 0..self.index.len() {
            for (suffix, ty, addrs) in [
                ("v4", schema::SetType::Ipv4Addr, &self.v4[i]),
                ("v6", schema::SetType::Ipv6Addr, &self.v6[i]),
            ] {
                let elem: Vec<Expression<'static>> =
                    addrs.iter().map(|a| s(&a.to_string())).collect();
                out.push(add(NfListObject::Set(Box::new(schema::Set {
                    family: NfFamily::INet,
                    table: TABLE.into(),
                    name: format!("g{i}_{suffix}").into(),
                    set_type: SetTypeValue::Single(ty),
                    elem: (!elem.is_empty()).then(|| Cow::Owned(elem)),
                    ..Default::default()
                }))));
            }
        }
        out
    }
}

fn add(obj: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(obj))
}

fn table() -> schema::Table<'static> {
    schema::Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(
    name: &'static str,
    ty: NfChainType,
    hook: NfHook,
    prio: i32,
    policy: NfChainPolicy,
) -> NfListObject<'static> {
    NfListObject::Chain(schema::Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(policy),
        ..Default::default()
    })
}

fn rule(chain: &'static str, stmts: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(schema::Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: stmts.into(),
        ..Default::default()
    })
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn num(v: u16) -> Expression<'static> {
    Expression::Number(u32::from(v))
}

fn set_of(items: impl Iterator<Item = Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.map(expr::SetItem::Element).collect(),
    ))
}

fn meta(key: expr::MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(expr::Meta { key }))
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(expr::Payload::PayloadField(
        expr::PayloadField {
            protocol: Cow::Owned(protocol.to_string()),
            field: Cow::Owned(field.to_string()),
        },
    )))
}

fn prefix(p: IpPrefix) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(expr::Prefix {
        addr: Box::new(s(&p.addr().to_string())),
        len: u32::from(p.prefix_len()),
    }))
}

/// `fe80::/10`, where DHCPv6 servers answer from.
fn link_local() -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(expr::Prefix {
        addr: Box::new(s("fe80::")),
        len: 10,
    }))
}

fn ct_state(states: &[&str]) -> Statement<'static> {
    let right = if states.len() == 1 {
        s(states[0])
    } else {
        Expression::List(states.iter().map(|v| s(v)).collect())
    };
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(expr::CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        right,
        op: Operator::IN,
    })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn neq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

/// Matches packets beyond `rate` per second (after a burst).
fn limit_over(rate: u32, burst: u32) -> Statement<'static> {
    match limit(rate, burst) {
        Statement::Limit(l) => Statement::Limit(stmt::Limit {
            inv: Some(true),
            ..l
        }),
        other => other,
    }
}

fn limit(rate: u32, burst: u32) -> Statement<'static> {
    Statement::Limit(stmt::Limit {
        rate,
        rate_unit: None,
        per: Some("second".into()),
        burst: Some(burst),
        burst_unit: None,
        inv: None,
    })
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn port_lists_merge_into_disjoint_sorted_ranges() {
        assert_eq!(
            merged(&[
                r(8080, 8080),
                r(1, 1024),
                r(80, 80),
                r(1025, 1030),
                r(8080, 8080),
                r(9000, 9100)
            ]),
            vec![r(1, 1030), r(8080, 8080), r(9000, 9100)]
        );
        assert_eq!(
            merged(&[r(65535, 65535), r(65534, 65535)]),
            vec![r(65534, 65535)]
        );
        assert!(merged(&[]).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn range() -> impl Strategy<Value = PortRange> {
        // Small ports as often as any, so that ranges overlap and touch.
        let port = prop_oneof![1u16..40, 65500u16..=65535, 1u16..=65535];
        (port.clone(), port).prop_map(|(a, b)| PortRange {
            first: a.min(b),
            last: a.max(b),
        })
    }

    fn covers(ranges: &[PortRange], port: u32) -> bool {
        ranges
            .iter()
            .any(|r| u32::from(r.first) <= port && port <= u32::from(r.last))
    }

    proptest! {
        /// Merging gives sorted, disjoint, non-adjacent ranges (what nft takes in one set)
        /// covering exactly the ports listed.
        #[test]
        fn merged_ranges_are_disjoint_sorted_and_cover_the_same_ports(
            ports in proptest::collection::vec(range(), 0..8)
        ) {
            let out = merged(&ports);
            for r in &out {
                prop_assert!(r.first <= r.last);
            }
            for w in out.windows(2) {
                prop_assert!(u32::from(w[0].last) + 1 < u32::from(w[1].first), "{:?}", w);
            }
            // Two unions of ranges that differ somewhere differ at the first port of a
            // range or at the port after one: comparing there compares all 65535.
            for r in ports.iter().chain(&out) {
                for p in [u32::from(r.first), u32::from(r.last) + 1] {
                    prop_assert_eq!(covers(&out, p), covers(&ports, p), "port {}", p);
                }
            }
        }
    }
}

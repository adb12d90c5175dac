//! Forward rules in their written form: what the API receives and the store keeps.
//!
//! [`RuleSpec`] is the rule as text (the JSON shape of `/api/firewall` and of the stored
//! policy); `Rule::try_from(spec)` is the one place that text is checked and parsed.
//! Errors say what is wrong in words an operator can act on.

use crate::policy::{PortRange, Protocol, Rule, Target};
use std::fmt;
use std::str::FromStr;
use watchgrid_core::PrefixError;

/// A forward rule as written: `to_group` or `to_cidr` (exactly one), `protocol`, and
/// ports or ranges as strings (`"22"`, `"9000-9100"`; empty means all ports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub from_group: String,
    #[serde(default)]
    pub to_group: Option<String>,
    #[serde(default)]
    pub to_cidr: Option<String>,
    pub protocol: String,
    #[serde(default)]
    pub ports: Vec<String>,
}

/// What is wrong with one part of a written rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("give exactly one of to_group and to_cidr")]
    Target,
    #[error("to_cidr {cidr:?}: {source}")]
    Cidr { cidr: String, source: PrefixError },
    #[error("protocol: tcp, udp, icmp or any")]
    Protocol(String),
    #[error("ports need protocol tcp or udp")]
    PortsWithoutTcpOrUdp,
    #[error("ports: {0:?} is not a port (1-65535) or range (A-B)")]
    Port(String),
}

/// A written rule that does not parse, naming the rule and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the forward rule {rule}: {reason}")]
pub struct InvalidRule {
    /// The rule as the operator wrote it (groups, target, protocol).
    pub rule: String,
    pub reason: RuleError,
}

impl FromStr for Protocol {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            "any" => Ok(Protocol::Any),
            other => Err(RuleError::Protocol(other.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        })
    }
}

impl FromStr for PortRange {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::Port(s.to_string());
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(bad)
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl TryFrom<String> for PortRange {
    type Error = RuleError;
    fn try_from(s: String) -> Result<Self, RuleError> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

impl RuleSpec {
    /// The rule in a few words, to name it in errors.
    fn describe(&self) -> String {
        let to = match (&self.to_group, &self.to_cidr) {
            (Some(g), None) => format!("to group {g:?}"),
            (None, Some(c)) => format!("to {c:?}"),
            _ => "with no single target".to_string(),
        };
        format!(
            "from group {:?} {to} ({:?})",
            self.from_group, self.protocol
        )
    }

    /// Parses every part; the first problem found is the error.
    fn parse(&self) -> Result<Rule, RuleError> {
        let to = match (&self.to_group, &self.to_cidr) {
            (Some(g), None) => Target::Group(g.clone()),
            (None, Some(c)) => {
                Target::Cidr(c.trim().parse().map_err(|source| RuleError::Cidr {
                    cidr: c.clone(),
                    source,
                })?)
            }
            _ => return Err(RuleError::Target),
        };
        let protocol: Protocol = self.protocol.parse()?;
        if !self.ports.is_empty() && !matches!(protocol, Protocol::Tcp | Protocol::Udp) {
            return Err(RuleError::PortsWithoutTcpOrUdp);
        }
        let ports = self
            .ports
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<PortRange>, _>>()?;
        Ok(Rule {
            from_group: self.from_group.clone(),
            to,
            protocol,
            ports,
        })
    }
}

impl TryFrom<RuleSpec> for Rule {
    type Error = InvalidRule;
    fn try_from(spec: RuleSpec) -> Result<Rule, InvalidRule> {
        spec.parse().map_err(|reason| InvalidRule {
            rule: spec.describe(),
            reason,
        })
    }
}

impl From<Rule> for RuleSpec {
    fn from(r: Rule) -> RuleSpec {
        let (to_group, to_cidr) = match r.to {
            Target::Group(g) => (Some(g), None),
            Target::Cidr(c) => (None, Some(c.to_string())),
        };
        RuleSpec {
            from_group: r.from_group,
            to_group,
            to_cidr,
            protocol: r.protocol.to_string(),
            ports: r.ports.iter().map(PortRange::to_string).collect(),
        }
    }
}

impl From<&Rule> for RuleSpec {
    fn from(r: &Rule) -> RuleSpec {
        RuleSpec::from(r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        to_group: Option<&str>,
        to_cidr: Option<&str>,
        protocol: &str,
        ports: &[&str],
    ) -> RuleSpec {
        RuleSpec {
            from_group: "laptops".into(),
            to_group: to_group.map(Into::into),
            to_cidr: to_cidr.map(Into::into),
            protocol: protocol.into(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_written_rule_parses_and_writes_back_the_same() {
        let written = spec(Some("servers"), None, "tcp", &["22", "9000-9100"]);
        let rule = Rule::try_from(written.clone()).expect("valid");
        assert_eq!(rule.protocol, Protocol::Tcp);
        assert_eq!(
            rule.ports,
            vec![
                PortRange {
                    first: 22,
                    last: 22
                },
                PortRange {
                    first: 9000,
                    last: 9100
                }
            ]
        );
        assert_eq!(RuleSpec::from(&rule), written);
        let lan = spec(None, Some("192.168.60.0/24"), "any", &[]);
        let rule = Rule::try_from(lan.clone()).expect("valid");
        assert_eq!(
            rule.to,
            Target::Cidr("192.168.60.0/24".parse().expect("cidr"))
        );
        assert_eq!(RuleSpec::from(rule), lan);
    }

    #[test]
    fn each_kind_of_mistake_has_its_reason() {
        let reason = |s: RuleSpec| Rule::try_from(s).expect_err("invalid").reason;
        assert_eq!(
            reason(spec(Some("a"), Some("10.0.0.0/8"), "tcp", &[])),
            RuleError::Target
        );
        assert_eq!(reason(spec(None, None, "tcp", &[])), RuleError::Target);
        assert!(matches!(
            reason(spec(None, Some("10.0.0.0/33"), "tcp", &[])),
            RuleError::Cidr { .. }
        ));
        assert_eq!(
            reason(spec(Some("a"), None, "sctp", &[])),
            RuleError::Protocol("sctp".into())
        );
        assert_eq!(
            reason(spec(Some("a"), None, "icmp", &["22"])),
            RuleError::PortsWithoutTcpOrUdp
        );
        for bad in ["0", "90-80", "22; flush ruleset", "65536", "-"] {
            assert_eq!(
                reason(spec(Some("a"), None, "udp", &[bad])),
                RuleError::Port(bad.into())
            );
        }
    }

    #[test]
    fn the_error_names_the_rule() {
        let e = Rule::try_from(spec(Some("servers"), None, "sctp", &[])).expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "the forward rule from group \"laptops\" to group \"servers\" (\"sctp\"): protocol: tcp, udp, icmp or any"
        );
    }

    #[test]
    fn serde_reads_and_writes_the_written_form() {
        let json = r#"{"from_group":"laptops","to_group":"servers","to_cidr":null,"protocol":"udp","ports":["53","9000-9100"]}"#;
        let rule: Rule = serde_json::from_str(json).expect("decode");
        assert_eq!(rule.protocol, Protocol::Udp);
        assert_eq!(serde_json::to_string(&rule).expect("encode"), json);
        let bad = r#"{"from_group":"ops","to_cidr":"10.0.0.0/8","protocol":"udp","ports":["0"]}"#;
        let e = serde_json::from_str::<Rule>(bad).expect_err("invalid");
        assert!(
            e.to_string()
                .contains("from group \"ops\" to \"10.0.0.0/8\""),
            "{e}"
        );
        assert!(e.to_string().contains("\"0\" is not a port"), "{e}");
    }
}

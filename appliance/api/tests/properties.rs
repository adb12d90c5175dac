//! Property tests of the API's JSON bodies and validators: the DTOs round-trip and refuse
//! what they document, the setup validators accept exactly their language, and through
//! the in-process router heartbeats are accepted exactly when valid while the wg-quick
//! files the API renders say what its JSON says.

mod common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use watchgrid_api::dto::{
    Acked, AgentConfig, CommandError, CommandErrorKind, CommandOrder, CommandOrders, CommandReport,
    Heartbeat, HeartbeatAnswer, LogBatch, LoginBatch, LoginEvent, LoginOutcome, Registration,
};
use watchgrid_api::routes::setup::{
    parse_vpn_subnet, validate_endpoint, validate_password, validate_username,
};
use watchgrid_core::Secret;
use watchgrid_logstore::LogLine;
use watchgrid_store::Sensitive;

// ---------------------------------------------------------------- strategies

/// Text of every kind the API meets: plain, non-ASCII (so that characters and bytes
/// differ), with control characters, and anything at all.
fn text(max: usize) -> impl Strategy<Value = String> {
    let re = |class: &str| {
        proptest::string::string_regex(&format!("{class}{{0,{max}}}")).expect("a regex")
    };
    prop_oneof![
        re("[a-zA-Z0-9 ._-]"),
        re("[é€😀a]"),
        re("[a-z\n\t\u{0}\u{7f}\u{85}]"),
        any::<String>(),
    ]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        (
            text(70),
            proptest::option::of(text(260)),
            proptest::option::of(text(260)),
            proptest::option::of(text(260)),
            proptest::option::of(any::<u64>()),
            proptest::option::of(vec(-1e6f64..1e6, 0..5)),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |((agent_version, hostname, os, kernel, uptime_s, load), (a, b, c, d, e, f, g, h))| {
                Heartbeat {
                    agent_version,
                    hostname,
                    os,
                    kernel,
                    uptime_s,
                    load,
                    memory_total_bytes: a,
                    memory_available_bytes: b,
                    disk_total_bytes: c,
                    disk_available_bytes: d,
                    tunnel_rx_bytes: e,
                    tunnel_tx_bytes: f,
                    last_handshake_s: g,
                    log_lines_dropped: h,
                }
            },
        )
}

fn login_event() -> impl Strategy<Value = LoginEvent> {
    (
        any::<u64>(),
        any::<u64>(),
        select(vec![
            LoginOutcome::Accepted,
            LoginOutcome::Failed,
            LoginOutcome::InvalidUser,
            LoginOutcome::RootSession,
            LoginOutcome::SudoRoot,
        ]),
        text(40),
        proptest::option::of(prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        ]),
        proptest::option::of(any::<u16>()),
        proptest::option::of(text(20)),
        text(20),
        proptest::option::of(text(80)),
    )
        .prop_map(
            |(seq, ts_us, outcome, user, source_ip, source_port, method, service, raw)| {
                LoginEvent {
                    seq,
                    ts_us,
                    outcome,
                    user,
                    source_ip,
                    source_port,
                    method,
                    service,
                    raw,
                }
            },
        )
}

fn log_line() -> impl Strategy<Value = LogLine> {
    (
        any::<u64>(),
        any::<u64>(),
        text(30),
        proptest::option::of(text(20)),
        proptest::option::of(0u8..8),
        text(120),
        any::<bool>(),
    )
        .prop_map(
            |(seq, ts_us, source, unit, priority, message, truncated)| LogLine {
                seq,
                ts_us,
                source,
                unit,
                priority,
                message,
                truncated,
            },
        )
}

fn command_report() -> impl Strategy<Value = CommandReport> {
    (
        text(20),
        proptest::option::of(any::<i32>()),
        proptest::option::of(
            (
                select(vec![
                    CommandErrorKind::Timeout,
                    CommandErrorKind::Interrupted,
                    CommandErrorKind::Refused,
                    CommandErrorKind::Spawn,
                ]),
                text(40),
            )
                .prop_map(|(kind, message)| CommandError { kind, message }),
        ),
        text(200),
        text(200),
        any::<(bool, bool)>(),
        any::<(u64, u64)>(),
    )
        .prop_map(
            |(id, exit_code, error, stdout, stderr, (t1, t2), (started_at, duration_ms))| {
                CommandReport {
                    id,
                    exit_code,
                    error,
                    stdout,
                    stderr,
                    stdout_truncated: t1,
                    stderr_truncated: t2,
                    started_at,
                    duration_ms,
                }
            },
        )
}

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn agent_config() -> impl Strategy<Value = AgentConfig> {
    (
        text(20),
        text(30),
        proptest::option::of(text(40)),
        key(),
        text(40),
        vec(text(40), 0..3),
        any::<u16>(),
    )
        .prop_map(
            |(device_id, address, address_v6, hub_public_key, endpoint, allowed_ips, ka)| {
                AgentConfig {
                    device_id,
                    address,
                    address_v6,
                    hub_public_key,
                    endpoint,
                    allowed_ips,
                    persistent_keepalive: ka,
                }
            },
        )
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("a DTO serialises")
}

/// One of every request and answer body the agent API exchanges, as JSON.
fn any_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        heartbeat().prop_map(|x| to_json(&x)),
        vec(login_event(), 0..3).prop_map(|events| to_json(&LoginBatch { events })),
        vec(log_line(), 0..3).prop_map(|lines| to_json(&LogBatch { lines })),
        command_report().prop_map(|x| to_json(&x)),
        vec((text(10), vec(text(10), 0..3), any::<u32>()), 0..3).prop_map(|c| {
            let commands = c
                .into_iter()
                .map(|(id, argv, timeout_s)| CommandOrder {
                    id,
                    argv,
                    timeout_s,
                })
                .collect();
            to_json(&CommandOrders { commands })
        }),
        agent_config().prop_map(|x| to_json(&x)),
        (text(30), agent_config()).prop_map(|(k, config)| to_json(&Registration {
            agent_key: Sensitive::new(k),
            config
        })),
        (
            any::<u64>(),
            text(20),
            any::<u32>(),
            proptest::option::of(text(20))
        )
            .prop_map(|(i, e, c, ssh_etag)| to_json(&HeartbeatAnswer {
                interval_s: i,
                config_etag: e,
                commands_pending: c,
                ssh_etag,
            })),
        any::<u64>().prop_map(|acked_seq| to_json(&Acked { acked_seq })),
    ]
}

// ---------------------------------------------------------------- JSON DTOs

/// The same JSON, but for floats, which serde_json reads back to within an ulp or so
/// (its exact `float_roundtrip` parsing is not enabled; load averages do not need it).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Serialise, parse back, serialise again: the same JSON.
fn round_trips<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, TestCaseError> {
    let text = serde_json::to_string(v).expect("encode");
    let back: T =
        serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
    let (before, after) = (to_json(v), to_json(&back));
    prop_assert!(same_json(&before, &after), "{} became {}", before, after);
    Ok(back)
}

/// Parses `bytes` as every body type; whatever parses must serialise and parse back the same.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(v) = serde_json::from_slice::<T>(bytes) {
            round_trips(&v)?;
        }
        Ok(())
    }
    one::<Heartbeat>(bytes)?;
    one::<LoginBatch>(bytes)?;
    one::<LogBatch>(bytes)?;
    one::<CommandReport>(bytes)?;
    one::<CommandOrders>(bytes)?;
    one::<AgentConfig>(bytes)?;
    one::<Registration>(bytes)?;
    one::<HeartbeatAnswer>(bytes)?;
    one::<Acked>(bytes)
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Replace(prop::sample::Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![select(b"{}[]\":,0-e.nt\\ ".to_vec()), any::<u8>()];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
    ]
}

proptest! {
    /// Every body the agent API exchanges serialises and parses back to the same value.
    #[test]
    fn dto_bodies_round_trip_through_json(
        hb in heartbeat(),
        events in vec(login_event(), 0..4),
        lines in vec(log_line(), 0..4),
        report in command_report(),
        config in agent_config(),
        agent_key in text(40),
    ) {
        round_trips(&hb)?;
        let batch = LoginBatch { events };
        prop_assert_eq!(round_trips(&batch)?.events, batch.events);
        let logs = LogBatch { lines };
        prop_assert_eq!(round_trips(&logs)?.lines, logs.lines);
        round_trips(&report)?;
        prop_assert_eq!(&round_trips(&config)?, &config);
        let reg = Registration { agent_key: Sensitive::new(agent_key), config };
        let back = round_trips(&reg)?;
        prop_assert_eq!(back.config, reg.config);
        prop_assert_eq!(back.agent_key.expose(), reg.agent_key.expose());
    }

    /// Arbitrary bytes, and valid bodies with a few bytes changed: never a panic, and
    /// whatever still parses round-trips.
    #[test]
    fn damaged_bodies_parse_or_are_refused(
        body in any_body(),
        edits in vec(edit(), 0..6),
        raw in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = serde_json::to_vec(&body).expect("encode");
        for e in edits {
            match e {
                Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
                Edit::Remove(i) if !bytes.is_empty() => {
                    bytes.remove(i.index(bytes.len()));
                }
                Edit::Replace(i, b) if !bytes.is_empty() => {
                    let at = i.index(bytes.len());
                    bytes[at] = b;
                }
                _ => {}
            }
        }
        decode_all(&bytes)?;
        decode_all(&raw)?;
    }

    /// The strict bodies (`deny_unknown_fields`) refuse any field they do not have.
    #[test]
    fn strict_bodies_refuse_unknown_fields(
        hb in heartbeat(),
        event in login_event(),
        line in log_line(),
        report in command_report(),
        name in "[a-z_]{1,12}",
        value in prop_oneof![Just(Value::Null), Just(json!(1)), Just(json!("x"))],
    ) {
        fn refuses<T: Serialize + DeserializeOwned>(v: &T, name: &str, value: &Value) -> Result<(), TestCaseError> {
            let mut obj = serde_json::to_value(v).expect("encode");
            let map = obj.as_object_mut().expect("an object");
            if map.contains_key(name) {
                return Ok(());
            }
            map.insert(name.to_string(), value.clone());
            prop_assert!(serde_json::from_value::<T>(obj.clone()).is_err(), "{} accepted", obj);
            Ok(())
        }
        refuses(&hb, &name, &value)?;
        refuses(&event, &name, &value)?;
        refuses(&line, &name, &value)?;
        refuses(&report, &name, &value)?;
        refuses(&LoginBatch { events: vec![event] }, &name, &value)?;
        refuses(&LogBatch { lines: vec![line] }, &name, &value)?;
        refuses(&CommandOrders { commands: vec![] }, &name, &value)?;
    }
}

// ---------------------------------------------------------------- setup validators

fn outside(allowed: &'static str) -> impl Strategy<Value = char> {
    any::<char>().prop_filter("a character outside the set", move |c| {
        !(c.is_ascii_alphanumeric() || allowed.contains(*c))
    })
}

proptest! {
    /// Usernames: 1 to 64 of letters, digits, '.', '_', '-'; nothing else.
    #[test]
    fn usernames_are_exactly_1_to_64_safe_characters(
        good in "[A-Za-z0-9._-]{1,64}",
        long in "[A-Za-z0-9._-]{65,80}",
        bad in outside("._-"),
        at in any::<prop::sample::Index>(),
    ) {
        prop_assert!(validate_username(&good).is_ok(), "{:?}", good);
        prop_assert!(validate_username(&long).is_err());
        prop_assert!(validate_username("").is_err());
        let mut chars: Vec<char> = good.chars().collect();
        chars.insert(at.index(chars.len() + 1), bad);
        let spoiled: String = chars.into_iter().collect();
        prop_assert!(validate_username(&spoiled).is_err(), "{:?}", spoiled);
    }

    /// Passwords: at least 12 characters (not bytes), at most 1024 bytes.
    #[test]
    fn passwords_count_characters_and_cap_bytes(s in any::<String>(), wide in "[é€😀]{1,30}") {
        let chars = s.chars().count();
        prop_assert_eq!(validate_password(&s).is_ok(), chars >= 12 && s.len() <= 1024);
        let wide_chars = wide.chars().count();
        prop_assert_eq!(validate_password(&wide).is_ok(), wide_chars >= 12);
        prop_assert!(validate_password(&"x".repeat(1025)).is_err());
    }

    /// Endpoints: HOST:PORT with a DNS-ish host or an IP (IPv6 in brackets) and a port
    /// 1 to 65535.
    #[test]
    fn endpoints_are_host_and_nonzero_port(
        host in prop_oneof![
            "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}",
            any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_string()),
            any::<u128>().prop_map(|a| format!("[{}]", std::net::Ipv6Addr::from(a))),
        ],
        port in 1u32..=65535,
        bad_port in prop_oneof![Just("0".to_string()), (65536u32..1_000_000).prop_map(|p| p.to_string()), "[a-z]{1,3}", Just(String::new())],
        bad_char in outside(".-:[]"),
    ) {
        prop_assert!(validate_endpoint(&format!("{host}:{port}")).is_ok(), "{}:{}", host, port);
        prop_assert!(validate_endpoint(&format!("{host}:{bad_port}")).is_err(), "{}:{}", host, bad_port);
        if !host.contains(':') {
            prop_assert!(validate_endpoint(&host).is_err(), "{} without a port", host);
        }
        let spoiled = format!("{host}{bad_char}:{port}");
        prop_assert!(validate_endpoint(&spoiled).is_err(), "{:?}", spoiled);
        let no_host = format!(":{port}");
        prop_assert!(validate_endpoint(&no_host).is_err(), "{:?}", no_host);
    }

    /// VPN subnets: a private IPv4 network address (10/8, 172.16/12, 192.168/16) with a
    /// length of 8 to 29; a CIDR with host bits set is refused, not rounded down.
    #[test]
    fn vpn_subnets_are_private_network_addresses(a in prop_oneof![
        any::<u32>(),
        (any::<u32>()).prop_map(|x| 0x0a00_0000 | (x & 0x00ff_ffff)),
        (any::<u32>()).prop_map(|x| 0xac10_0000 | (x & 0x000f_ffff)),
        (any::<u32>()).prop_map(|x| 0xc0a8_0000 | (x & 0x0000_ffff)),
    ], len in 0u32..=40, clear in any::<bool>(), pad in " ?") {
        let a = if clear && len <= 32 { a & u32::MAX.checked_shl(32 - len).unwrap_or(0) } else { a };
        let private = a >> 24 == 10 || a >> 20 == 0xac1 || a >> 16 == 0xc0a8;
        let host_bits = len <= 32 && a & !u32::MAX.checked_shl(32 - len).unwrap_or(0) != 0;
        let ok = (8..=29).contains(&len) && private && !host_bits;
        let text = format!("{pad}{}/{len}{pad}", Ipv4Addr::from(a));
        match parse_vpn_subnet(&text) {
            Ok((addr, l)) => {
                prop_assert!(ok, "{} accepted", text);
                prop_assert_eq!((u32::from(addr), u32::from(l)), (a, len));
            }
            Err(_) => prop_assert!(!ok, "{} refused", text),
        }
    }
}

// ---------------------------------------------------------------- through the API

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `test` on `cases` values of `strategy`, panicking with the minimal failure.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config::with_cases(cases));
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(why, value)) => panic!("{why}\nminimal failing input: {value:#?}"),
        Err(e) => panic!("{e}"),
    }
}

/// An enrollment token for many registrations.
async fn enrollment_token(a: &App, admin: &str) -> String {
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &json!({"uses": 10000})),
            admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["token"].as_str().expect("token").to_string()
}

/// Registers a device (from its own address, so the per-IP limit never bites).
async fn register(a: &App, token: &str, hostname: &str, key: &PublicKey, n: u32) -> Resp {
    let body = json!({"token": token, "public_key": key.to_string(), "hostname": hostname});
    let from = format!(
        "10.{}.{}.{}:40000",
        200 + n / 65536 % 50,
        n / 256 % 256,
        n % 256
    );
    a.call_from(&from, post("/api/register", &body)).await
}

/// A wg-quick file read back: `(section, key, value)` in order; comments and blank
/// lines dropped.
fn read_wg_quick(text: &str) -> Result<Vec<(String, String, String)>, TestCaseError> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| TestCaseError::fail(format!("{line:?} is not Key = Value")))?;
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

fn field<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
}

/// Heartbeats are accepted exactly when every text field is within its length in
/// characters and free of control characters and `load` has at most three values;
/// everything else is 422, never a server error.
#[test]
fn heartbeats_are_accepted_exactly_when_valid() {
    let rt = runtime();
    let a = rt.block_on(async { app() });
    let key = rt.block_on(async {
        let admin = a.admin_token().await;
        let token = enrollment_token(&a, &admin).await;
        let r = register(&a, &token, "agent1", &PublicKey([9; 32]), 1).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["agent_key"].as_str().expect("key").to_string()
    });
    let outcomes = std::cell::RefCell::new(HashSet::new());
    check(96, heartbeat(), |hb| {
        let texts = [
            (Some(&hb.agent_version), 64),
            (hb.hostname.as_ref(), 253),
            (hb.os.as_ref(), 256),
            (hb.kernel.as_ref(), 256),
        ];
        let valid = texts.iter().all(|(t, max)| {
            t.is_none_or(|t| t.chars().count() <= *max && !t.chars().any(char::is_control))
        }) && hb.load.as_ref().is_none_or(|l| l.len() <= 3);
        let body = serde_json::to_value(&hb).expect("encode");
        let r = rt.block_on(a.call(bearer(post("/api/heartbeat", &body), &key)));
        let expected = if valid {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        prop_assert_eq!(r.status, expected, "{}", r.text);
        outcomes.borrow_mut().insert(valid);
        if valid {
            prop_assert_eq!(r.json["interval_s"].as_u64(), Some(30));
        } else {
            prop_assert!(r.json["error"].is_string());
        }
        Ok(())
    });
    assert_eq!(
        outcomes.into_inner().len(),
        2,
        "both valid and invalid heartbeats were sent"
    );
}

/// The wg-quick file of a device created by the admin says what the JSON answer says:
/// its key pair (the private key only when the server made it), its addresses, the hub's
/// key and endpoint, and what to route. Names are accepted exactly when valid.
#[test]
fn device_wg_quick_files_say_what_the_api_says() {
    let rt = runtime();
    let a = rt.block_on(async { app() });
    let admin = rt.block_on(a.admin_token());
    let used_keys = std::cell::RefCell::new(HashSet::new());
    let name = prop_oneof![
        3 => "[A-Za-z0-9.-]{1,63}",
        1 => "[A-Za-z0-9.-]{64,70}",
        1 => "[A-Za-z0-9 _/<>é-]{0,10}",
    ];
    let device = (name, proptest::option::of(key()), vec("[a-z]{1,8}", 0..3));
    let outcomes = std::cell::RefCell::new(HashSet::new());
    check(48, device, |(name, key, groups)| {
        let valid_name = (1..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        let key = key.filter(|k| !k.is_low_order() && used_keys.borrow_mut().insert(*k));
        let mut body = json!({"name": name, "groups": groups});
        if let Some(k) = &key {
            body["public_key"] = json!(k.to_string());
        }
        let r = rt.block_on(a.call(bearer(post("/api/devices", &body), &admin)));
        outcomes.borrow_mut().insert((valid_name, key.is_some()));
        if !valid_name {
            prop_assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
            return Ok(());
        }
        prop_assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let dev = &r.json["device"];
        prop_assert_eq!(dev["name"].as_str(), Some(name.as_str()));
        let entries = read_wg_quick(r.json["config"].as_str().expect("config"))?;
        let keys: Vec<(&str, &str)> = entries
            .iter()
            .map(|(s, k, _)| (s.as_str(), k.as_str()))
            .collect();
        prop_assert_eq!(
            keys,
            vec![
                ("[Interface]", "PrivateKey"),
                ("[Interface]", "Address"),
                ("[Peer]", "PublicKey"),
                ("[Peer]", "Endpoint"),
                ("[Peer]", "AllowedIPs"),
                ("[Peer]", "PersistentKeepalive"),
            ]
        );
        let private = field(&entries, "[Interface]", "PrivateKey").expect("private key");
        let public = dev["public_key"].as_str().expect("public key");
        match &key {
            Some(k) => {
                prop_assert_eq!(public, k.to_string());
                prop_assert!(r.json["private_key"].is_null());
                prop_assert!(Secret::from_base64(private).is_err(), "a placeholder");
            }
            None => {
                let secret = Secret::from_base64(private).expect("the generated key");
                prop_assert_eq!(secret.public_key().to_string(), public);
                prop_assert_eq!(r.json["private_key"].as_str(), Some(private));
            }
        }
        let mut address = dev["address"].as_str().expect("address").to_string();
        if let Some(v6) = dev["address_v6"].as_str() {
            address = format!("{address}, {v6}");
        }
        let in_file: Vec<String> = field(&entries, "[Interface]", "Address")
            .expect("address")
            .split(", ")
            .map(|a| a.split('/').next().unwrap_or_default().to_string())
            .collect();
        prop_assert_eq!(in_file.join(", "), address);
        let hub = PublicKey([0x1d; 32]).to_string();
        prop_assert_eq!(field(&entries, "[Peer]", "PublicKey"), Some(hub.as_str()));
        prop_assert_eq!(
            field(&entries, "[Peer]", "Endpoint"),
            Some("vpn.example.com:51820")
        );
        let routed: Vec<IpPrefix> = field(&entries, "[Peer]", "AllowedIPs")
            .expect("allowed ips")
            .split(", ")
            .map(|p| {
                p.parse()
                    .map_err(|e| TestCaseError::fail(format!("{p}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let v4: IpAddr = dev["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("v4");
        prop_assert!(
            routed.iter().any(|p| p.contains(v4)),
            "{:?} misses {}",
            routed,
            v4
        );
        prop_assert_eq!(field(&entries, "[Peer]", "PersistentKeepalive"), Some("25"));
        Ok(())
    });
    // Valid and invalid names, server-made and own keys, all were tried.
    assert!(outcomes.into_inner().len() >= 3);
}

/// An agent's config as wg-quick is its JSON config, field for field, whatever it
/// registered with; and the JSON parses as the `AgentConfig` DTO.
#[test]
fn agent_wg_quick_config_is_its_json_config() {
    let rt = runtime();
    let a = rt.block_on(async { app() });
    let token = rt.block_on(async {
        let admin = a.admin_token().await;
        enrollment_token(&a, &admin).await
    });
    let n = std::cell::Cell::new(10u32);
    let used_keys = std::cell::RefCell::new(HashSet::new());
    check(32, ("[A-Za-z0-9.-]{1,63}", key()), |(hostname, key)| {
        prop_assume!(!key.is_low_order() && used_keys.borrow_mut().insert(key));
        n.set(n.get() + 1);
        let r = rt.block_on(register(&a, &token, &hostname, &key, n.get()));
        prop_assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let agent_key = r.json["agent_key"].as_str().expect("agent key").to_string();
        let registered: Registration =
            serde_json::from_value(r.json.clone()).expect("a Registration");
        let json = rt.block_on(a.call(bearer(get("/api/wg/config"), &agent_key)));
        prop_assert_eq!(json.status, StatusCode::OK);
        let config: AgentConfig =
            serde_json::from_value(json.json.clone()).expect("an AgentConfig");
        prop_assert_eq!(&config, &registered.config);
        let text = rt.block_on(a.call(bearer(get("/api/wg/config?format=wg-quick"), &agent_key)));
        prop_assert_eq!(text.status, StatusCode::OK);
        let entries = read_wg_quick(&text.text)?;
        prop_assert!(
            field(&entries, "[Interface]", "PrivateKey").is_none(),
            "the agent's key stays on the agent"
        );
        let mut address = config.address.clone();
        if let Some(v6) = &config.address_v6 {
            address = format!("{address}, {v6}");
        }
        prop_assert_eq!(
            field(&entries, "[Interface]", "Address"),
            Some(address.as_str())
        );
        let (hub, routed) = (
            config.hub_public_key.to_string(),
            config.allowed_ips.join(", "),
        );
        let keepalive = config.persistent_keepalive.to_string();
        prop_assert_eq!(field(&entries, "[Peer]", "PublicKey"), Some(hub.as_str()));
        prop_assert_eq!(
            field(&entries, "[Peer]", "Endpoint"),
            Some(config.endpoint.as_str())
        );
        prop_assert_eq!(
            field(&entries, "[Peer]", "AllowedIPs"),
            Some(routed.as_str())
        );
        prop_assert_eq!(
            field(&entries, "[Peer]", "PersistentKeepalive"),
            Some(keepalive.as_str())
        );
        for p in &config.allowed_ips {
            prop_assert!(p.parse::<IpPrefix>().is_ok(), "{}", p);
        }
        Ok(())
    });
}

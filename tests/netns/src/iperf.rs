//! iperf3 over the tunnel, with the JSON report (`-J`) parsed for the numbers that matter.

use crate::{format_cmd, retry_until, Netns, Proc};
use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;

/// Starts `iperf3 -s -p PORT` in `ns` and waits until it listens.
pub fn iperf3_server(ns: &Netns, port: u16) -> Result<Proc> {
    let p = port.to_string();
    let mut server = ns.spawn(
        &format!("iperf3-server-{port}"),
        &["iperf3", "-s", "-p", &p],
    )?;
    let filter = format!("sport = :{port}");
    retry_until(Duration::from_secs(5), "iperf3 server listening", || {
        server.ensure_running().map_err(crate::fatal)?;
        let out = ns.exec(&["ss", "-Hltn", &filter])?;
        if out.trim().is_empty() {
            bail!("nothing listens on tcp port {port} yet");
        }
        Ok(())
    })?;
    Ok(server)
}

/// What an iperf3 run reported.
#[derive(Clone, Debug)]
pub struct IperfResult {
    /// Bytes the receiving side got (`end.sum_received.bytes`).
    pub received_bytes: u64,
    /// Receiver-side throughput (`end.sum_received.bits_per_second`).
    pub received_bps: f64,
}

/// Runs `iperf3 -c SERVER -p PORT -t SECONDS -J [-R]` in `ns` (bounded by `timeout(1)`) and
/// parses the result; a failed run or an `"error"` in the report is an error.
pub fn iperf3_client(
    ns: &Netns,
    server: &str,
    port: u16,
    seconds: u32,
    reverse: bool,
) -> Result<IperfResult> {
    let p = port.to_string();
    let t = seconds.to_string();
    let limit = (seconds + 20).to_string();
    let mut argv = vec![
        "timeout",
        &limit,
        "iperf3",
        "-c",
        server,
        "-p",
        &p,
        "-t",
        &t,
        "-J",
        "--connect-timeout",
        "5000",
    ];
    if reverse {
        argv.push("-R");
    }
    let out = ns.exec_output(&argv)?;
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let cmd = format_cmd(&ns.argv(&argv));
    if let Some(err) = json_string_after(&json, "\"error\"") {
        bail!("`{cmd}` reported error: {err}");
    }
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}): stderr: {} stdout: {json}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let parse = || -> Result<IperfResult> {
        let section = json
            .find("\"sum_received\"")
            .ok_or_else(|| anyhow!("no sum_received"))?;
        let rest = &json[section..];
        let end = rest
            .find('}')
            .ok_or_else(|| anyhow!("unterminated sum_received"))?;
        let obj = &rest[..end];
        Ok(IperfResult {
            received_bytes: json_number_after(obj, "\"bytes\"")?.round() as u64,
            received_bps: json_number_after(obj, "\"bits_per_second\"")?,
        })
    };
    parse().with_context(|| format!("parsing the JSON report of `{cmd}`: {json}"))
}

fn json_number_after(text: &str, key: &str) -> Result<f64> {
    let at = text.find(key).ok_or_else(|| anyhow!("no {key}"))?;
    let rest = text[at + key.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| anyhow!("no ':' after {key}"))?
        .trim_start();
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || "+-.eE".contains(*c))
        .collect();
    num.parse()
        .with_context(|| format!("value of {key} is not a number: {num:?}"))
}

fn json_string_after(text: &str, key: &str) -> Option<String> {
    let at = text.find(key)?;
    let rest = text[at + key.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest.split('"').next().unwrap_or("").to_owned())
}

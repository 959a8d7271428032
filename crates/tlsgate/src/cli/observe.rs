//! `tlsgate observe`: read flows from a running tlsgate's admin API, like `hubble observe`.
//! Filters travel to the server as `/flows` query parameters (docs/flows.md).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tlsgate_proxy::config::AdminSettings;
use tlsgate_proxy::flow::Verdict;
use tlsgate_proxy::flow::filter::{StatusMatch, percent_encode};

use super::fail;

/// Records shown without `--follow` or `--last`, as `hubble observe` does.
const DEFAULT_LAST: usize = 20;
/// The longest NDJSON line accepted from the server.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// The admin API's address (`admin.listen` in the config).
    #[arg(long, value_name = "ADDR", default_value_t = AdminSettings::DEFAULT_LISTEN)]
    server: SocketAddr,
    /// A file holding the admin bearer token (`admin.bearer_token_file`).
    #[arg(long, value_name = "FILE")]
    bearer_token_file: Option<PathBuf>,
    /// Keep printing flows as they happen.
    #[arg(short, long)]
    follow: bool,
    /// Show the last N recorded flows first (default 20 without --follow, none with it).
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// compact: one readable line per flow; json: the Hubble-compatible records, one per line.
    #[arg(short, long, value_enum, default_value_t = Output::Compact)]
    output: Output,
    /// FORWARDED, DROPPED or ERROR.
    #[arg(long, value_parser = parse_verdict)]
    verdict: Option<Verdict>,
    /// The requested name: `www.example.com` or `*.example.com`.
    #[arg(long, visible_alias = "fqdn", value_name = "NAME")]
    host: Option<String>,
    /// An HTTP method, e.g. GET.
    #[arg(long, value_name = "METHOD")]
    http_method: Option<String>,
    /// An HTTP status (403) or class (4+).
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    http_status: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Compact,
    Json,
}

fn parse_verdict(text: &str) -> Result<Verdict, String> {
    Verdict::parse(text).ok_or_else(|| "expected FORWARDED, DROPPED or ERROR".to_owned())
}

fn parse_status(text: &str) -> Result<String, String> {
    StatusMatch::parse(text).map(|_| text.to_owned())
}

pub fn run(args: ObserveArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime");
    match runtime.and_then(|rt| rt.block_on(observe(&args))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn query(args: &ObserveArgs) -> String {
    let last = args
        .last
        .unwrap_or(if args.follow { 0 } else { DEFAULT_LAST });
    let mut q = format!("last={last}");
    if args.follow {
        q.push_str("&follow=1");
    }
    let params = [
        ("verdict", args.verdict.map(|v| v.as_str().to_owned())),
        ("host", args.host.clone()),
        ("http_method", args.http_method.clone()),
        ("http_status", args.http_status.clone()),
    ];
    for (key, value) in params {
        if let Some(value) = value {
            q.push_str(&format!("&{key}={}", percent_encode(&value)));
        }
    }
    q
}

async fn observe(args: &ObserveArgs) -> anyhow::Result<()> {
    let token = match &args.bearer_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the bearer token {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let server = args.server;
    let tcp = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| {
            format!("connecting to the admin API at {server} (is admin.listen set?)")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("starting HTTP with the admin API")?;
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("/flows?{}", query(args)))
        .header(http::header::HOST, server.to_string());
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .context("asking the admin API for flows")?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "the admin API answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    let colour = std::io::stdout().is_terminal();
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading flows")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(end + 1);
            if !print_line(&line[..end], args.output, colour)? {
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE {
            bail!("a flow line from the server is longer than {MAX_LINE} bytes");
        }
    }
    Ok(())
}

/// Prints one NDJSON line; `false` when stdout is closed (e.g. piped into `head`).
fn print_line(line: &[u8], output: Output, colour: bool) -> anyhow::Result<bool> {
    let value: Value =
        serde_json::from_slice(line).context("the server sent a line that is not JSON")?;
    if let Some(lost) = value.get("lost") {
        eprintln!("(this client fell behind: {lost} flow records were lost)");
        return Ok(true);
    }
    let text = match output {
        Output::Json => String::from_utf8_lossy(line).into_owned(),
        Output::Compact => compact(&value["flow"], colour),
    };
    let mut out = std::io::stdout().lock();
    Ok(writeln!(out, "{text}").and_then(|()| out.flush()).is_ok())
}

/// `Nov 22 18:20:01.123 127.0.0.1:51234 -> www.example.com:443 http-response DROPPED (policy_denied)
/// GET https://www.example.com/x => 403`
pub fn compact(flow: &Value, colour: bool) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let time = short_time(flow["time"].as_str().unwrap_or(""));
    let source = format!(
        "{}:{}",
        s(&flow["IP"]["source"]),
        flow["l4"]["TCP"]["source_port"]
    );
    let host = flow["destination_names"][0]
        .as_str()
        .map(str::to_owned)
        .or_else(|| flow["IP"]["destination"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    let destination = match flow["l4"]["TCP"]["destination_port"].as_u64() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let verdict = s(&flow["verdict"]);
    let verdict = match (colour, verdict.as_str()) {
        (false, _) => verdict,
        (true, "FORWARDED") => format!("\x1b[32m{verdict}\x1b[0m"),
        (true, "DROPPED") => format!("\x1b[31m{verdict}\x1b[0m"),
        (true, _) => format!("\x1b[33m{verdict}\x1b[0m"),
    };
    let tlsgate = &flow["tlsgate"];
    let mut line = format!("{time} {source} -> {destination}");
    let l7 = &flow["l7"];
    let kind = match l7["type"].as_str() {
        Some("REQUEST") => "http-request".to_owned(),
        Some(_) => "http-response".to_owned(),
        None => s(&tlsgate["mode"]),
    };
    line.push_str(&format!(" {kind} {verdict}"));
    if let Some(reason) = tlsgate["reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    if l7.is_object() {
        let http = &l7["http"];
        line.push_str(&format!(" {} {}", s(&http["method"]), s(&http["url"])));
        if let Some(code) = http["code"].as_u64() {
            line.push_str(&format!(" => {code}"));
        }
    } else {
        line.push_str(&format!(
            " bytes {}/{}",
            tlsgate["bytes_in"], tlsgate["bytes_out"]
        ));
    }
    line
}

/// `2026-11-22T18:20:01.123456789Z` → `Nov 22 18:20:01.123` (UTC, as in the record).
fn short_time(rfc3339: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = rfc3339
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)));
    match (month, rfc3339.get(8..10), rfc3339.get(11..23)) {
        (Some(month), Some(day), Some(time)) => format!("{month} {day} {time}"),
        _ => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn compact_line_reads_like_hubble() {
        let flow = json!({
            "time": "2026-11-22T18:20:01.123456789Z",
            "verdict": "DROPPED",
            "IP": {"source": "127.0.0.1"},
            "l4": {"TCP": {"source_port": 51234, "destination_port": 443}},
            "destination_names": ["www.facebook.com"],
            "l7": {"type": "RESPONSE", "http": {"code": 403, "method": "GET",
                   "url": "https://www.facebook.com/cucumber"}},
            "tlsgate": {"mode": "bump", "reason": "policy_denied"},
        });
        assert_eq!(
            compact(&flow, false),
            "Nov 22 18:20:01.123 127.0.0.1:51234 -> www.facebook.com:443 http-response DROPPED \
             (policy_denied) GET https://www.facebook.com/cucumber => 403"
        );
        assert!(compact(&flow, true).contains("\x1b[31mDROPPED\x1b[0m"));
    }

    #[test]
    fn compact_connection_line_shows_mode_and_bytes() {
        let flow = json!({
            "time": "2026-01-02T03:04:05.000000000Z",
            "verdict": "FORWARDED",
            "IP": {"source": "10.0.0.1", "destination": "192.0.2.7"},
            "l4": {"TCP": {"source_port": 5, "destination_port": 443}},
            "destination_names": [],
            "tlsgate": {"mode": "splice", "reason": null, "bytes_in": 517, "bytes_out": 4096},
        });
        assert_eq!(
            compact(&flow, false),
            "Jan 02 03:04:05.000 10.0.0.1:5 -> 192.0.2.7:443 splice FORWARDED bytes 517/4096"
        );
    }

    #[test]
    fn filters_become_query_parameters() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ObserveArgs,
        }
        let cli = Cli::parse_from([
            "observe",
            "--http-status",
            "4+",
            "--verdict",
            "dropped",
            "--host",
            "*.example.com",
        ]);
        assert_eq!(
            query(&cli.args),
            "last=20&verdict=DROPPED&host=*.example.com&http_status=4%2B"
        );
        assert!(Cli::try_parse_from(["observe", "--http-status", "9+"]).is_err());
    }
}

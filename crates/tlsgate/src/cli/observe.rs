//! `tlsgate observe`: read flows from a running tlsgate's admin API, like `hubble observe`.
//! Filters travel to the server as `/flows` query parameters (docs/flows.md).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tlsgate_proxy::config::AdminSettings;
use tlsgate_proxy::flow::Verdict;
use tlsgate_proxy::flow::filter::{self, PathRegex, StatusMatch, percent_encode};
use tlsgate_proxy::flow::hubble::rfc3339;

use super::fail;

/// Records shown without `--follow` or `--last`, as `hubble observe` does.
const DEFAULT_LAST: usize = 20;
/// The longest NDJSON line accepted from the server.
const MAX_LINE: usize = 1024 * 1024;

/// Shown under `tlsgate observe --help`.
const EXAMPLES: &str = "\
Examples:
  tlsgate observe                                  # the last 20 flows, one line each
  tlsgate observe -f                               # follow new flows as they happen
  tlsgate observe --last 50 --http-status 4+       # the newest 50 HTTP 4xx exchanges
  tlsgate observe --verdict DROPPED --since 5m     # everything refused in the last 5 minutes
  tlsgate observe --fqdn '*.example.com' --http-path '^/api/' -o table
  tlsgate observe --since 2026-11-22T18:00:00Z -o jsonpb > flows.json
  tlsgate observe -f -o json | jq .flow.l7.http.url

Filters are applied by the server (docs/flows.md): --last N counts matching records.
Colour (by verdict) is used only when stdout is a terminal, unless --color says otherwise.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
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
    /// Show the last N matching records first (default 20 without --follow or --since; with
    /// --follow none; with --since all since then). An HTTP exchange is one record, shown as
    /// its request and response flows.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Only flows that ended at or after this: a duration ago (`30s`, `5m`, `2h`) or an RFC 3339
    /// time in UTC (`2026-11-22T18:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<SystemTime>,
    /// compact: one readable line per flow; table: aligned columns; json: the Hubble-compatible
    /// flows, one per line; jsonpb: the same wrapped like `hubble observe -o jsonpb`
    /// (`{"flow": ..., "node_name": ..., "time": ...}`).
    #[arg(short, long, value_enum, default_value_t = Output::Compact)]
    output: Output,
    /// Colour the verdict: auto (only when stdout is a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Colour::Auto, value_name = "WHEN")]
    color: Colour,
    /// FORWARDED, DROPPED, ERROR or AUDIT (any case).
    #[arg(long, value_parser = parse_verdict)]
    verdict: Option<Verdict>,
    /// The requested name: `www.example.com` or `*.example.com` (subdomains only).
    #[arg(long, visible_alias = "fqdn", value_name = "NAME")]
    host: Option<String>,
    /// An HTTP method, e.g. GET.
    #[arg(long, value_name = "METHOD")]
    http_method: Option<String>,
    /// An HTTP status (403) or class (4+).
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    http_status: Option<String>,
    /// A regular expression searched in the URL path, e.g. `^/api/` (at most 1024 bytes).
    #[arg(long, value_name = "REGEX", value_parser = parse_path)]
    http_path: Option<PathRegex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Compact,
    Table,
    Json,
    Jsonpb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Colour {
    Auto,
    Always,
    Never,
}

fn parse_verdict(text: &str) -> Result<Verdict, String> {
    Verdict::parse(text).ok_or_else(|| "expected FORWARDED, DROPPED, ERROR or AUDIT".to_owned())
}

fn parse_status(text: &str) -> Result<String, String> {
    StatusMatch::parse(text).map(|_| text.to_owned())
}

/// Compiled here with the server's limits, so a bad pattern is a usage error (exit 2) before
/// anything is sent.
fn parse_path(text: &str) -> Result<PathRegex, String> {
    PathRegex::new(text)
}

/// `5m` (that long ago) or `2026-11-22T18:00:00Z`.
fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{text:?} reaches before 1970"));
    }
    filter::parse_since(text).map_err(|_| {
        format!("{text:?}: expected a duration (30s, 5m, 2h) or an RFC 3339 time in UTC (2026-11-22T18:00:00Z)")
    })
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
    let last = match (args.last, args.follow, args.since) {
        (Some(last), _, _) => Some(last),
        (None, _, Some(_)) => None,
        (None, true, None) => Some(0),
        (None, false, None) => Some(DEFAULT_LAST),
    };
    let mut q: Vec<String> = last.map(|n| format!("last={n}")).into_iter().collect();
    if args.follow {
        q.push("follow=1".to_owned());
    }
    let params = [
        ("verdict", args.verdict.map(|v| v.as_str().to_owned())),
        ("host", args.host.clone()),
        ("http_method", args.http_method.clone()),
        ("http_status", args.http_status.clone()),
        (
            "http_path",
            args.http_path.as_ref().map(|p| p.as_str().to_owned()),
        ),
        ("since", args.since.map(rfc3339)),
    ];
    for (key, value) in params {
        if let Some(value) = value {
            q.push(format!("{key}={}", percent_encode(&value)));
        }
    }
    q.join("&")
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
    let colour = match args.color {
        Colour::Always => true,
        Colour::Never => false,
        Colour::Auto => std::io::stdout().is_terminal(),
    };
    let mut printer = Printer::new(args.output, colour, server.to_string(), args.follow);
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading flows")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(end + 1);
            if !printer.line(&line[..end])? {
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE {
            bail!("a flow line from the server is longer than {MAX_LINE} bytes");
        }
    }
    printer.finish();
    Ok(())
}

/// Turns NDJSON lines from the server into the chosen output on stdout.
struct Printer {
    output: Output,
    colour: bool,
    /// `node_name` in `-o jsonpb`: the admin API the flows came from.
    node: String,
    table: Table,
}

impl Printer {
    fn new(output: Output, colour: bool, node: String, follow: bool) -> Self {
        Self {
            output,
            colour,
            node,
            table: Table::new(follow),
        }
    }

    /// Prints one NDJSON line; `false` when stdout is closed (e.g. piped into `head`).
    fn line(&mut self, line: &[u8]) -> anyhow::Result<bool> {
        let value: Value =
            serde_json::from_slice(line).context("the server sent a line that is not JSON")?;
        let text = match (self.output, value.get("lost")) {
            (Output::Jsonpb, Some(lost)) => jsonpb_lost(lost, &self.node).to_string(),
            (_, Some(lost)) => {
                eprintln!("(this client fell behind: {lost} flow records were lost)");
                return Ok(true);
            }
            (Output::Json, None) => String::from_utf8_lossy(line).into_owned(),
            (Output::Jsonpb, None) => jsonpb(value, &self.node).to_string(),
            (Output::Compact, None) => compact(&value["flow"], self.colour),
            (Output::Table, None) => match self.table.add(row(&value["flow"]), self.colour) {
                Some(text) => text,
                None => return Ok(true),
            },
        };
        let mut out = std::io::stdout().lock();
        Ok(writeln!(out, "{text}").and_then(|()| out.flush()).is_ok())
    }

    /// Prints what is still held back (the rows of a table that is not followed).
    fn finish(&mut self) {
        if self.output != Output::Table {
            return;
        }
        if let Some(text) = self.table.finish(self.colour) {
            println!("{text}");
        }
    }
}

/// Like `hubble observe -o jsonpb`, a `GetFlowsResponse`: the flow, `node_name` and `time`, with
/// 64-bit integers as strings as protobuf's JSON mapping writes them.
fn jsonpb(mut value: Value, node: &str) -> Value {
    let time = value["flow"]["time"].clone();
    if let Some(latency) = value
        .pointer_mut("/flow/l7/latency_ns")
        .filter(|v| v.is_u64())
    {
        *latency = Value::String(latency.to_string());
    }
    json!({ "flow": value["flow"].take(), "node_name": node, "time": time })
}

/// A `{"lost": N}` line as Hubble's `lost_events` response.
fn jsonpb_lost(lost: &Value, node: &str) -> Value {
    json!({
        "lost_events": {
            "source": "HUBBLE_RING_BUFFER",
            "num_events_lost": lost.to_string(),
        },
        "node_name": node,
        "time": rfc3339(SystemTime::now()),
    })
}

const SGR_RESET: &str = "\x1b[0m";

/// The terminal colour of a verdict: green forwarded, red dropped, yellow otherwise.
fn verdict_colour(verdict: &str) -> &'static str {
    match verdict {
        "FORWARDED" => "\x1b[32m",
        "DROPPED" => "\x1b[31m",
        _ => "\x1b[33m",
    }
}

/// `Forwarded` for `FORWARDED`, as `cilium monitor` writes verdicts.
fn title_case(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => lower,
    }
}

/// The flow's client and destination as `ip:port` / `name:port`.
fn endpoints(flow: &Value) -> (String, String) {
    let source = format!(
        "{}:{}",
        flow["IP"]["source"].as_str().unwrap_or("?"),
        flow["l4"]["TCP"]["source_port"]
    );
    let host = flow["destination_names"][0]
        .as_str()
        .or_else(|| flow["IP"]["destination"].as_str())
        .unwrap_or("?");
    let destination = match flow["l4"]["TCP"]["destination_port"].as_u64() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    (source, destination)
}

/// One line per flow in the spirit of `cilium monitor -t l7`:
///
/// `Nov 22 18:20:01.103 -> Request http from 127.0.0.1:51234 to www.facebook.com:443, verdict
/// Dropped (policy_denied) GET https://www.facebook.com/cucumber`
///
/// `Nov 22 18:20:01.123 <- Response http to 127.0.0.1:51234 from www.facebook.com:443, verdict
/// Dropped (policy_denied) GET https://www.facebook.com/cucumber => 403`
///
/// `Jan 02 03:04:05.000 -> Connection splice from 10.0.0.1:5 to 192.0.2.7:443, verdict
/// Forwarded, bytes 517/4096`
pub fn compact(flow: &Value, colour: bool) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let time = short_time(flow["time"].as_str().unwrap_or(""));
    let (source, destination) = endpoints(flow);
    let raw_verdict = s(&flow["verdict"]);
    let mut verdict = title_case(&raw_verdict);
    if colour {
        verdict = format!("{}{verdict}{SGR_RESET}", verdict_colour(&raw_verdict));
    }
    let tlsgate = &flow["tlsgate"];
    if let Some(reason) = tlsgate["reason"].as_str() {
        verdict.push_str(&format!(" ({reason})"));
    }
    let l7 = &flow["l7"];
    let http = &l7["http"];
    let request = format!("{} {}", s(&http["method"]), s(&http["url"]));
    match l7["type"].as_str() {
        Some("REQUEST") => format!(
            "{time} -> Request http from {source} to {destination}, verdict {verdict} {request}"
        ),
        Some(_) => format!(
            "{time} <- Response http to {source} from {destination}, verdict {verdict} {request} \
             => {}",
            http["code"]
        ),
        None => format!(
            "{time} -> Connection {} from {source} to {destination}, verdict {verdict}, bytes {}/{}",
            s(&tlsgate["mode"]),
            tlsgate["bytes_in"],
            tlsgate["bytes_out"]
        ),
    }
}

/// The columns of `-o table`, as `hubble observe -o table` names them.
const COLUMNS: [&str; 6] = [
    "TIMESTAMP",
    "SOURCE",
    "DESTINATION",
    "TYPE",
    "VERDICT",
    "SUMMARY",
];
/// Where the verdict sits (coloured after padding, so escapes never skew the columns).
const VERDICT_COLUMN: usize = 4;
/// Rows kept to align a table that is not followed; past this, rows are printed as they come
/// with the widths seen so far.
const MAX_TABLE_ROWS: usize = 10_000;

fn row(flow: &Value) -> [String; 6] {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let (source, destination) = endpoints(flow);
    let tlsgate = &flow["tlsgate"];
    let l7 = &flow["l7"];
    let http = &l7["http"];
    let (kind, mut summary) = match l7["type"].as_str() {
        Some("REQUEST") => (
            "http-request".to_owned(),
            format!(
                "{} {} {}",
                s(&http["protocol"]),
                s(&http["method"]),
                s(&http["url"])
            ),
        ),
        Some(_) => (
            "http-response".to_owned(),
            format!(
                "{} {} {}ms ({} {})",
                s(&http["protocol"]),
                http["code"],
                l7["latency_ns"].as_u64().unwrap_or(0) / 1_000_000,
                s(&http["method"]),
                s(&http["url"])
            ),
        ),
        None => (
            s(&tlsgate["mode"]),
            format!("bytes {}/{}", tlsgate["bytes_in"], tlsgate["bytes_out"]),
        ),
    };
    if let Some(reason) = tlsgate["reason"].as_str() {
        summary.push_str(&format!(" [{reason}]"));
    }
    [
        short_time(flow["time"].as_str().unwrap_or("")),
        source,
        destination,
        kind,
        s(&flow["verdict"]),
        summary,
    ]
}

/// Aligned columns: all rows at once when not following (so every column fits its widest cell);
/// when following, each row at once, with columns that only ever widen.
struct Table {
    follow: bool,
    widths: [usize; 6],
    header_printed: bool,
    held: Vec<[String; 6]>,
}

impl Table {
    fn new(follow: bool) -> Self {
        Self {
            follow,
            widths: COLUMNS.map(str::len),
            header_printed: false,
            held: Vec::new(),
        }
    }

    /// The text to print now for `row` (with the header first), or `None` while rows are held.
    fn add(&mut self, row: [String; 6], colour: bool) -> Option<String> {
        self.widen(&row);
        if !self.follow && self.held.len() < MAX_TABLE_ROWS {
            self.held.push(row);
            return None;
        }
        let mut text = self.flush_held(colour);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&self.render(&row, colour));
        Some(text)
    }

    fn finish(&mut self, colour: bool) -> Option<String> {
        let text = self.flush_held(colour);
        (!text.is_empty()).then_some(text)
    }

    fn widen(&mut self, row: &[String; 6]) {
        for (width, cell) in self.widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    /// The header (once) and the held rows, without a trailing newline.
    fn flush_held(&mut self, colour: bool) -> String {
        let mut lines = Vec::new();
        if !self.header_printed {
            self.header_printed = true;
            lines.push(self.render(&COLUMNS.map(str::to_owned), false));
        }
        for row in std::mem::take(&mut self.held) {
            lines.push(self.render(&row, colour));
        }
        lines.join("\n")
    }

    fn render(&self, row: &[String; 6], colour: bool) -> String {
        let mut cells = Vec::with_capacity(row.len());
        for (i, (cell, width)) in row.iter().zip(self.widths).enumerate() {
            let last = i + 1 == row.len();
            let padded = if last {
                cell.clone()
            } else {
                format!("{cell:<width$}")
            };
            cells.push(if colour && i == VERDICT_COLUMN {
                format!("{}{padded}{SGR_RESET}", verdict_colour(cell))
            } else {
                padded
            });
        }
        cells.join("   ")
    }
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

    fn http_flow(kind: &str) -> Value {
        let mut flow = json!({
            "time": "2026-11-22T18:20:01.123456789Z",
            "verdict": "DROPPED",
            "IP": {"source": "127.0.0.1"},
            "l4": {"TCP": {"source_port": 51234, "destination_port": 443}},
            "destination_names": ["www.facebook.com"],
            "l7": {"type": kind, "http": {"method": "GET", "protocol": "HTTP/1.1",
                   "url": "https://www.facebook.com/cucumber"}},
            "tlsgate": {"mode": "bump", "reason": "policy_denied"},
        });
        if kind == "RESPONSE" {
            flow["l7"]["http"]["code"] = json!(403);
            flow["l7"]["latency_ns"] = json!(12_500_000u64);
        }
        flow
    }

    fn connection_flow() -> Value {
        json!({
            "time": "2026-01-02T03:04:05.000000000Z",
            "verdict": "FORWARDED",
            "IP": {"source": "10.0.0.1", "destination": "192.0.2.7"},
            "l4": {"TCP": {"source_port": 5, "destination_port": 443}},
            "destination_names": [],
            "tlsgate": {"mode": "splice", "reason": null, "bytes_in": 517, "bytes_out": 4096},
        })
    }

    #[test]
    fn compact_lines_read_like_cilium_monitor() {
        assert_eq!(
            compact(&http_flow("REQUEST"), false),
            "Nov 22 18:20:01.123 -> Request http from 127.0.0.1:51234 to www.facebook.com:443, \
             verdict Dropped (policy_denied) GET https://www.facebook.com/cucumber"
        );
        assert_eq!(
            compact(&http_flow("RESPONSE"), false),
            "Nov 22 18:20:01.123 <- Response http to 127.0.0.1:51234 from www.facebook.com:443, \
             verdict Dropped (policy_denied) GET https://www.facebook.com/cucumber => 403"
        );
        assert!(compact(&http_flow("RESPONSE"), true).contains("\x1b[31mDropped\x1b[0m"));
        assert_eq!(
            compact(&connection_flow(), false),
            "Jan 02 03:04:05.000 -> Connection splice from 10.0.0.1:5 to 192.0.2.7:443, verdict \
             Forwarded, bytes 517/4096"
        );
    }

    #[test]
    fn table_aligns_columns_and_colours_only_the_verdict() {
        let mut table = Table::new(false);
        for flow in [
            http_flow("REQUEST"),
            http_flow("RESPONSE"),
            connection_flow(),
        ] {
            assert_eq!(table.add(row(&flow), false), None, "held until the end");
        }
        let text = table.finish(false).expect("header and rows");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("TIMESTAMP             SOURCE"),
            "{text}"
        );
        // Every column starts at the same offset on every line.
        let verdict_at = lines[0].find("VERDICT").unwrap();
        assert_eq!(&lines[1][verdict_at..verdict_at + 7], "DROPPED");
        assert_eq!(&lines[3][verdict_at..verdict_at + 9], "FORWARDED");
        let summary_at = lines[0].find("SUMMARY").unwrap();
        assert_eq!(
            &lines[2][summary_at..],
            "HTTP/1.1 403 12ms (GET https://www.facebook.com/cucumber) [policy_denied]"
        );
        assert_eq!(&lines[3][summary_at..], "bytes 517/4096");

        let mut followed = Table::new(true);
        let first = followed.add(row(&connection_flow()), true).unwrap();
        assert!(first.starts_with("TIMESTAMP"), "header first: {first}");
        assert!(first.contains("\x1b[32mFORWARDED"), "{first}");
        assert!(!first.lines().next().unwrap().contains('\x1b'));
    }

    #[test]
    fn jsonpb_wraps_like_hubble_get_flows_response() {
        let out = jsonpb(json!({ "flow": http_flow("RESPONSE") }), "127.0.0.1:9901");
        assert_eq!(out["node_name"], "127.0.0.1:9901");
        assert_eq!(out["time"], "2026-11-22T18:20:01.123456789Z");
        assert_eq!(out["flow"]["l7"]["latency_ns"], "12500000");
        assert_eq!(out["flow"]["l7"]["http"]["code"], 403);
        let lost = jsonpb_lost(&json!(7), "n");
        assert_eq!(lost["lost_events"]["num_events_lost"], "7");
    }

    #[test]
    fn filters_become_query_parameters() {
        use clap::Parser;
        #[derive(Debug, Parser)]
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
            "--fqdn",
            "*.example.com",
            "--http-path",
            "^/api/",
        ]);
        assert_eq!(
            query(&cli.args),
            "last=20&verdict=DROPPED&host=*.example.com&http_status=4%2B&http_path=%5E%2Fapi%2F"
        );
        assert!(Cli::try_parse_from(["observe", "--http-status", "9+"]).is_err());
        let err = Cli::try_parse_from(["observe", "--http-path", "(unclosed"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);

        let cli = Cli::parse_from(["observe", "--since", "2026-11-22T18:00:00Z"]);
        assert_eq!(query(&cli.args), "since=2026-11-22T18%3A00%3A00.000000000Z");
        let cli = Cli::parse_from(["observe", "--since", "5m", "--last", "3"]);
        let ago = SystemTime::now()
            .duration_since(cli.args.since.unwrap())
            .unwrap();
        assert!((299..=301).contains(&ago.as_secs()), "{ago:?}");
        assert!(query(&cli.args).starts_with("last=3&since="));
        assert!(Cli::try_parse_from(["observe", "--since", "yesterday"]).is_err());
    }
}

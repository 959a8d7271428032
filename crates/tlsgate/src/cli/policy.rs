//! `tlsgate policy check|test`: read a policy file (tlsgate's format or Cilium network
//! policies) and show what it does, without a proxy. `test` is a dry run for CI: exit 0 when
//! the request would be allowed, 1 when denied, 2 for usage or policy errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tlsgate_policy::{
    ConnectionVerdict, LoadOptions, Notice, Policy, RequestFacts, RequestVerdict, Rule, TlsAction,
    detect_format,
};

/// Exit code of `policy test` for an allowed request.
const EXIT_ALLOW: u8 = 0;
/// Exit code of `policy test` for a denied connection or request.
const EXIT_DENY: u8 = 1;
/// Exit code for usage errors and policies that do not load (clap uses 2 as well).
const EXIT_ERROR: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy file and print its rules and what it does not apply (notices).
    Check(PolicyFile),
    /// Decide one request as the proxy would: the connection verdict, then the request verdict
    /// with the rule that decided it. Exit code 0 allow, 1 deny, 2 error.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct PolicyFile {
    /// The policy file: tlsgate's format or CiliumNetworkPolicy /
    /// CiliumClusterwideNetworkPolicy documents (see docs/policy.md).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Map a Cilium secret reference to a local path (repeatable).
    #[arg(long = "secret", value_name = "NAMESPACE/NAME=PATH")]
    secrets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    file: PolicyFile,
    /// The request: `METHOD URL`, e.g. 'GET https://www.facebook.com/cucumber'.
    #[arg(long, value_name = "'METHOD URL'")]
    request: String,
    /// A request header `Name: value` (repeatable). `-H 'Host: other'` tests domain fronting.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The TLS SNI (or CONNECT host) the connection is made for; default: the URL's host.
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
}

pub fn run(command: PolicyCommand) -> ExitCode {
    let result = match command {
        PolicyCommand::Check(file) => check(&file),
        PolicyCommand::Test(args) => test(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn check(file: &PolicyFile) -> anyhow::Result<u8> {
    let (policy, notices) = load(file)?;
    let format = std::fs::read_to_string(&file.policy)
        .ok()
        .and_then(|text| detect_format(&text));
    println!(
        "{}: {} format, {} rule(s), default {}",
        file.policy.display(),
        match format {
            Some(tlsgate_policy::Format::Cilium) => "Cilium",
            _ => "tlsgate",
        },
        policy.rules().len(),
        policy.default_action().label()
    );
    for rule in policy.rules() {
        print_rule(rule);
    }
    print_notices(&notices);
    Ok(EXIT_ALLOW)
}

fn test(args: &TestArgs) -> anyhow::Result<u8> {
    let request = ParsedRequest::parse(&args.request, &args.headers)?;
    let (policy, notices) = load(&args.file)?;
    print_notices(&notices);
    let sni = args.sni.as_deref().unwrap_or(&request.url_host);
    let conn = policy.decide_connection(sni, request.port);
    println!(
        "connection {sni}:{}: {}",
        request.port,
        describe_connection(&policy, conn)
    );
    match conn.action {
        TlsAction::Deny => {
            println!("request: not reached (an explicit CONNECT is answered 403 before any TLS)");
            println!("verdict: deny");
            return Ok(EXIT_DENY);
        }
        TlsAction::Splice => {
            println!("request: not inspected (the connection is spliced)");
            println!("verdict: allow");
            return Ok(EXIT_ALLOW);
        }
        TlsAction::Bump => {}
    }
    let facts = RequestFacts {
        method: &request.method,
        path: &request.path,
        host: &request.host,
        headers: &request.headers,
    };
    let verdict = policy.decide_request(sni, request.port, &facts);
    print!(
        "request {} {} (host {}): ",
        request.method, request.path, request.host
    );
    match verdict {
        RequestVerdict::Allow { rule, edits } => {
            println!("allow by {}", rule_label(&policy, rule));
            let mut headers = request.headers.clone();
            for edit in edits {
                let outcome = edit.apply(&mut headers);
                println!(
                    "  header {}: {} on mismatch -> {outcome:?}",
                    edit.condition.name,
                    edit.mismatch.label()
                );
            }
            println!("verdict: allow");
            Ok(EXIT_ALLOW)
        }
        RequestVerdict::Deny { reason, rule_set } => {
            let rule_set = match rule_set.and_then(|r| policy.rule(r)) {
                Some(rule) => format!(" by rule set {:?}", rule.name()),
                None => String::new(),
            };
            println!("deny {}{rule_set}; the proxy answers 403", reason.label());
            println!("verdict: deny");
            Ok(EXIT_DENY)
        }
    }
}

fn load(file: &PolicyFile) -> anyhow::Result<(Policy, Vec<Notice>)> {
    let mut options = LoadOptions {
        secrets: BTreeMap::new(),
    };
    for mapping in &file.secrets {
        let (key, path) = mapping
            .split_once('=')
            .filter(|(key, path)| key.contains('/') && !path.is_empty())
            .ok_or_else(|| anyhow!("--secret {mapping:?}: expected NAMESPACE/NAME=PATH"))?;
        options.secrets.insert(key.to_owned(), PathBuf::from(path));
    }
    tlsgate_policy::load_file_with(&file.policy, &options).map_err(|errors| {
        for error in &errors {
            // The kind is part of the error's own message; its causes (I/O) follow.
            let mut line = error.to_string();
            let mut cause = std::error::Error::source(&error.kind);
            while let Some(err) = cause {
                line.push_str(&format!(": {err}"));
                cause = err.source();
            }
            eprintln!("error: {line}");
        }
        anyhow!(
            "{} error(s) in policy {}",
            errors.len(),
            file.policy.display()
        )
    })
}

fn print_notices(notices: &[Notice]) {
    for notice in notices {
        println!("notice: {notice}");
    }
}

fn describe_connection(policy: &Policy, conn: ConnectionVerdict) -> String {
    let mut out = format!("{} by {}", conn.action, rule_label(policy, conn.rule));
    if let Some(reason) = conn.deny_reason() {
        out.push_str(&format!(" ({})", reason.label()));
    }
    if conn.inspect_http {
        out.push_str(", HTTP rules apply");
    }
    out
}

fn rule_label(policy: &Policy, rule: Option<tlsgate_policy::RuleRef>) -> String {
    match rule.and_then(|r| policy.rule(r)) {
        Some(rule) => format!("rule {:?}", rule.name()),
        None => format!("default: {}", policy.default_action().label()),
    }
}

fn print_rule(rule: &Rule) {
    let names: Vec<_> = rule.fqdns().iter().map(ToString::to_string).collect();
    let ports: Vec<_> = rule.ports().iter().map(ToString::to_string).collect();
    println!("rule {:?}", rule.name());
    println!("  names: {}", names.join(", "));
    if !rule.server_names().is_empty() {
        let sni: Vec<_> = rule
            .server_names()
            .iter()
            .map(ToString::to_string)
            .collect();
        println!("  server names: {}", sni.join(", "));
    }
    println!(
        "  ports: {}",
        if ports.is_empty() {
            "any".to_owned()
        } else {
            ports.join(", ")
        }
    );
    println!("  tls: {}", rule.tls());
    if let Some(secret) = rule.terminating_tls() {
        println!("  terminatingTLS: {secret}");
    }
    if let Some(secret) = rule.originating_tls() {
        println!("  originatingTLS: {secret}");
    }
    if rule.http().is_empty() && rule.tls() != TlsAction::Deny {
        println!("  http: every request");
    }
    for http in rule.http() {
        let mut parts = Vec::new();
        for (key, regex) in [
            ("method", http.method()),
            ("path", http.path()),
            ("host", http.host()),
        ] {
            if let Some(regex) = regex {
                parts.push(format!("{key} ~ {:?}", regex.source()));
            }
        }
        parts.extend(http.headers().iter().map(ToString::to_string));
        parts.extend(http.edits().iter().map(|e| format!("edit {e}")));
        if parts.is_empty() {
            parts.push("every request".to_owned());
        }
        println!("  http {}: {}", http.key_path(), parts.join("; "));
    }
}

/// `--request 'GET https://host[:port]/path'` plus `-H` headers.
struct ParsedRequest {
    method: String,
    url_host: String,
    /// The Host header: `-H 'Host: …'` if given, else the URL's authority.
    host: String,
    port: u16,
    path: String,
    headers: HeaderMap,
}

impl ParsedRequest {
    fn parse(request: &str, headers: &[String]) -> anyhow::Result<Self> {
        let (method, url) = request
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow!("--request {request:?}: expected 'METHOD URL'"))?;
        if !url.contains("://") {
            bail!("--request: the URL needs an http:// or https:// scheme: {url:?}");
        }
        let uri: Uri = url
            .trim()
            .parse()
            .with_context(|| format!("--request: invalid URL {url:?}"))?;
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            Some("http") => 80,
            _ => bail!("--request: the URL needs an http:// or https:// scheme: {url:?}"),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("--request: the URL has no host: {url:?}"))?;
        let mut map = HeaderMap::new();
        for header in headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| anyhow!("-H {header:?}: expected 'Name: value'"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("-H {header:?}: invalid header name"))?;
            let value = HeaderValue::from_str(value.trim())
                .with_context(|| format!("-H {header:?}: invalid header value"))?;
            map.append(name, value);
        }
        let host = match map.get(http::header::HOST) {
            Some(value) => value
                .to_str()
                .context("-H Host: not a valid host")?
                .to_owned(),
            None => authority.as_str().to_owned(),
        };
        Ok(Self {
            method: method.to_owned(),
            url_host: authority.host().to_owned(),
            host,
            port: authority.port_u16().unwrap_or(default_port),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            headers: map,
        })
    }
}

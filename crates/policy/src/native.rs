//! tlsgate's own policy format: short, strict (`deny_unknown_fields`), every error reported.
//!
//! ```yaml
//! default: deny                 # or allow (unselected connections are spliced)
//! rules:
//!   - name: facebook            # optional; shown in verdicts and 403 bodies
//!     match: www.facebook.com   # exact name(s); or pattern: "*.facebook.com"
//!     ports: [443]              # optional (every port); ranges as "8000-8080"
//!     tls: bump                 # bump | splice | deny; default: bump with http, else splice
//!     http:
//!       - method: GET
//!         path: /cucumber
//!         headers: ["dada: dada"]
//! ```

use crate::diag::PolicyErrorKind;
use crate::fqdn::FqdnPattern;
use crate::model::{DefaultAction, Origin, PortRange, Rule, TlsAction};
use crate::read::{Ctx, Dialect, http_rules};
use crate::yaml::{MapReader, Node, index, list, string, strings, wrong_type};

const TOP_KEYS: &str = "default, rules";
const RULE_KEYS: &str = "name, match, pattern, ports, protocol, tls, http";

/// Reads one tlsgate policy document into its default and rules.
pub(crate) fn read(node: &Node, ctx: &mut Ctx<'_>) -> (DefaultAction, Vec<Rule>) {
    let mut default = DefaultAction::Deny;
    let mut rules = Vec::new();
    let Some(mut map) = MapReader::new(node, "", &mut ctx.diag) else {
        return (default, rules);
    };
    if let Some(node) = map.take("default") {
        let at = map.child("default");
        match string(node, &at, &mut ctx.diag) {
            Some("deny") => default = DefaultAction::Deny,
            Some("allow") => default = DefaultAction::Allow,
            Some(other) => ctx.diag.error(
                &at,
                PolicyErrorKind::NotOneOf {
                    value: other.to_owned(),
                    expected: "deny, allow",
                },
            ),
            None => {}
        }
    }
    match map.take("rules") {
        Some(node) => {
            let at = map.child("rules");
            for (i, item) in list(node, &at, &mut ctx.diag)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Some(rule) = read_rule(item, &index(&at, i), ctx) {
                    rules.push(rule);
                }
            }
        }
        None if !map.has("rules") => ctx.diag.error("", PolicyErrorKind::MissingKey("rules")),
        None => {}
    }
    map.deny_rest(TOP_KEYS, &mut ctx.diag);
    (default, rules)
}

fn read_rule(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Option<Rule> {
    let mut map = MapReader::new(node, path, &mut ctx.diag)?;
    let errors_before = ctx.diag.errors.len();
    let name = map
        .take("name")
        .and_then(|n| string(n, &map.child("name"), &mut ctx.diag))
        .map_or_else(|| path.to_owned(), str::to_owned);
    let mut fqdns = Vec::new();
    for (key, parse) in [
        ("match", FqdnPattern::parse_name as fn(&str) -> _),
        ("pattern", FqdnPattern::parse_pattern),
    ] {
        let Some(node) = map.take(key) else { continue };
        for (text, at) in strings(node, &map.child(key), &mut ctx.diag) {
            match parse(text) {
                Ok(pattern) => fqdns.push(pattern),
                Err(reason) => ctx.diag.error(
                    &at,
                    PolicyErrorKind::InvalidName {
                        text: text.to_owned(),
                        reason,
                    },
                ),
            }
        }
    }
    if !map.has("match") && !map.has("pattern") {
        ctx.diag
            .error(path, PolicyErrorKind::MissingKey("match` or `pattern"));
    }
    let ports = map
        .take("ports")
        .map(|node| ports(node, &map.child("ports"), ctx))
        .unwrap_or_default();
    if let Some(node) = map.take("protocol") {
        let at = map.child("protocol");
        if let Some(text) = string(node, &at, &mut ctx.diag)
            && !matches!(text.to_ascii_uppercase().as_str(), "TCP" | "ANY")
        {
            ctx.diag.error(
                &at,
                PolicyErrorKind::NotOneOf {
                    value: text.to_owned(),
                    expected: "TCP, ANY (tlsgate carries TCP only)",
                },
            );
        }
    }
    let tls = map
        .take("tls")
        .and_then(|node| tls_action(node, &map.child("tls"), ctx));
    let http = match map.take("http") {
        Some(node) => {
            let at = map.child("http");
            // The tlsgate dialect never reports Unsupported: unknown keys are errors.
            let rules = http_rules(node, &at, Dialect::Tlsgate, ctx).ok().flatten();
            if rules.as_ref().is_some_and(Vec::is_empty) {
                ctx.diag.error(&at, PolicyErrorKind::EmptyHttp);
            }
            rules.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let tls = tls.unwrap_or(if http.is_empty() && !map.has("http") {
        TlsAction::Splice
    } else {
        TlsAction::Bump
    });
    if map.has("http") && tls != TlsAction::Bump {
        ctx.diag.error(
            &map.child("tls"),
            PolicyErrorKind::HttpNeedsBump(tls_word(tls)),
        );
    }
    map.deny_rest(RULE_KEYS, &mut ctx.diag);
    if ctx.diag.errors.len() != errors_before {
        return None;
    }
    Some(Rule {
        name,
        origin: Origin {
            file: ctx.diag.file.clone(),
            document: ctx.diag.document,
            path: path.to_owned(),
        },
        fqdns,
        server_names: Vec::new(),
        ports,
        tls,
        http,
        terminating_tls: None,
        originating_tls: None,
    })
}

fn tls_word(tls: TlsAction) -> &'static str {
    match tls {
        TlsAction::Splice => "spliced",
        TlsAction::Deny => "denied",
        TlsAction::Bump => "bumped",
    }
}

fn tls_action(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Option<TlsAction> {
    let text = string(node, path, &mut ctx.diag)?;
    match text {
        "bump" => Some(TlsAction::Bump),
        "splice" => Some(TlsAction::Splice),
        "deny" => Some(TlsAction::Deny),
        other => {
            ctx.diag.error(
                path,
                PolicyErrorKind::NotOneOf {
                    value: other.to_owned(),
                    expected: "bump, splice, deny",
                },
            );
            None
        }
    }
}

/// `[443, "8000-8080"]`.
fn ports(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Vec<PortRange> {
    let mut out = Vec::new();
    for (i, item) in list(node, path, &mut ctx.diag)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = index(path, i);
        let range = match item {
            Node::Int(n) => u16::try_from(*n)
                .ok()
                .filter(|p| *p != 0)
                .map(PortRange::one),
            Node::Str(text) => parse_range(text),
            other => {
                wrong_type(
                    other,
                    &at,
                    "a port number or a range like \"8000-8080\"",
                    &mut ctx.diag,
                );
                continue;
            }
        };
        match range {
            Some(range) => out.push(range),
            None => ctx
                .diag
                .error(&at, PolicyErrorKind::InvalidPort(scalar(item))),
        }
    }
    out
}

fn scalar(node: &Node) -> String {
    match node {
        Node::Int(n) => n.to_string(),
        Node::Str(s) => s.clone(),
        other => other.kind().to_owned(),
    }
}

/// `443` or `8000-8080` (1-65535, first ≤ last).
fn parse_range(text: &str) -> Option<PortRange> {
    let port = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p != 0);
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(text)?, port(text)?),
    };
    (first <= last).then_some(PortRange { first, last })
}

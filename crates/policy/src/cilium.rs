//! `CiliumNetworkPolicy` / `CiliumClusterwideNetworkPolicy` documents, read as they are.
//!
//! What is applied: `spec`/`specs` → `egress[]` → `toFQDNs[].matchName|matchPattern`
//! (`toEntities: [world|all]` stands for every name), `toPorts[].ports[].port|endPort|protocol`,
//! `toPorts[].serverNames`, `toPorts[].terminatingTLS|originatingTLS` (bump; secret references
//! recorded and mapped through [`LoadOptions::secrets`](crate::LoadOptions)) and
//! `toPorts[].rules.http[]` (method, path, host, headers, headerMatches).
//!
//! Everything else is reported as a [`Notice`](crate::Notice) with its key path and why. The
//! rule of thumb: tlsgate never ignores something in a way that allows more than the file
//! says. Selectors it cannot evaluate are dropped (a rule whose only destinations are such
//! selectors is not applied); anything it cannot apply inside a port rule drops that whole
//! port rule.

use crate::diag::PolicyErrorKind;
use crate::fqdn::FqdnPattern;
use crate::model::{Origin, PortRange, Rule, TlsAction, TlsSecretRef};
use crate::read::{Ctx, Dialect, Unsupported, http_rules, secret_key, unknown_keys};
use crate::yaml::{MapReader, Node, index, join, list, string, wrong_type};

pub(crate) const KINDS: [&str; 2] = ["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"];

const NO_ENDPOINTS: &str = "ignored: tlsgate has no endpoints; the policy applies to all traffic \
                            through this listener";
const EGRESS_ONLY: &str = "ignored: tlsgate enforces egress only";
const UNEVALUATED_SELECTOR: &str = "ignored: tlsgate selects destinations by name only \
                                    (toFQDNs) and cannot evaluate this selector";

/// Reads one Cilium document into rules.
pub(crate) fn read(node: &Node, ctx: &mut Ctx<'_>) -> Vec<Rule> {
    let mut rules = Vec::new();
    let Some(mut map) = MapReader::new(node, "", &mut ctx.diag) else {
        return rules;
    };
    match map.take("kind") {
        Some(node) => match string(node, "kind", &mut ctx.diag) {
            Some(kind) if KINDS.contains(&kind) => {}
            Some(kind) => {
                let kind = kind.to_owned();
                ctx.diag
                    .error("kind", PolicyErrorKind::UnsupportedKind(kind));
                return rules;
            }
            None => return rules,
        },
        None => {
            ctx.diag.error("", PolicyErrorKind::MissingKey("kind"));
            return rules;
        }
    }
    if let Some(node) = map.take("apiVersion")
        && let Some(version) = string(node, "apiVersion", &mut ctx.diag)
        && !version.starts_with("cilium.io/")
    {
        ctx.diag.notice(
            "apiVersion",
            format!("{version:?} is not a cilium.io version; read as cilium.io/v2"),
        );
    }
    let name = policy_name(map.take("metadata"), ctx);
    // Descriptive or written by the cluster: nothing to apply.
    map.take("description");
    map.take("status");
    let spec = map.take("spec");
    let specs = map.take("specs");
    if spec.is_none() && specs.is_none() {
        ctx.diag.error("", PolicyErrorKind::NoSpec);
    }
    if let Some(spec) = spec {
        rules.extend(read_spec(spec, "spec", &name, ctx));
    }
    if let Some(specs) = specs {
        for (i, spec) in list(specs, "specs", &mut ctx.diag)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            rules.extend(read_spec(spec, &index("specs", i), &name, ctx));
        }
    }
    for (key, path) in map.rest() {
        ctx.diag.notice(
            &path,
            format!("ignored: `{key}` is not part of a Cilium policy tlsgate applies"),
        );
    }
    rules
}

/// `metadata.name`, or `(unnamed)`. Other metadata is descriptive.
fn policy_name(metadata: Option<&Node>, ctx: &mut Ctx<'_>) -> String {
    let name = metadata.and_then(|node| {
        let mut map = MapReader::new(node, "metadata", &mut ctx.diag)?;
        let name = map.take("name")?;
        string(name, "metadata.name", &mut ctx.diag).map(str::to_owned)
    });
    name.unwrap_or_else(|| "(unnamed)".to_owned())
}

fn read_spec(node: &Node, path: &str, policy: &str, ctx: &mut Ctx<'_>) -> Vec<Rule> {
    let mut rules = Vec::new();
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return rules;
    };
    for key in ["endpointSelector", "nodeSelector"] {
        if map.take(key).is_some() {
            ctx.diag.notice(&map.child(key), NO_ENDPOINTS);
        }
    }
    map.take("description");
    map.take("labels");
    if let Some(egress) = map.take("egress") {
        let at = map.child("egress");
        for (i, item) in list(egress, &at, &mut ctx.diag)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            rules.extend(read_egress(item, &index(&at, i), policy, ctx));
        }
    }
    for key in ["ingress", "ingressDeny"] {
        if map.take(key).is_some() {
            ctx.diag.notice(&map.child(key), EGRESS_ONLY);
        }
    }
    if map.take("egressDeny").is_some() {
        ctx.diag.notice(
            &map.child("egressDeny"),
            "ignored: tlsgate cannot evaluate deny rules by endpoint or CIDR selectors; what no \
             egress rule allows is denied anyway",
        );
    }
    if map.take("enableDefaultDeny").is_some() {
        ctx.diag.notice(
            &map.child("enableDefaultDeny"),
            "ignored: tlsgate always denies what no rule allows",
        );
    }
    for (key, path) in map.rest() {
        ctx.diag.notice(
            &path,
            format!("ignored: `{key}` is not supported by tlsgate"),
        );
    }
    rules
}

fn read_egress(node: &Node, path: &str, policy: &str, ctx: &mut Ctx<'_>) -> Vec<Rule> {
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return Vec::new();
    };
    let errors_before = ctx.diag.errors.len();
    let mut fqdns = map
        .take("toFQDNs")
        .map(|node| to_fqdns(node, &map.child("toFQDNs"), ctx))
        .unwrap_or_default();
    let mut unevaluated = false;
    if let Some(node) = map.take("toEntities") {
        let (all, other) = to_entities(node, &map.child("toEntities"), ctx);
        if all {
            fqdns.push(FqdnPattern::Any);
        }
        unevaluated |= other;
    }
    for key in [
        "toEndpoints",
        "toCIDR",
        "toCIDRSet",
        "toServices",
        "toGroups",
        "toNodes",
        "toRequires",
    ] {
        if map.take(key).is_some() {
            ctx.diag.notice(&map.child(key), UNEVALUATED_SELECTOR);
            unevaluated = true;
        }
    }
    for key in ["icmps", "authentication"] {
        if map.take(key).is_some() {
            ctx.diag.notice(
                &map.child(key),
                format!("ignored: tlsgate does not apply `{key}`"),
            );
        }
    }
    let to_ports = map.take("toPorts");
    for (key, path) in map.rest() {
        ctx.diag.notice(
            &path,
            format!("ignored: `{key}` is not supported by tlsgate"),
        );
    }
    if fqdns.is_empty() {
        if unevaluated {
            ctx.diag.notice(
                path,
                "this egress rule is not applied: its destinations are given only by selectors \
                 tlsgate cannot evaluate",
            );
            return Vec::new();
        }
        // No destination selector at all: every destination, as in Cilium.
        fqdns.push(FqdnPattern::Any);
    }
    let Some(to_ports) = to_ports else {
        return rule_if_clean(ctx, errors_before, || Rule {
            name: format!("{policy}: {path}"),
            origin: origin(ctx, path),
            fqdns,
            server_names: Vec::new(),
            ports: Vec::new(),
            tls: TlsAction::Splice,
            http: Vec::new(),
            terminating_tls: None,
            originating_tls: None,
        })
        .into_iter()
        .collect();
    };
    let at = join(path, "toPorts");
    let mut rules = Vec::new();
    for (i, item) in list(to_ports, &at, &mut ctx.diag)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let item_path = index(&at, i);
        let errors_before = ctx.diag.errors.len();
        if let Ok(Some(rule)) = port_rule(item, &item_path, &fqdns, policy, ctx)
            && ctx.diag.errors.len() == errors_before
        {
            rules.push(rule);
        }
    }
    rules
}

fn rule_if_clean(ctx: &Ctx<'_>, errors_before: usize, rule: impl FnOnce() -> Rule) -> Option<Rule> {
    (ctx.diag.errors.len() == errors_before).then(rule)
}

fn origin(ctx: &Ctx<'_>, path: &str) -> Origin {
    Origin {
        file: ctx.diag.file.clone(),
        document: ctx.diag.document,
        path: path.to_owned(),
    }
}

/// `[{matchName: ...}, {matchPattern: ...}]`.
fn to_fqdns(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Vec<FqdnPattern> {
    let mut out = Vec::new();
    for (i, item) in list(node, path, &mut ctx.diag)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = index(path, i);
        let Some(mut map) = MapReader::new(item, &at, &mut ctx.diag) else {
            continue;
        };
        let mut any = false;
        for (key, parse) in [
            ("matchName", FqdnPattern::parse_name as fn(&str) -> _),
            ("matchPattern", FqdnPattern::parse_pattern),
        ] {
            let Some(node) = map.take(key) else { continue };
            any = true;
            let key_path = map.child(key);
            let Some(text) = string(node, &key_path, &mut ctx.diag) else {
                continue;
            };
            match parse(text) {
                Ok(pattern) => out.push(pattern),
                Err(reason) => ctx.diag.error(
                    &key_path,
                    PolicyErrorKind::InvalidName {
                        text: text.to_owned(),
                        reason,
                    },
                ),
            }
        }
        if !any {
            ctx.diag.error(
                &at,
                PolicyErrorKind::MissingKey("matchName` or `matchPattern"),
            );
        }
        map.deny_rest("matchName, matchPattern", &mut ctx.diag);
    }
    out
}

/// `world` and `all` stand for every name; others are noticed. → (every name, others seen).
fn to_entities(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> (bool, bool) {
    let (mut all, mut other) = (false, false);
    for (i, item) in list(node, path, &mut ctx.diag)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = index(path, i);
        match string(item, &at, &mut ctx.diag) {
            Some("world" | "all") => all = true,
            Some(entity) => {
                ctx.diag.notice(
                    &at,
                    format!(
                        "ignored: entity {entity:?} means nothing to tlsgate (only world and \
                         all, which stand for every destination name)"
                    ),
                );
                other = true;
            }
            None => {}
        }
    }
    (all, other)
}

/// One `toPorts` element → one rule. `Ok(None)`: not applied (notice or error written).
fn port_rule(
    node: &Node,
    path: &str,
    fqdns: &[FqdnPattern],
    policy: &str,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Rule>, Unsupported> {
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return Ok(None);
    };
    // Every part is read before deciding, so all errors in the port rule are reported.
    let ports = match map.take("ports") {
        Some(node) => ports(node, &map.child("ports"), ctx),
        None => Some(Vec::new()),
    };
    let server_names = map
        .take("serverNames")
        .map(|node| server_names(node, &map.child("serverNames"), ctx))
        .unwrap_or_default();
    let terminating = map
        .take("terminatingTLS")
        .and_then(|node| tls_context(node, &map.child("terminatingTLS"), true, ctx));
    let originating = map
        .take("originatingTLS")
        .and_then(|node| tls_context(node, &map.child("originatingTLS"), false, ctx));
    let http = match map.take("rules") {
        Some(node) => l7_rules(node, &map.child("rules"), ctx),
        None => Ok(Vec::new()),
    };
    let rest = unknown_keys(
        &map,
        "ports, serverNames, terminatingTLS, originatingTLS, rules",
        Dialect::Cilium,
        ctx,
    );
    let (Some(ports), Ok(http), Ok(())) = (ports, http, rest) else {
        return Ok(None);
    };
    let bump = terminating.is_some() || !http.is_empty();
    if !http.is_empty() && terminating.is_none() {
        ctx.diag.notice(
            &map.child("rules.http"),
            "http rules without terminatingTLS: tlsgate bumps these connections (terminates TLS \
             with a certificate minted from its CA) to see HTTP; plain-HTTP connections are \
             inspected as they are",
        );
    }
    if terminating.is_some() && originating.is_none() {
        ctx.diag.notice(
            &map.child("terminatingTLS"),
            "terminatingTLS without originatingTLS: tlsgate always re-encrypts to the origin \
             and verifies it with its configured trust",
        );
    }
    Ok(Some(Rule {
        name: format!("{policy}: {path}"),
        origin: origin(ctx, path),
        fqdns: fqdns.to_vec(),
        server_names,
        ports,
        tls: if bump {
            TlsAction::Bump
        } else {
            TlsAction::Splice
        },
        http,
        terminating_tls: terminating,
        originating_tls: originating,
    }))
}

/// `ports: [{port, endPort, protocol}]`. `None`: ports were listed but none applies to TCP
/// (the port rule is dropped). An empty result means every port.
fn ports(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Option<Vec<PortRange>> {
    let items = list(node, path, &mut ctx.diag)?;
    let mut out = Vec::new();
    let mut every_port = false;
    let mut skipped = false;
    for (i, item) in items.iter().enumerate() {
        let at = index(path, i);
        match port_entry(item, &at, ctx) {
            PortEntry::Range(range) => out.push(range),
            PortEntry::Every => every_port = true,
            PortEntry::Skipped => skipped = true,
        }
    }
    if !items.is_empty() && out.is_empty() && !every_port {
        if skipped {
            ctx.diag.notice(
                path,
                "this port rule is not applied: none of its ports applies to TCP through tlsgate",
            );
        }
        return None;
    }
    Some(if every_port { Vec::new() } else { out })
}

enum PortEntry {
    Range(PortRange),
    Every,
    /// Not applicable (UDP, named port) or invalid (error written).
    Skipped,
}

fn port_entry(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> PortEntry {
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return PortEntry::Skipped;
    };
    if let Some(node) = map.take("protocol") {
        let at = map.child("protocol");
        match string(node, &at, &mut ctx.diag)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("TCP" | "ANY") => {}
            Some(proto @ ("UDP" | "SCTP")) => {
                ctx.diag.notice(
                    &at,
                    format!("ignored: tlsgate carries TCP only, not {proto}"),
                );
                return PortEntry::Skipped;
            }
            Some(other) => {
                ctx.diag.error(
                    &at,
                    PolicyErrorKind::NotOneOf {
                        value: other.to_owned(),
                        expected: "TCP, UDP, SCTP, ANY",
                    },
                );
                return PortEntry::Skipped;
            }
            None => return PortEntry::Skipped,
        }
    }
    let port = match map.take("port") {
        None => 0,
        Some(node) => match port_number(node) {
            Some(port) => port,
            None => {
                let at = map.child("port");
                match node {
                    Node::Str(name)
                        if !name.is_empty() && name.bytes().all(|b| !b.is_ascii_digit()) =>
                    {
                        ctx.diag.notice(
                            &at,
                            format!("ignored: named port {name:?} refers to endpoints tlsgate does not have"),
                        );
                    }
                    Node::Str(_) | Node::Int(_) => {
                        ctx.diag
                            .error(&at, PolicyErrorKind::InvalidPort(describe(node)));
                    }
                    other => wrong_type(other, &at, "a port number", &mut ctx.diag),
                }
                return PortEntry::Skipped;
            }
        },
    };
    let end = match map.take("endPort") {
        None => None,
        Some(node) => match port_number(node).filter(|end| *end >= port && port != 0) {
            Some(end) => Some(end),
            None => {
                ctx.diag.error(
                    &map.child("endPort"),
                    PolicyErrorKind::InvalidPort(describe(node)),
                );
                return PortEntry::Skipped;
            }
        },
    };
    map.deny_rest("port, endPort, protocol", &mut ctx.diag);
    match (port, end) {
        (0, _) => PortEntry::Every,
        (first, Some(last)) => PortEntry::Range(PortRange { first, last }),
        (port, None) => PortEntry::Range(PortRange::one(port)),
    }
}

/// `"443"` or `443` (0 means every port, as in Cilium).
fn port_number(node: &Node) -> Option<u16> {
    match node {
        Node::Int(n) => u16::try_from(*n).ok(),
        Node::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn describe(node: &Node) -> String {
    match node {
        Node::Int(n) => n.to_string(),
        Node::Str(s) => s.clone(),
        other => other.kind().to_owned(),
    }
}

fn server_names(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Vec<FqdnPattern> {
    let mut out = Vec::new();
    for (i, item) in list(node, path, &mut ctx.diag)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = index(path, i);
        let Some(text) = string(item, &at, &mut ctx.diag) else {
            continue;
        };
        match FqdnPattern::parse_pattern(text) {
            Ok(pattern) => out.push(pattern),
            Err(reason) => ctx.diag.error(
                &at,
                PolicyErrorKind::InvalidName {
                    text: text.to_owned(),
                    reason,
                },
            ),
        }
    }
    out
}

/// `terminatingTLS` / `originatingTLS`: the secret reference, mapped to a local path if the
/// options say so. `None` only on errors.
fn tls_context(
    node: &Node,
    path: &str,
    terminating: bool,
    ctx: &mut Ctx<'_>,
) -> Option<TlsSecretRef> {
    let mut map = MapReader::new(node, path, &mut ctx.diag)?;
    for key in ["trustedCA", "certificate", "privateKey"] {
        if map.take(key).is_some() {
            ctx.diag.notice(
                &map.child(key),
                "ignored: tlsgate reads the mapped secret path as a whole (tls.crt, tls.key, \
                 ca.crt)",
            );
        }
    }
    let Some(secret) = map.take("secret") else {
        map.deny_rest("secret, trustedCA, certificate, privateKey", &mut ctx.diag);
        ctx.diag.error(path, PolicyErrorKind::MissingKey("secret"));
        return None;
    };
    let secret_path = map.child("secret");
    map.deny_rest("secret, trustedCA, certificate, privateKey", &mut ctx.diag);
    let key = secret_key(secret, &secret_path, ctx)?;
    let local = ctx.options.secrets.get(&key).cloned();
    if local.is_none() {
        let instead = if terminating {
            "tlsgate mints the certificate for each name from its CA"
        } else {
            "tlsgate verifies origins with its configured trust (system roots or upstream_ca)"
        };
        ctx.diag.notice(
            &secret_path,
            format!("secret {key} is not mapped to a local path: {instead}"),
        );
    }
    let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
    Some(TlsSecretRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        local,
    })
}

/// `rules: {http: [...]}`. DNS, Kafka and generic L7 rules drop the port rule.
fn l7_rules(
    node: &Node,
    path: &str,
    ctx: &mut Ctx<'_>,
) -> Result<Vec<crate::model::HttpRule>, Unsupported> {
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return Ok(Vec::new());
    };
    let dns = map.take("dns").is_some();
    if dns {
        ctx.diag.notice(
            &map.child("dns"),
            "ignored: tlsgate is not a DNS proxy; this port rule (DNS visibility) is not \
             applied, and tlsgate resolves names with its own resolver",
        );
    }
    let http = match map.take("http") {
        Some(node) => http_rules(node, &map.child("http"), Dialect::Cilium, ctx),
        None => Ok(Some(Vec::new())),
    };
    let rest = unknown_keys(&map, "http", Dialect::Cilium, ctx);
    match (dns, http, rest) {
        (false, Ok(http), Ok(())) => Ok(http.unwrap_or_default()),
        _ => Err(Unsupported),
    }
}

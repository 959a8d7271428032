//! What both policy formats share: HTTP rules (method, path, host, headers, headerMatches),
//! header parsing and secret files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};

use crate::diag::{Diag, PolicyErrorKind};
use crate::model::{
    ExpectedValue, FullMatch, HeaderCondition, HeaderEdit, HttpRule, MismatchAction,
};
use crate::yaml::{MapReader, Node, index, list, string};

/// Options for loading a policy.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cilium secret references (`namespace/name`) mapped to local paths: for
    /// `headerMatches[].secret` a file holding the header value; for `terminatingTLS` /
    /// `originatingTLS` whatever the runtime reads there (recorded, not read here).
    pub secrets: BTreeMap<String, PathBuf>,
}

/// The reading context of one file.
pub(crate) struct Ctx<'o> {
    pub diag: Diag,
    /// Relative secret files are resolved against the policy file's directory.
    pub base_dir: PathBuf,
    pub options: &'o LoadOptions,
}

/// How strictly HTTP rules are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// tlsgate's format: unknown keys are errors; secrets are `value_file`.
    Tlsgate,
    /// Cilium's: unknown keys make the caller drop the whole port rule (with a notice, never
    /// silently: ignoring a restriction would widen what is allowed); secrets are
    /// `secret: {namespace, name}` mapped by [`LoadOptions::secrets`].
    Cilium,
}

/// Something the Cilium reader cannot apply inside a port rule: the rule is dropped (a notice
/// was written).
#[derive(Debug)]
pub(crate) struct Unsupported;

const HTTP_KEYS: &str = "method, path, host, headers, headerMatches";
const HEADER_MATCH_KEYS_TLSGATE: &str = "name, value, value_file, mismatch";
const HEADER_MATCH_KEYS_CILIUM: &str = "name, value, secret, mismatch";

/// Reads a list of HTTP rules. `Ok(None)`: errors were reported.
pub(crate) fn http_rules(
    node: &Node,
    path: &str,
    dialect: Dialect,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Vec<HttpRule>>, Unsupported> {
    let Some(items) = list(node, path, &mut ctx.diag) else {
        return Ok(None);
    };
    let errors_before = ctx.diag.errors.len();
    let mut rules = Vec::with_capacity(items.len());
    let mut unsupported = false;
    for (i, item) in items.iter().enumerate() {
        match http_rule(item, &index(path, i), dialect, ctx) {
            Ok(Some(rule)) => rules.push(rule),
            Ok(None) => {}
            Err(Unsupported) => unsupported = true,
        }
    }
    if unsupported {
        return Err(Unsupported);
    }
    Ok((ctx.diag.errors.len() == errors_before).then_some(rules))
}

fn http_rule(
    node: &Node,
    path: &str,
    dialect: Dialect,
    ctx: &mut Ctx<'_>,
) -> Result<Option<HttpRule>, Unsupported> {
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return Ok(None);
    };
    let method = regex_key(&mut map, "method", false, ctx);
    let path_re = regex_key(&mut map, "path", false, ctx);
    let host = regex_key(&mut map, "host", true, ctx);
    let mut headers = Vec::new();
    if let Some(node) = map.take("headers") {
        let at = map.child("headers");
        for (i, item) in list(node, &at, &mut ctx.diag)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = index(&at, i);
            if let Some(condition) = string(item, &at, &mut ctx.diag)
                .and_then(|text| header_condition(text, &at, &mut ctx.diag))
            {
                headers.push(condition);
            }
        }
    }
    let mut edits = Vec::new();
    let mut unsupported = false;
    if let Some(node) = map.take("headerMatches") {
        let at = map.child("headerMatches");
        let items = list(node, &at, &mut ctx.diag).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            match header_match(item, &index(&at, i), dialect, ctx) {
                Ok(Some((condition, None))) => headers.push(condition),
                Ok(Some((condition, Some(mismatch)))) => edits.push(HeaderEdit {
                    condition,
                    mismatch,
                }),
                Ok(None) => {}
                Err(Unsupported) => unsupported = true,
            }
        }
    }
    if unknown_keys(&map, HTTP_KEYS, dialect, ctx).is_err() || unsupported {
        return Err(Unsupported);
    }
    let (Some(method), Some(path_re), Some(host)) = (method, path_re, host) else {
        return Ok(None);
    };
    Ok(Some(HttpRule {
        path_in_file: path.to_owned(),
        method,
        path: path_re,
        host,
        headers,
        edits,
    }))
}

/// Unknown keys: errors for tlsgate, a dropped port rule for Cilium.
pub(crate) fn unknown_keys(
    map: &MapReader<'_>,
    expected: &'static str,
    dialect: Dialect,
    ctx: &mut Ctx<'_>,
) -> Result<(), Unsupported> {
    if dialect == Dialect::Tlsgate {
        map.deny_rest(expected, &mut ctx.diag);
        return Ok(());
    }
    let mut unsupported = false;
    for (key, path) in map.rest() {
        ctx.diag.notice(
            &path,
            format!(
                "`{key}` is not supported by tlsgate; the whole port rule containing it is not \
                 applied (ignoring only `{key}` could allow more than the policy says)"
            ),
        );
        unsupported = true;
    }
    if unsupported {
        Err(Unsupported)
    } else {
        Ok(())
    }
}

/// A regex key, compiled for a full match. `Some(None)` inside: absent.
fn regex_key(
    map: &mut MapReader<'_>,
    key: &str,
    case_insensitive: bool,
    ctx: &mut Ctx<'_>,
) -> Option<Option<FullMatch>> {
    let Some(node) = map.take(key) else {
        return Some(None);
    };
    let at = map.child(key);
    let source = string(node, &at, &mut ctx.diag)?;
    match FullMatch::new(source, case_insensitive) {
        Ok(regex) => Some(Some(regex)),
        Err(err) => {
            ctx.diag
                .error(&at, PolicyErrorKind::InvalidRegex(err.to_string()));
            None
        }
    }
}

/// `Name` (must be present) or `Name: value` (one of its values must equal `value` exactly).
/// The name is what comes before the first `:`; surrounding spaces are trimmed.
pub(crate) fn header_condition(text: &str, path: &str, diag: &mut Diag) -> Option<HeaderCondition> {
    let (name, value) = match text.split_once(':') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (text.trim(), None),
    };
    if name.is_empty() {
        diag.error(path, PolicyErrorKind::InvalidHeader(text.to_owned()));
        return None;
    }
    let name = header_name(name, path, diag)?;
    let value = match value.filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => Some(ExpectedValue::Literal(header_value(value, path, diag)?)),
    };
    Some(HeaderCondition { name, value })
}

fn header_name(text: &str, path: &str, diag: &mut Diag) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            diag.error(path, PolicyErrorKind::InvalidHeaderName(text.to_owned()));
            None
        }
    }
}

fn header_value(text: &str, path: &str, diag: &mut Diag) -> Option<HeaderValue> {
    match HeaderValue::from_str(text) {
        Ok(value) => Some(value),
        Err(_) => {
            diag.error(path, PolicyErrorKind::InvalidHeaderValue);
            None
        }
    }
}

/// A `headerMatches` element: the condition and its mismatch action (`None`: the header must
/// match for the HTTP rule to match).
fn header_match(
    node: &Node,
    path: &str,
    dialect: Dialect,
    ctx: &mut Ctx<'_>,
) -> Result<Option<(HeaderCondition, Option<MismatchAction>)>, Unsupported> {
    let Some(mut map) = MapReader::new(node, path, &mut ctx.diag) else {
        return Ok(None);
    };
    let name = match map.take("name") {
        Some(node) => string(node, &map.child("name"), &mut ctx.diag)
            .and_then(|n| header_name(n, &map.child("name"), &mut ctx.diag)),
        None => {
            ctx.diag.error(path, PolicyErrorKind::MissingKey("name"));
            None
        }
    };
    let mismatch = mismatch_action(&mut map, ctx);
    let literal = map.take("value").and_then(|node| {
        let at = map.child("value");
        string(node, &at, &mut ctx.diag)
            .filter(|v| !v.is_empty())
            .and_then(|v| header_value(v, &at, &mut ctx.diag))
    });
    let value = match dialect {
        Dialect::Tlsgate => tlsgate_secret(&mut map, literal, ctx),
        Dialect::Cilium => cilium_secret(&mut map, literal, ctx),
    };
    let expected_keys = match dialect {
        Dialect::Tlsgate => HEADER_MATCH_KEYS_TLSGATE,
        Dialect::Cilium => HEADER_MATCH_KEYS_CILIUM,
    };
    unknown_keys(&map, expected_keys, dialect, ctx)?;
    let (Some(name), Some(mismatch), Some(value)) = (name, mismatch, value) else {
        return Ok(None);
    };
    if let (Some(action @ (MismatchAction::Add | MismatchAction::Replace)), None) =
        (mismatch, &value)
    {
        ctx.diag
            .error(path, PolicyErrorKind::EditNeedsValue(action.label()));
        return Ok(None);
    }
    Ok(Some((HeaderCondition { name, value }, mismatch)))
}

/// `mismatch`: absent or empty → `Some(None)`; an unknown word → error (`None`).
fn mismatch_action(map: &mut MapReader<'_>, ctx: &mut Ctx<'_>) -> Option<Option<MismatchAction>> {
    let Some(node) = map.take("mismatch") else {
        return Some(None);
    };
    let at = map.child("mismatch");
    let text = string(node, &at, &mut ctx.diag)?;
    let action = match text.to_ascii_uppercase().as_str() {
        "" => None,
        "LOG" => Some(MismatchAction::Log),
        "ADD" => Some(MismatchAction::Add),
        "DELETE" => Some(MismatchAction::Delete),
        "REPLACE" => Some(MismatchAction::Replace),
        _ => {
            ctx.diag.error(
                &at,
                PolicyErrorKind::NotOneOf {
                    value: text.to_owned(),
                    expected: "LOG, ADD, DELETE, REPLACE",
                },
            );
            return None;
        }
    };
    Some(action)
}

/// tlsgate's `value_file` (relative to the policy file), exclusive with `value`.
/// Outer `None`: an error was reported.
fn tlsgate_secret(
    map: &mut MapReader<'_>,
    literal: Option<HeaderValue>,
    ctx: &mut Ctx<'_>,
) -> Option<Option<ExpectedValue>> {
    let Some(node) = map.take("value_file") else {
        return Some(literal.map(ExpectedValue::Literal));
    };
    let at = map.child("value_file");
    if literal.is_some() {
        ctx.diag
            .error(&at, PolicyErrorKind::Conflicting("value_file", "value"));
        return None;
    }
    let file = ctx.base_dir.join(string(node, &at, &mut ctx.diag)?);
    read_secret(&file, &at, ctx).map(Some)
}

/// Cilium's `secret: {namespace, name}`: the mapped file's content; unmapped, the literal
/// `value` is the fallback (as in Cilium) with a notice; neither is an error.
fn cilium_secret(
    map: &mut MapReader<'_>,
    literal: Option<HeaderValue>,
    ctx: &mut Ctx<'_>,
) -> Option<Option<ExpectedValue>> {
    let Some(node) = map.take("secret") else {
        return Some(literal.map(ExpectedValue::Literal));
    };
    let at = map.child("secret");
    let key = secret_key(node, &at, ctx)?;
    match ctx.options.secrets.get(&key).cloned() {
        Some(file) => read_secret(&file, &at, ctx).map(Some),
        None => match literal {
            Some(value) => {
                ctx.diag.notice(
                    &at,
                    format!(
                        "secret {key} is not mapped to a local file; using `value` instead, as \
                         Cilium does when the secret is missing"
                    ),
                );
                Some(Some(ExpectedValue::Literal(value)))
            }
            None => {
                ctx.diag.error(&at, PolicyErrorKind::SecretNotMapped(key));
                None
            }
        },
    }
}

/// `{namespace, name}` → `namespace/name` (namespace may be empty).
pub(crate) fn secret_key(node: &Node, path: &str, ctx: &mut Ctx<'_>) -> Option<String> {
    let mut map = MapReader::new(node, path, &mut ctx.diag)?;
    let namespace = match map.take("namespace") {
        Some(node) => string(node, &map.child("namespace"), &mut ctx.diag)?.to_owned(),
        None => String::new(),
    };
    let name = match map.take("name") {
        Some(node) => string(node, &map.child("name"), &mut ctx.diag)?.to_owned(),
        None => {
            ctx.diag.error(path, PolicyErrorKind::MissingKey("name"));
            return None;
        }
    };
    map.deny_rest("namespace, name", &mut ctx.diag);
    Some(format!("{namespace}/{name}"))
}

/// Reads a secret header value: the file's bytes without one trailing newline, marked
/// sensitive. Errors name the file, never the content.
fn read_secret(file: &Path, path: &str, ctx: &mut Ctx<'_>) -> Option<ExpectedValue> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(source) => {
            ctx.diag.error(
                path,
                PolicyErrorKind::ReadSecret {
                    file: file.to_owned(),
                    source,
                },
            );
            return None;
        }
    };
    let trimmed = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes);
    match HeaderValue::from_bytes(trimmed) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(ExpectedValue::Secret {
                file: file.to_owned(),
                value,
            })
        }
        Err(_) => {
            ctx.diag
                .error(path, PolicyErrorKind::SecretNotHeaderValue(file.to_owned()));
            None
        }
    }
}

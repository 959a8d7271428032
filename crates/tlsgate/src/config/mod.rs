//! The configuration file: its serde shape ([`file`]), error recovery while reading it
//! ([`lenient`]), and [`validate`] into the typed runtime config of `tlsgate_proxy::config`.
//! See docs/config.md for the format.

mod file;
mod lenient;
mod pem;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use file::FileConfig;
use file::{InterceptCaFile, ListenerFile, ListenerKindFile};
use lenient::{Lenient, Tree};
use tlsgate_proxy::config::Config;
pub use validate::validate;

/// One problem in a config file, with the key path it belongs to (`listeners[2].tls.key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Empty for problems with the file as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Reads, parses and validates the config file at `path`; relative paths inside it resolve against
/// its directory.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            "",
            format!("reading {}: {e}", path.display()),
        )]
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parse_and_validate(&text, base_dir)
}

/// Parses `text` and validates it with paths relative to `base_dir`; deserialization problems
/// come first, then semantic ones, each group in file order.
pub fn parse_and_validate(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let (file, mut errors) = parse_yaml(text);
    let Some(file) = file else {
        return Err(errors);
    };
    match validate(file, base_dir) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The config of `tlsgate run` without `--config`: one explicit intercepting proxy on `listen`
/// named `proxy`, minting from the CA in `ca_dir`, bumping everything, every default as if the
/// file said nothing. Built through the same validation as a file, so it is checked the same way.
pub fn default_intercept(listen: SocketAddr, ca_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let proxy = ListenerFile {
        name: "proxy".to_owned(),
        kind: ListenerKindFile::Intercept,
        listen: listen.to_string(),
        relay: None,
        inner_port: None,
        default_sni: None,
        tls: None,
        routes: None,
        mode: None,
        ca: Some(Lenient::ok(InterceptCaFile {
            dir: Some(ca_dir.to_owned()),
            ..InterceptCaFile::default()
        })),
        certs: None,
        upstream_ca: None,
        danger_accept_invalid_upstream_certs: None,
        coalesce_origin_connections: None,
        rules: None,
        default_action: None,
        policy: None,
        policy_audit: None,
    };
    let file = FileConfig {
        relays: Vec::new(),
        listeners: vec![Lenient::ok(proxy)],
        allow_destinations: Vec::new(),
        dns: None,
        timeouts: None,
        limits: None,
        admin: None,
        flows: None,
    };
    validate(file, Path::new("."))
}

/// Parses the file shape, with every deserialization problem found. The file is `None` when a
/// problem other than unknown keys (which are dropped after being reported) stopped reading.
///
/// The only call into the YAML crate, so it can be swapped: the document is buffered into a
/// format-independent tree right away.
pub fn parse_yaml(text: &str) -> (Option<FileConfig>, Vec<ConfigError>) {
    let deserializer = serde_norway::Deserializer::from_str(text);
    let tree = match serde_path_to_error::deserialize::<_, Tree>(deserializer) {
        Ok(Tree::Null) => Tree::Map(Vec::new()),
        Ok(tree) => tree,
        Err(err) => {
            let path = render_path(err.path());
            return (
                None,
                vec![ConfigError::new(path, err.into_inner().to_string())],
            );
        }
    };
    let (file, errors) = lenient::deserialize_recovering(tree);
    let errors = errors
        .into_iter()
        .map(|e| ConfigError::new(e.path, e.message))
        .collect();
    (file, errors)
}

/// `listeners[1].routes[0].match`; empty for the document root.
fn render_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path {
        join_segment(&mut out, &segment.to_string());
    }
    out
}

/// Appends a key (`tls`) or an index (`[2]`) to a rendered path.
fn join_segment(out: &mut String, segment: &str) {
    if !out.is_empty() && !segment.starts_with('[') {
        out.push('.');
    }
    out.push_str(segment);
}

/// `prefix` followed by a relative rendered path (which may be empty or start with an index).
fn join_path(prefix: &str, relative: &str) -> String {
    let mut out = prefix.to_owned();
    if !relative.is_empty() {
        join_segment(&mut out, relative);
    }
    out
}

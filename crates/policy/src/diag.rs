//! What loading a policy reports: errors (the policy is refused) and notices (something in a
//! Cilium file that tlsgate does not apply, and why). Each names the file, the YAML document
//! and the key path.

use std::fmt;
use std::path::PathBuf;

use crate::fqdn::PatternError;

/// A problem that stops the policy from loading.
#[derive(Debug)]
pub struct PolicyError {
    pub file: String,
    /// 0-based index of the YAML document in the file (displayed 1-based).
    pub document: Option<usize>,
    /// `rules[0].http[1].path`; empty for the document itself.
    pub path: String,
    pub kind: PolicyErrorKind,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.document, &self.path)?;
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

/// What went wrong. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum PolicyErrorKind {
    #[error("cannot read the policy file")]
    ReadFile(#[source] std::io::Error),
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("unknown key `{key}` (expected one of: {expected})")]
    UnknownKey { key: String, expected: &'static str },
    #[error("key `{0}` appears twice")]
    DuplicateKey(String),
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("{value:?} is not one of: {expected}")]
    NotOneOf {
        value: String,
        expected: &'static str,
    },
    #[error("invalid name {text:?}: {reason}")]
    InvalidName { text: String, reason: PatternError },
    #[error("invalid port {0:?}: expected 1-65535 or a range like 8000-8080")]
    InvalidPort(String),
    #[error("invalid regular expression: {0}")]
    InvalidRegex(String),
    #[error("invalid header {0:?}: expected `Name` or `Name: value`")]
    InvalidHeader(String),
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    #[error("invalid header value (control characters are not allowed)")]
    InvalidHeaderValue,
    #[error("`{0}` cannot be combined with `{1}`")]
    Conflicting(&'static str, &'static str),
    #[error("http rules need `tls: bump` (a {0} connection has no HTTP to inspect)")]
    HttpNeedsBump(&'static str),
    #[error(
        "an empty `http` list allows nothing and is ambiguous: omit `http` to allow every request"
    )]
    EmptyHttp,
    #[error("mismatch {0} needs a value to set")]
    EditNeedsValue(&'static str),
    #[error(
        "secret {0} is not mapped to a local file and has no `value` to fall back on (map it: --secret {0}=FILE)"
    )]
    SecretNotMapped(String),
    #[error("cannot read secret file {}", .file.display())]
    ReadSecret {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {} does not hold a valid header value", .0.display())]
    SecretNotHeaderValue(PathBuf),
    #[error(
        "kind {0:?} is not a policy tlsgate reads (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy)"
    )]
    UnsupportedKind(String),
    #[error("the document has neither `spec` nor `specs`")]
    NoSpec,
    #[error("the file holds no policy document")]
    Empty,
}

/// Something in a policy file that tlsgate does not apply, and why. Never silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub file: String,
    /// 0-based index of the YAML document in the file (displayed 1-based).
    pub document: usize,
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, Some(self.document), &self.path)?;
        f.write_str(&self.reason)
    }
}

fn write_location(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    document: Option<usize>,
    path: &str,
) -> fmt::Result {
    write!(f, "{file}")?;
    if let Some(document) = document {
        write!(f, " (document {})", document + 1)?;
    }
    if !path.is_empty() {
        write!(f, ": {path}")?;
    }
    f.write_str(": ")
}

/// Collects errors and notices for one file while it is read.
#[derive(Debug)]
pub(crate) struct Diag {
    pub file: String,
    pub document: usize,
    pub errors: Vec<PolicyError>,
    pub notices: Vec<Notice>,
}

impl Diag {
    pub fn new(file: String) -> Self {
        Self {
            file,
            document: 0,
            errors: Vec::new(),
            notices: Vec::new(),
        }
    }

    pub fn error(&mut self, path: &str, kind: PolicyErrorKind) {
        self.errors.push(PolicyError {
            file: self.file.clone(),
            document: Some(self.document),
            path: path.to_owned(),
            kind,
        });
    }

    /// An error about the whole file (reading it, parsing YAML).
    pub fn file_error(&mut self, kind: PolicyErrorKind) {
        self.errors.push(PolicyError {
            file: self.file.clone(),
            document: None,
            path: String::new(),
            kind,
        });
    }

    pub fn notice(&mut self, path: &str, reason: impl Into<String>) {
        self.notices.push(Notice {
            file: self.file.clone(),
            document: self.document,
            path: path.to_owned(),
            reason: reason.into(),
        });
    }
}

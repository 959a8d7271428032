//! Loading a policy file: format detection, then one reader, then one compiled [`Policy`].

use std::path::Path;

use crate::cilium;
use crate::diag::{Diag, Notice, PolicyError, PolicyErrorKind};
use crate::model::{DefaultAction, Policy};
use crate::native;
use crate::read::{Ctx, LoadOptions};
use crate::yaml::{Node, parse_documents};

/// The formats a policy file may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// tlsgate's own `default:` / `rules:` document.
    Tlsgate,
    /// One or more `CiliumNetworkPolicy` / `CiliumClusterwideNetworkPolicy` documents.
    Cilium,
}

/// A loaded policy with what it did not apply, or every error found.
pub type LoadResult = Result<(Policy, Vec<Notice>), Vec<PolicyError>>;

/// Loads a policy file, detecting its format: a `kind:` key in the first document means
/// Cilium, otherwise tlsgate's format. Unmapped Cilium secrets are left to the runtime.
pub fn load_file(path: &Path) -> LoadResult {
    load_file_with(path, &LoadOptions::default())
}

/// [`load_file`] with options (secret mapping).
pub fn load_file_with(path: &Path, options: &LoadOptions) -> LoadResult {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let base_dir = path.parent().unwrap_or(Path::new("."));
            load_str(&text, &name, base_dir, options)
        }
        Err(err) => {
            let mut diag = Diag::new(name);
            diag.file_error(PolicyErrorKind::ReadFile(err));
            Err(diag.errors)
        }
    }
}

/// Loads policy text; `file` names it in messages, `base_dir` resolves relative secret files.
pub fn load_str(text: &str, file: &str, base_dir: &Path, options: &LoadOptions) -> LoadResult {
    let mut ctx = Ctx {
        diag: Diag::new(file.to_owned()),
        base_dir: base_dir.to_owned(),
        options,
    };
    let documents = match parse_documents(text) {
        Ok(documents) => documents,
        Err(message) => {
            ctx.diag.file_error(PolicyErrorKind::Yaml(message));
            return Err(ctx.diag.errors);
        }
    };
    let (default, rules) = match detect(&documents) {
        None => {
            ctx.diag.file_error(PolicyErrorKind::Empty);
            return Err(ctx.diag.errors);
        }
        Some((Format::Tlsgate, first)) => {
            ctx.diag.document = first;
            let read = native::read(&documents[first], &mut ctx);
            for (i, extra) in documents.iter().enumerate().skip(first + 1) {
                if *extra != Node::Null {
                    ctx.diag.document = i;
                    ctx.diag.error(
                        "",
                        PolicyErrorKind::UnsupportedKind(
                            "a second tlsgate policy document (put every rule in one)".to_owned(),
                        ),
                    );
                }
            }
            read
        }
        Some((Format::Cilium, _)) => {
            let mut rules = Vec::new();
            for (i, document) in documents.iter().enumerate() {
                if *document == Node::Null {
                    continue;
                }
                ctx.diag.document = i;
                rules.extend(cilium::read(document, &mut ctx));
            }
            (DefaultAction::Deny, rules)
        }
    };
    if !ctx.diag.errors.is_empty() {
        return Err(ctx.diag.errors);
    }
    Ok((Policy::new(default, rules), ctx.diag.notices))
}

/// The format and the index of the first non-empty document.
pub fn detect_format(text: &str) -> Option<Format> {
    parse_documents(text)
        .ok()
        .and_then(|documents| detect(&documents).map(|(format, _)| format))
}

fn detect(documents: &[Node]) -> Option<(Format, usize)> {
    let (first, document) = documents
        .iter()
        .enumerate()
        .find(|(_, d)| **d != Node::Null)?;
    let is_cilium =
        matches!(document, Node::Map(entries) if entries.iter().any(|(k, _)| k == "kind"));
    Some((
        if is_cilium {
            Format::Cilium
        } else {
            Format::Tlsgate
        },
        first,
    ))
}

//! YAML in, a small format-independent tree out, and typed reading of that tree with key
//! paths. `parse_documents` is the only function that touches the YAML crate, so it can be
//! swapped.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use crate::diag::{Diag, PolicyErrorKind};

/// A YAML value. Mapping keys are kept as strings, in file order (duplicates included, so they
/// can be reported).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// Parses every document of a YAML stream. The one call into the YAML crate.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, String> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        documents.push(Node::deserialize(document).map_err(|e| e.to_string())?);
    }
    Ok(documents)
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }

    /// The string a scalar stands for when used as a key.
    fn scalar_text(&self) -> Option<String> {
        match self {
            Self::Null => Some("null".to_owned()),
            Self::Bool(b) => Some(b.to_string()),
            Self::Int(i) => Some(i.to_string()),
            Self::Float(x) => Some(x.to_string()),
            Self::Str(s) => Some(s.clone()),
            Self::Seq(_) | Self::Map(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<Node, Node>()? {
            let key = key
                .scalar_text()
                .ok_or_else(|| de::Error::custom("mapping keys must be scalars"))?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Reads a mapping key by key, remembering which keys were used so the rest can be reported.
pub(crate) struct MapReader<'n> {
    pub path: String,
    entries: &'n [(String, Node)],
    used: Vec<bool>,
}

impl<'n> MapReader<'n> {
    /// `None` (with an error) when `node` is not a mapping; duplicate keys are errors.
    pub fn new(node: &'n Node, path: &str, diag: &mut Diag) -> Option<Self> {
        let Node::Map(entries) = node else {
            wrong_type(node, path, "a mapping", diag);
            return None;
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(k, _)| k == key) {
                diag.error(&join(path, key), PolicyErrorKind::DuplicateKey(key.clone()));
            }
        }
        Some(Self {
            path: path.to_owned(),
            entries,
            used: vec![false; entries.len()],
        })
    }

    /// The value of `key` (null values count as absent), marking it used.
    pub fn take(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        self.used[i] = true;
        match &self.entries[i].1 {
            Node::Null => None,
            node => Some(node),
        }
    }

    /// Whether `key` is present (even with a null value), without using it.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    pub fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The keys not taken yet, with their paths.
    pub fn rest(&self) -> impl Iterator<Item = (&'n str, String)> + '_ {
        self.entries
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((key, _), _)| (key.as_str(), join(&self.path, key)))
    }

    /// Reports every key not taken as an error: for formats with `deny_unknown_fields`.
    pub fn deny_rest(&self, expected: &'static str, diag: &mut Diag) {
        for (key, path) in self.rest() {
            diag.error(
                &path,
                PolicyErrorKind::UnknownKey {
                    key: key.to_owned(),
                    expected,
                },
            );
        }
    }
}

pub(crate) fn wrong_type(node: &Node, path: &str, expected: &'static str, diag: &mut Diag) {
    diag.error(
        path,
        PolicyErrorKind::WrongType {
            expected,
            found: node.kind(),
        },
    );
}

/// A string (numbers and booleans are refused: quote them).
pub(crate) fn string<'n>(node: &'n Node, path: &str, diag: &mut Diag) -> Option<&'n str> {
    match node {
        Node::Str(s) => Some(s),
        other => {
            wrong_type(other, path, "a string", diag);
            None
        }
    }
}

/// A list's items (a missing or null list is empty).
pub(crate) fn list<'n>(node: &'n Node, path: &str, diag: &mut Diag) -> Option<&'n [Node]> {
    match node {
        Node::Seq(items) => Some(items),
        other => {
            wrong_type(other, path, "a list", diag);
            None
        }
    }
}

/// A string or a list of strings, with each string's path.
pub(crate) fn strings<'n>(node: &'n Node, path: &str, diag: &mut Diag) -> Vec<(&'n str, String)> {
    match node {
        Node::Str(s) => vec![(s.as_str(), path.to_owned())],
        Node::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let at = index(path, i);
                string(item, &at, diag).map(|s| (s, at))
            })
            .collect(),
        other => {
            wrong_type(other, path, "a string or a list of strings", diag);
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_in_order() {
        let docs = parse_documents("a: 1\n---\n- x\n- 2\n---\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0], Node::Map(vec![("a".into(), Node::Int(1))]));
        assert_eq!(
            docs[1],
            Node::Seq(vec![Node::Str("x".into()), Node::Int(2)])
        );
        assert_eq!(docs[2], Node::Null);
    }

    #[test]
    fn keeps_duplicate_keys_for_reporting() {
        let docs = parse_documents("a: 1\na: 2\n");
        // Either the YAML crate refuses them or the reader reports them: never last-one-wins
        // silently.
        match docs {
            Err(message) => assert!(message.contains('a'), "{message}"),
            Ok(docs) => {
                let mut diag = Diag::new("f".into());
                MapReader::new(&docs[0], "", &mut diag).unwrap();
                assert_eq!(diag.errors.len(), 1, "{:?}", diag.errors);
            }
        }
    }

    #[test]
    fn reports_wrong_types_with_paths() {
        let docs = parse_documents("rules: 3\n").unwrap();
        let mut diag = Diag::new("f".into());
        let mut map = MapReader::new(&docs[0], "", &mut diag).unwrap();
        let rules = map.take("rules").unwrap();
        assert!(list(rules, &map.child("rules"), &mut diag).is_none());
        assert_eq!(
            diag.errors[0].to_string(),
            "f (document 1): rules: expected a list, found an integer"
        );
    }

    #[test]
    fn invalid_yaml_is_an_error_not_a_panic() {
        assert!(parse_documents("a: [1, 2\n").is_err());
        assert!(parse_documents(": : :\n\t- x").is_err());
    }
}

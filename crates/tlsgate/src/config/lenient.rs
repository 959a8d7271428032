//! Error recovery while deserializing, so `validate()` can report every problem at once:
//! - an unknown key is reported (with serde's message and its path), dropped, and deserialization
//!   retried, so a typo never hides the other problems of the same element;
//! - a list element with any other error (wrong type, missing key) becomes an element with errors
//!   and no value, instead of aborting the whole file.
//!
//! The document is first buffered into a format-independent [`Tree`], which is what makes retrying
//! possible and keeps the YAML crate out of everything but `parse_yaml`.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_path_to_error::Segment;

/// Bounds the retries of one element; far more unknown keys than any real typo count.
const MAX_UNKNOWN_KEYS: usize = 64;

/// A value (or `None` if it could not be built) and every error found while reading it.
#[derive(Debug)]
pub struct Lenient<T> {
    pub value: Option<T>,
    pub errors: Vec<ElementError>,
    /// The element's `name` key, kept when `value` is `None` so references to it do not produce a
    /// second, misleading "unknown name" error.
    pub name: Option<String>,
}

/// One deserialization problem, with its key path relative to the element (empty: the element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementError {
    pub path: String,
    pub message: String,
}

impl<T> Lenient<T> {
    /// A value built in code rather than read from a file: nothing to report.
    pub fn ok(value: T) -> Self {
        Self {
            value: Some(value),
            errors: Vec::new(),
            name: None,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tree = Tree::deserialize(deserializer)?;
        let name = tree.string_field("name");
        let (value, errors) = deserialize_recovering(tree);
        Ok(Self {
            value,
            errors,
            name,
        })
    }
}

/// Deserializes `T` from `tree`, dropping each unknown key and retrying; stops at the first error
/// of any other kind.
pub fn deserialize_recovering<T: DeserializeOwned>(
    mut tree: Tree,
) -> (Option<T>, Vec<ElementError>) {
    let mut errors = Vec::new();
    for _ in 0..MAX_UNKNOWN_KEYS {
        match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(value) => return (Some(value), errors),
            Err(err) => {
                let path = err.path().clone();
                let err = err.into_inner();
                errors.push(ElementError {
                    path: super::render_path(&path),
                    message: err.message,
                });
                if !err.unknown_field || !tree.remove(&path) {
                    break;
                }
            }
        }
    }
    (None, errors)
}

/// The error of [`Tree`]'s deserializer: serde's message, and whether it is an unknown key.
#[derive(Debug)]
pub struct TreeError {
    message: String,
    unknown_field: bool,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TreeError {}

impl de::Error for TreeError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        Self {
            message: message.to_string(),
            unknown_field: false,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        // serde's own wording, flagged so the key can be dropped and reading retried.
        let message = <de::value::Error as de::Error>::unknown_field(field, expected);
        Self {
            message: message.to_string(),
            unknown_field: true,
        }
    }
}

/// A format-independent buffered document node.
#[derive(Debug, Clone)]
pub enum Tree {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Seq(Vec<Tree>),
    Map(Vec<(Tree, Tree)>),
}

impl Tree {
    /// Removes the map entry `path` points to; `false` if there is none.
    fn remove(&mut self, path: &serde_path_to_error::Path) -> bool {
        let segments: Vec<&Segment> = path.iter().collect();
        let Some((Segment::Map { key: last }, parents)) = segments.split_last() else {
            return false;
        };
        let mut node = self;
        for segment in parents {
            let next = match (node, segment) {
                (Self::Map(entries), Segment::Map { key }) => entries
                    .iter_mut()
                    .find(|(k, _)| matches!(k, Self::Str(k) if k == key))
                    .map(|(_, v)| v),
                (Self::Seq(items), Segment::Seq { index }) => items.get_mut(*index),
                _ => None,
            };
            let Some(next) = next else {
                return false;
            };
            node = next;
        }
        let Self::Map(entries) = node else {
            return false;
        };
        let before = entries.len();
        entries.retain(|(k, _)| !matches!(k, Self::Str(k) if k == last));
        entries.len() < before
    }

    fn string_field(&self, key: &str) -> Option<String> {
        let Self::Map(entries) = self else {
            return None;
        };
        entries.iter().find_map(|(k, v)| match (k, v) {
            (Self::Str(k), Self::Str(v)) if k == key => Some(v.clone()),
            _ => None,
        })
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Tree::Map(entries))
    }
}

impl<'de> Deserializer<'de> for Tree {
    type Error = TreeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        match self {
            Self::Null => visitor.visit_unit(),
            Self::Bool(v) => visitor.visit_bool(v),
            Self::I64(v) => visitor.visit_i64(v),
            Self::U64(v) => visitor.visit_u64(v),
            Self::F64(v) => visitor.visit_f64(v),
            Self::Str(v) => visitor.visit_string(v),
            Self::Seq(items) => visitor.visit_seq(SeqDeserializer::new(items.into_iter())),
            Self::Map(entries) => visitor.visit_map(MapDeserializer::new(entries.into_iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        match self {
            Self::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        match self {
            Self::Str(variant) => visitor.visit_enum(variant.into_deserializer()),
            // Only unit variants are used in the file schema; anything else is a type error.
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, TreeError> for Tree {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
        port: u16,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        TlsPassthrough,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        items: Vec<Lenient<Inner>>,
    }

    fn parse(yaml: &str) -> Outer {
        serde_norway::from_str(yaml).expect("outer document parses")
    }

    #[test]
    fn keeps_good_elements_and_reports_broken_ones_with_their_inner_path() {
        let outer = parse(
            "items:\n- {name: a, port: 1, mode: tls-passthrough}\n- {name: c, port: 70000}\n",
        );
        let [a, c] = &outer.items[..] else {
            panic!("two items expected: {outer:?}");
        };
        let a_value = a.value.as_ref().expect("a parses");
        assert_eq!((a_value.name.as_str(), a_value.port), ("a", 1));
        assert_eq!(a_value.mode, Some(Mode::TlsPassthrough));
        assert!(a.errors.is_empty());
        assert!(c.value.is_none());
        assert_eq!(c.name.as_deref(), Some("c"));
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        assert_eq!(c.errors[0].path, "port");
        assert!(c.errors[0].message.contains("70000"), "{:?}", c.errors);
    }

    #[test]
    fn reports_every_unknown_key_and_still_reads_the_rest() {
        let outer = parse("items:\n- {name: b, colour: red, port: 2, size: 3}\n");
        let b = &outer.items[0];
        let paths: Vec<&str> = b.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["colour", "size"]);
        assert!(
            b.errors[0]
                .message
                .starts_with("unknown field `colour`, expected one of `name`")
        );
        assert_eq!(b.value.as_ref().map(|v| v.port), Some(2));
    }

    #[test]
    fn reports_unknown_enum_variant() {
        let outer = parse("items:\n- {name: a, port: 1, mode: passthrough}\n");
        let item = &outer.items[0];
        assert!(item.value.is_none());
        assert_eq!(item.errors[0].path, "mode");
        assert!(
            item.errors[0]
                .message
                .contains("unknown variant `passthrough`"),
            "{:?}",
            item.errors
        );
    }
}

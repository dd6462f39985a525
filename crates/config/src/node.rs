//! A plain YAML value tree, and a reader that turns one mapping of it into typed
//! settings while remembering which keys were used.
//!
//! The file is first read into a [`Node`] tree (keys kept in file order, with their
//! spelling), environment overrides are written into that tree, and only then are the
//! typed sections decoded. Decoding through a [`Section`] gives every error its full
//! key path and makes any key left unread an error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::duration::parse_duration;
use crate::error::ConfigError;

/// One YAML value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// A value set by an environment variable: always text, and errors about it
    /// name the variable.
    Env {
        var: String,
        value: String,
    },
}

impl Node {
    pub(crate) fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    pub(crate) fn path(p: &std::path::Path) -> Node {
        Node::Str(p.to_string_lossy().into_owned())
    }

    pub(crate) fn opt_path(p: Option<&PathBuf>) -> Node {
        p.map_or(Node::Null, |p| Node::path(p))
    }

    pub(crate) fn paths(ps: &[PathBuf]) -> Node {
        Node::Seq(ps.iter().map(|p| Node::path(p)).collect())
    }

    pub(crate) fn duration(d: Duration) -> Node {
        Node::Str(crate::duration::format_duration(d))
    }

    pub(crate) fn uint(v: impl Into<u64>) -> Node {
        let v: u64 = v.into();
        i64::try_from(v).map_or_else(|_| Node::Str(v.to_string()), Node::Int)
    }

    /// The mapping without the entries named in `keys` whose value is null (optional
    /// sections that are absent).
    pub(crate) fn without_null(mut self, keys: &[&str]) -> Node {
        if let Node::Map(entries) = &mut self {
            entries.retain(|(k, v)| !(matches!(v, Node::Null) && keys.contains(&k.as_str())));
        }
        self
    }

    /// The entry of a mapping whose key equals `key` ignoring ASCII case.
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Set the value at `path` (keys compared ignoring case), creating mappings on
    /// the way and replacing any non-mapping that stands where one is needed.
    pub(crate) fn set_path(&mut self, path: &[&str], value: Node) {
        assert!(!path.is_empty(), "set_path needs at least one key");
        if !matches!(self, Node::Map(_)) {
            *self = Node::Map(Vec::new());
        }
        let Node::Map(entries) = self else {
            unreachable!("made a mapping just above")
        };
        let index = match entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(path[0]))
        {
            Some(i) => i,
            None => {
                entries.push((path[0].to_string(), Node::Null));
                entries.len() - 1
            }
        };
        let slot = &mut entries[index].1;
        if path.len() == 1 {
            *slot = value;
        } else {
            slot.set_path(&path[1..], value);
        }
    }

    /// Every path from the root to a non-mapping value (null, scalar or list), with
    /// keys spelled as in the tree.
    pub(crate) fn leaf_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match self {
            Node::Map(entries) => {
                for (k, v) in entries {
                    prefix.push(k.clone());
                    if matches!(v, Node::Map(_)) {
                        v.leaf_paths(prefix, out);
                    } else {
                        out.push(prefix.clone());
                    }
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }

    /// The value at a path, if there is one.
    pub(crate) fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::uint(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or_else(|_| Node::Str(v.to_string()), Node::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or_else(|_| Node::Str(v.to_string()), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
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
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key {
                Node::Str(s) => s,
                Node::Int(i) => i.to_string(),
                Node::Bool(b) => b.to_string(),
                Node::Float(f) => f.to_string(),
                Node::Null => String::new(),
                _ => return Err(de::Error::custom("mapping keys must be plain scalars")),
            };
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Int(i) => serializer.serialize_i64(*i),
            Node::Float(f) => serializer.serialize_f64(*f),
            Node::Str(s) => serializer.serialize_str(s),
            Node::Env { value, .. } => serializer.serialize_str(value),
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Builds an error about one value: it names the environment variable when the
/// value came from one, the key otherwise.
pub(crate) fn value_error(node: &Node, key: &str, reason: impl Into<String>) -> ConfigError {
    match node {
        Node::Env { var, .. } => ConfigError::InvalidEnvValue {
            var: var.clone(),
            key: key.to_string(),
            reason: reason.into(),
        },
        _ => ConfigError::InvalidValue {
            key: key.to_string(),
            reason: reason.into(),
        },
    }
}

/// Text of a scalar (numbers and booleans written back as text); `None` for null.
pub(crate) fn scalar_text(node: &Node, key: &str) -> Result<Option<String>, ConfigError> {
    match node {
        Node::Null => Ok(None),
        Node::Str(s) | Node::Env { value: s, .. } => Ok(Some(s.clone())),
        Node::Bool(b) => Ok(Some(b.to_string())),
        Node::Int(i) => Ok(Some(i.to_string())),
        Node::Float(f) => Ok(Some(f.to_string())),
        Node::Seq(_) => Err(value_error(
            node,
            key,
            "expected a single value, found a list",
        )),
        Node::Map(_) => Err(value_error(
            node,
            key,
            "expected a single value, found a mapping",
        )),
    }
}

/// One mapping of the tree being decoded. Every `take_*` call consumes one key;
/// [`Section::finish`] reports the keys nobody asked for.
pub(crate) struct Section<'a> {
    path: String,
    entries: Vec<(&'a str, &'a Node, bool)>,
}

impl<'a> Section<'a> {
    /// A section over `node`, which must be a mapping or null (an empty section).
    pub(crate) fn new(node: Option<&'a Node>, path: &str) -> Result<Section<'a>, ConfigError> {
        let entries = match node {
            None | Some(Node::Null) => Vec::new(),
            Some(Node::Map(entries)) => {
                let mut out: Vec<(&'a str, &'a Node, bool)> = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    if out.iter().any(|(seen, _, _)| seen.eq_ignore_ascii_case(k)) {
                        return Err(ConfigError::DuplicateKey { key: join(path, k) });
                    }
                    out.push((k.as_str(), v, false));
                }
                out
            }
            Some(other) => {
                return Err(value_error(
                    other,
                    if path.is_empty() { "<top level>" } else { path },
                    "expected a mapping of keys to values",
                ));
            }
        };
        Ok(Section {
            path: path.to_string(),
            entries,
        })
    }

    /// The full path of `key` inside this section.
    pub(crate) fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Consume `key`; `None` when absent or null.
    pub(crate) fn take(&mut self, key: &str) -> Option<&'a Node> {
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, _, _)| k.eq_ignore_ascii_case(key))?;
        entry.2 = true;
        match entry.1 {
            Node::Null => None,
            node => Some(node),
        }
    }

    /// A number, whole or not; `None` when absent, null or empty.
    pub(crate) fn float(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        let path = self.key_path(key);
        let Some(node) = self.take(key) else {
            return Ok(None);
        };
        let text = scalar_text(node, &path)?.unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let value = match node {
            Node::Int(i) => Some(*i as f64),
            Node::Float(f) => Some(*f),
            _ => text.parse::<f64>().ok(),
        };
        value
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Some)
            .ok_or_else(|| {
                value_error(
                    node,
                    &path,
                    format!("expected a number of at least 0, found {text:?}"),
                )
            })
    }

    /// A nested section (absent or null is an empty one).
    pub(crate) fn section(&mut self, key: &str) -> Result<Section<'a>, ConfigError> {
        let path = self.key_path(key);
        Section::new(self.take(key), &path)
    }

    /// Every key not yet consumed, with its value, marking them all consumed. Used
    /// for opaque sections.
    pub(crate) fn take_rest(&mut self) -> Vec<(&'a str, &'a Node)> {
        self.entries
            .iter_mut()
            .filter(|(_, _, used)| !used)
            .map(|entry| {
                entry.2 = true;
                (entry.0, entry.1)
            })
            .collect()
    }

    /// Fails on the first key that was never consumed.
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        match self.entries.iter().find(|(_, _, used)| !used) {
            Some((k, _, _)) => Err(ConfigError::UnknownKey {
                key: join(&self.path, k),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let path = self.key_path(key);
        match self.take(key) {
            None => Ok(None),
            Some(node) => Ok(scalar_text(node, &path)?.filter(|s| !s.is_empty())),
        }
    }

    pub(crate) fn string_or(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.string(key)?.unwrap_or_else(|| default.to_string()))
    }

    pub(crate) fn path(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.map(PathBuf::from))
    }

    pub(crate) fn bool(&mut self, key: &str) -> Result<bool, ConfigError> {
        let path = self.key_path(key);
        let Some(node) = self.take(key) else {
            return Ok(false);
        };
        match node {
            Node::Bool(b) => Ok(*b),
            _ => {
                let text = scalar_text(node, &path)?.unwrap_or_default();
                match text.trim() {
                    "" => Ok(false),
                    "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
                    "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
                    other => Err(value_error(
                        node,
                        &path,
                        format!("expected true or false, found {other:?}"),
                    )),
                }
            }
        }
    }

    /// An unsigned integer no larger than `max`; `None` when absent, null or empty.
    pub(crate) fn uint(&mut self, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
        let path = self.key_path(key);
        let Some(node) = self.take(key) else {
            return Ok(None);
        };
        let value = match node {
            Node::Int(i) => u64::try_from(*i)
                .map_err(|_| value_error(node, &path, format!("{i} is negative")))?,
            Node::Float(_) | Node::Bool(_) | Node::Seq(_) | Node::Map(_) => {
                let shown = scalar_text(node, &path)?.unwrap_or_default();
                return Err(value_error(
                    node,
                    &path,
                    format!("expected a whole number, found {shown:?}"),
                ));
            }
            _ => {
                let text = scalar_text(node, &path)?.unwrap_or_default();
                let text = text.trim();
                if text.is_empty() {
                    return Ok(None);
                }
                text.parse::<u64>().map_err(|_| {
                    value_error(
                        node,
                        &path,
                        format!("expected a whole number, found {text:?}"),
                    )
                })?
            }
        };
        if value > max {
            return Err(value_error(
                node,
                &path,
                format!("{value} is larger than the maximum {max}"),
            ));
        }
        Ok(Some(value))
    }

    /// A byte count: a whole number, optionally followed by KB, MB or GB (powers of
    /// 1024, as in Fabric's configtx.yaml sizes).
    pub(crate) fn bytes(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        let path = self.key_path(key);
        let Some(node) = self.take(key) else {
            return Ok(None);
        };
        if let Node::Int(i) = node {
            return u64::try_from(*i)
                .map(Some)
                .map_err(|_| value_error(node, &path, format!("{i} is negative")));
        }
        let text = scalar_text(node, &path)?.unwrap_or_default();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let upper = trimmed.to_ascii_uppercase();
        let (digits, factor) = [("KB", 1u64 << 10), ("MB", 1 << 20), ("GB", 1 << 30)]
            .iter()
            .find_map(|(suffix, factor)| upper.strip_suffix(suffix).map(|d| (d, *factor)))
            .unwrap_or((upper.as_str(), 1));
        digits
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(Some)
            .ok_or_else(|| {
                value_error(
                    node,
                    &path,
                    format!("expected a byte count such as 67108864 or 64MB, found {trimmed:?}"),
                )
            })
    }

    /// A Go-syntax duration; `None` when absent, null or empty.
    pub(crate) fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let path = self.key_path(key);
        let Some(node) = self.take(key) else {
            return Ok(None);
        };
        match node {
            Node::Int(0) => Ok(Some(Duration::ZERO)),
            Node::Int(i) => Err(value_error(
                node,
                &path,
                format!("duration {i} has no unit (write e.g. \"{i}s\")"),
            )),
            _ => {
                let text = scalar_text(node, &path)?.unwrap_or_default();
                if text.trim().is_empty() {
                    return Ok(None);
                }
                parse_duration(&text)
                    .map(Some)
                    .map_err(|reason| value_error(node, &path, reason))
            }
        }
    }

    /// A duration where unset and zero both mean `default`.
    pub(crate) fn duration_or(
        &mut self,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .duration(key)?
            .filter(|d| !d.is_zero())
            .unwrap_or(default))
    }

    /// A list of strings. A YAML list, or text: `a,b`, `a b` or `[a, b]`.
    pub(crate) fn list(&mut self, key: &str) -> Result<Vec<String>, ConfigError> {
        let path = self.key_path(key);
        let Some(node) = self.take(key) else {
            return Ok(Vec::new());
        };
        match node {
            Node::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let Some(s) = scalar_text(item, &item_path)?.filter(|s| !s.is_empty()) {
                        out.push(s);
                    }
                }
                Ok(out)
            }
            _ => {
                let text = scalar_text(node, &path)?.unwrap_or_default();
                Ok(split_list(&text))
            }
        }
    }

    pub(crate) fn paths(&mut self, key: &str) -> Result<Vec<PathBuf>, ConfigError> {
        Ok(self.list(key)?.into_iter().map(PathBuf::from).collect())
    }
}

/// Split list text the way an override is written: brackets optional, items
/// separated by commas and/or white space.
pub(crate) fn split_list(text: &str) -> Vec<String> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.split(|c: char| c == ',' || c.is_whitespace())
        .map(|s| s.trim_matches(|c| c == '"' || c == '\''))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// List text is split on commas and white space, with or without brackets.
    #[test]
    fn list_text_forms() {
        assert_eq!(split_list("a,b"), ["a", "b"]);
        assert_eq!(split_list("a b  c"), ["a", "b", "c"]);
        assert_eq!(split_list("[a, b]"), ["a", "b"]);
        assert_eq!(split_list("[]"), Vec::<String>::new());
        assert_eq!(split_list(""), Vec::<String>::new());
    }

    /// set_path replaces a scalar standing where a mapping is needed and matches keys ignoring case.
    #[test]
    fn set_path_creates_and_replaces() {
        let mut root = Node::Map(vec![(
            "kafka".into(),
            Node::Map(vec![("RootCAs".into(), Node::str("inline"))]),
        )]);
        root.set_path(&["Kafka", "RootCAs", "File"], Node::str("/x"));
        assert_eq!(
            root.at(&["KAFKA", "rootcas", "File"]),
            Some(&Node::str("/x"))
        );
        root.set_path(&["General", "ListenPort"], Node::Int(1));
        assert_eq!(root.at(&["General", "ListenPort"]), Some(&Node::Int(1)));
    }

    /// A key spelled twice with different case in one mapping is refused.
    #[test]
    fn duplicate_keys_ignoring_case() {
        let node = Node::Map(vec![
            ("ListenPort".into(), Node::Int(1)),
            ("listenport".into(), Node::Int(2)),
        ]);
        let err = Section::new(Some(&node), "General").err().unwrap();
        assert_eq!(err.to_string(), "General.listenport: duplicate key");
    }
}

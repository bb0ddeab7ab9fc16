//! A strict reader over a parsed TOML document.
//!
//! serde's derive would accept documents we want to refuse and report errors without the key
//! path, so the manifest, the policy and the trust bundle are read through [`Table`]: every value
//! is taken by name, with its type checked, and [`Table::finish`] refuses any key nobody took.
//! Every error names the dotted key and the line it is on.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// An error in a TOML document, located by dotted key and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TomlError {
    /// Dotted path of the key, e.g. `permissions.network.allowed_hosts[1]`; empty for the document.
    pub key: String,
    /// 1-based line of the offending key or value (0 when unknown).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (true, 0) => write!(f, "{}", self.message),
            (true, line) => write!(f, "line {line}: {}", self.message),
            (false, 0) => write!(f, "`{}`: {}", self.key, self.message),
            (false, line) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
        }
    }
}

/// Upper bound on a document we are willing to parse; manifests, policies and trust bundles are
/// small, and a cap keeps a hostile file from costing memory or time.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A parsed document: the source (for line numbers) and its root table.
pub struct Document<'s> {
    src: &'s str,
    root: Spanned<DeTable<'s>>,
}

impl<'s> Document<'s> {
    pub fn parse(src: &'s str) -> Result<Self, TomlError> {
        if src.len() > MAX_DOCUMENT_BYTES {
            return Err(TomlError {
                key: String::new(),
                line: 0,
                message: format!("document is larger than {MAX_DOCUMENT_BYTES} bytes"),
            });
        }
        let root = DeTable::parse(src).map_err(|e| TomlError {
            key: String::new(),
            line: e.span().map(|s| line_of(src, s.start)).unwrap_or(0),
            message: e.message().trim().to_string(),
        })?;
        Ok(Self { src, root })
    }

    /// The root table, to be read key by key.
    pub fn root(&self) -> Table<'_, 's> {
        Table {
            src: self.src,
            path: String::new(),
            span_start: self.root.span().start,
            table: self.root.get_ref(),
            taken: RefCell::new(Vec::new()),
        }
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One TOML value with its location, as handed out by [`Table`].
#[derive(Clone, Copy)]
pub struct Value<'d, 's> {
    src: &'s str,
    key: &'d str,
    path: Path<'d>,
    value: &'d Spanned<DeValue<'s>>,
}

/// Dotted key of a value, built lazily: only errors need it as a string.
#[derive(Clone, Copy)]
struct Path<'d> {
    parent: &'d str,
    key: &'d str,
    index: Option<usize>,
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.parent.is_empty() {
            write!(f, "{}.", self.parent)?;
        }
        write!(f, "{}", self.key)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

impl<'d, 's> Value<'d, 's> {
    /// An error located at this value.
    pub fn error(&self, message: impl Into<String>) -> TomlError {
        TomlError {
            key: self.path.to_string(),
            line: line_of(self.src, self.value.span().start),
            message: message.into(),
        }
    }

    /// The key this value was found under (last component of its path).
    pub fn key(&self) -> &'d str {
        self.key
    }

    fn type_error(&self, expected: &str) -> TomlError {
        self.error(format!(
            "expected {expected}, found {}",
            self.value.get_ref().type_str()
        ))
    }

    pub fn as_str(&self) -> Result<&'d str, TomlError> {
        match self.value.get_ref() {
            DeValue::String(s) => Ok(s.as_ref()),
            _ => Err(self.type_error("a string")),
        }
    }

    pub fn as_bool(&self) -> Result<bool, TomlError> {
        match self.value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.type_error("a boolean")),
        }
    }

    /// A non-negative integer that fits in `u64`.
    pub fn as_u64(&self) -> Result<u64, TomlError> {
        match self.value.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| self.error("expected a non-negative integer that fits in 64 bits")),
            _ => Err(self.type_error("an integer")),
        }
    }

    /// A string parsed with `FromStr`; the parse error becomes the message.
    pub fn parse<T>(&self) -> Result<T, TomlError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let s = self.as_str()?;
        s.parse::<T>()
            .map_err(|e| self.error(format!("invalid value {s:?}: {e}")))
    }

    pub fn as_table(&self) -> Result<Table<'d, 's>, TomlError> {
        match self.value.get_ref() {
            DeValue::Table(t) => Ok(Table {
                src: self.src,
                path: self.path.to_string(),
                span_start: self.value.span().start,
                table: t,
                taken: RefCell::new(Vec::new()),
            }),
            _ => Err(self.type_error("a table")),
        }
    }

    /// The elements of an array, each with its own location.
    pub fn as_array(&self) -> Result<Vec<Value<'d, 's>>, TomlError> {
        match self.value.get_ref() {
            DeValue::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Value {
                    src: self.src,
                    key: self.key,
                    path: Path {
                        index: Some(i),
                        ..self.path
                    },
                    value: v,
                })
                .collect()),
            _ => Err(self.type_error("an array")),
        }
    }

    /// An array of strings, each parsed with `FromStr`, refusing duplicates.
    pub fn parse_list<T>(&self) -> Result<Vec<T>, TomlError>
    where
        T: FromStr + PartialEq,
        T::Err: fmt::Display,
    {
        let mut out: Vec<T> = Vec::new();
        for item in self.as_array()? {
            let parsed: T = item.parse()?;
            if out.contains(&parsed) {
                return Err(item.error(format!("duplicate entry {:?}", item.as_str()?)));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    /// An array of tables.
    pub fn as_tables(&self) -> Result<Vec<Table<'d, 's>>, TomlError> {
        self.as_array()?.iter().map(|v| v.as_table()).collect()
    }
}

/// A table being read: values are taken by name and [`Table::finish`] refuses the rest.
pub struct Table<'d, 's> {
    src: &'s str,
    path: String,
    span_start: usize,
    table: &'d DeTable<'s>,
    taken: RefCell<Vec<&'d str>>,
}

impl<'d, 's> Table<'d, 's> {
    /// Dotted path of this table ("" for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// An error about this table as a whole (e.g. a rule that spans several keys).
    pub fn error(&self, message: impl Into<String>) -> TomlError {
        TomlError {
            key: self.path.clone(),
            line: line_of(self.src, self.span_start),
            message: message.into(),
        }
    }

    /// The value under `key`, if present; marks it as read.
    pub fn get(&self, key: &str) -> Option<Value<'_, 's>> {
        let (k, v) = self.table.get_key_value(key)?;
        let k: &'d str = k.get_ref().as_ref();
        let mut taken = self.taken.borrow_mut();
        if !taken.contains(&k) {
            taken.push(k);
        }
        Some(Value {
            src: self.src,
            key: k,
            path: Path {
                parent: &self.path,
                key: k,
                index: None,
            },
            value: v,
        })
    }

    /// The value under `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<Value<'_, 's>, TomlError> {
        let missing = TomlError {
            key: Path {
                parent: &self.path,
                key,
                index: None,
            }
            .to_string(),
            line: line_of(self.src, self.span_start),
            message: "missing required key".to_string(),
        };
        self.get(key).ok_or(missing)
    }

    /// Refuses keys that were never read: a typo must not silently drop a restriction.
    pub fn finish(self) -> Result<(), TomlError> {
        self.finish_ref()
    }

    /// [`Table::finish`] without consuming the table.
    pub fn finish_ref(&self) -> Result<(), TomlError> {
        for (k, v) in self.table.iter() {
            let name: &str = k.get_ref().as_ref();
            if !self.taken.borrow().contains(&name) {
                return Err(TomlError {
                    key: Path {
                        parent: &self.path,
                        key: name,
                        index: None,
                    }
                    .to_string(),
                    line: line_of(self.src, k.span().start.min(v.span().start)),
                    message: "unknown key".to_string(),
                });
            }
        }
        Ok(())
    }
}

//! A walk over a parsed TOML document that keeps byte spans, so every error can name its line,
//! and that keeps going after an error so `dce check-config` lists them all at once.

use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, 0 when the problem is not tied to a line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// Error collector tied to one source text.
pub struct Walk<'a> {
    file: &'a str,
    src: &'a str,
    /// Every problem so far.
    pub errors: Vec<ConfigError>,
}

/// A table with the span of its header (or of the enclosing value).
#[derive(Clone, Copy)]
pub struct Table<'t, 'i> {
    pub(crate) table: &'t DeTable<'i>,
    pub(crate) span: (usize, usize),
    pub(crate) path: &'t str,
}

impl<'a> Walk<'a> {
    /// A walk over `src`, read from `file`.
    pub fn new(file: &'a str, src: &'a str) -> Self {
        Walk {
            file,
            src,
            errors: Vec::new(),
        }
    }

    /// Line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Record an error at a span.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line_of(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// Report keys of `t` not in `allowed`.
    pub fn unknown_keys(&mut self, t: Table<'_, '_>, allowed: &[&str]) {
        for (k, _) in t.table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let msg = if t.path.is_empty() {
                    format!("unknown key `{}`", k.get_ref())
                } else {
                    format!("unknown key `{}` in [{}]", k.get_ref(), t.path)
                };
                self.error(k.span(), msg);
            }
        }
    }

    fn get<'t, 'i>(t: Table<'t, 'i>, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        t.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    fn missing(&mut self, t: Table<'_, '_>, key: &str) {
        let where_ = if t.path.is_empty() {
            String::new()
        } else {
            format!(" in [{}]", t.path)
        };
        self.error(
            t.span.0..t.span.1,
            format!("missing required key `{key}`{where_}"),
        );
    }

    fn wrong_type(&mut self, v: &Spanned<DeValue<'_>>, t: Table<'_, '_>, key: &str, want: &str) {
        self.error(
            v.span(),
            format!("`{}{key}` must be {want}", prefix(t.path)),
        );
    }

    /// A sub-table.
    pub fn table<'t, 'i>(
        &mut self,
        t: Table<'t, 'i>,
        key: &str,
        path: &'t str,
        required: bool,
    ) -> Option<Table<'t, 'i>> {
        match Self::get(t, key) {
            None => {
                if required {
                    self.error(0..0, format!("missing required section [{path}]"));
                }
                None
            }
            Some(v) => match v.get_ref() {
                DeValue::Table(tab) => Some(Table {
                    table: tab,
                    span: (v.span().start, v.span().end),
                    path,
                }),
                _ => {
                    self.error(v.span(), format!("`{key}` must be a table"));
                    None
                }
            },
        }
    }

    /// An array of tables (`[[name]]`), each with its span; absent = empty.
    pub fn tables<'t, 'i>(
        &mut self,
        t: Table<'t, 'i>,
        key: &str,
        path: &'t str,
    ) -> Vec<Table<'t, 'i>> {
        let Some(v) = Self::get(t, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                v.span(),
                format!("`{key}` must be written as [[{key}]] tables"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(tab) => out.push(Table {
                    table: tab,
                    span: (item.span().start, item.span().end),
                    path,
                }),
                _ => self.error(item.span(), format!("each `{key}` entry must be a table")),
            }
        }
        out
    }

    /// Every key of `t`, in file order (for tables whose keys are the operator's: headers).
    pub fn keys(&self, t: Table<'_, '_>) -> Vec<String> {
        let mut v: Vec<(usize, String)> = t
            .table
            .iter()
            .map(|(k, v)| (v.span().start, k.get_ref().to_string()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// Does `t` have `key`?
    pub fn has(&self, t: Table<'_, '_>, key: &str) -> bool {
        Self::get(t, key).is_some()
    }

    /// A boolean.
    pub fn boolean(&mut self, t: Table<'_, '_>, key: &str) -> Option<bool> {
        let v = Self::get(t, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(v, t, key, "true or false");
                None
            }
        }
    }

    /// The span of a key's value, for errors found after reading it.
    pub fn span_of(&self, t: Table<'_, '_>, key: &str) -> Range<usize> {
        Self::get(t, key)
            .map(|v| v.span())
            .unwrap_or(t.span.0..t.span.1)
    }

    /// A string value with its span.
    pub fn string(
        &mut self,
        t: Table<'_, '_>,
        key: &str,
        required: bool,
    ) -> Option<(String, Range<usize>)> {
        let v = match Self::get(t, key) {
            Some(v) => v,
            None => {
                if required {
                    self.missing(t, key);
                }
                return None;
            }
        };
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span())),
            _ => {
                self.wrong_type(v, t, key, "a string");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int(
        &mut self,
        t: Table<'_, '_>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<(i64, Range<usize>)> {
        let v = Self::get(t, key)?;
        match v.get_ref() {
            DeValue::Integer(i) => {
                let parsed = i64::from_str_radix(i.as_str(), i.radix()).ok();
                match parsed {
                    Some(n) if (min..=max).contains(&n) => Some((n, v.span())),
                    _ => {
                        self.error(
                            v.span(),
                            format!("`{}{key}` must be between {min} and {max}", prefix(t.path)),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(v, t, key, "an integer");
                None
            }
        }
    }

    /// A fraction in `0..1` (`0.2` = 20 %), written as a float or as the integer 0.
    pub fn fraction(&mut self, t: Table<'_, '_>, key: &str) -> Option<(f64, Range<usize>)> {
        self.number(
            t,
            key,
            "a fraction such as 0.2",
            |f| (0.0..1.0).contains(&f),
            "a fraction from 0 up to (not including) 1, e.g. 0.2 for 20 %",
        )
    }

    /// A multiplier from 0 to 1 inclusive (`0.8`, `1`), with its span.
    pub fn multiplier(&mut self, t: Table<'_, '_>, key: &str) -> Option<(f64, Range<usize>)> {
        self.number(
            t,
            key,
            "a number from 0 to 1, e.g. 0.8",
            |f| (0.0..=1.0).contains(&f),
            "from 0 to 1, e.g. 0.8",
        )
    }

    /// A number (float or integer) that `ok` accepts; else `want` (wrong type) or `range`
    /// (out of range) in the error.
    fn number(
        &mut self,
        t: Table<'_, '_>,
        key: &str,
        want: &str,
        ok: impl Fn(f64) -> bool,
        range: &str,
    ) -> Option<(f64, Range<usize>)> {
        let v = Self::get(t, key)?;
        let n = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            _ => {
                self.wrong_type(v, t, key, want);
                return None;
            }
        };
        match n {
            Some(f) if ok(f) => Some((f, v.span())),
            _ => {
                self.error(
                    v.span(),
                    format!("`{}{key}` must be {range}", prefix(t.path)),
                );
                None
            }
        }
    }

    /// An array of strings, each with its span.
    pub fn strings(
        &mut self,
        t: Table<'_, '_>,
        key: &str,
        required: bool,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let v = match Self::get(t, key) {
            Some(v) => v,
            None => {
                if required {
                    self.missing(t, key);
                }
                return None;
            }
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(v, t, key, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                _ => self.wrong_type(item, t, key, "an array of strings"),
            }
        }
        Some(out)
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    }
}

/// Parse TOML text into a root table, recording syntax errors.
pub fn parse_root<'i>(w: &mut Walk<'_>, src: &'i str) -> Spanned<DeTable<'i>> {
    let (root, errors) = DeTable::parse_recoverable(src);
    for e in errors {
        let span = e.span().unwrap_or(0..0);
        w.error(span, format!("TOML syntax: {}", e.message()));
    }
    root
}

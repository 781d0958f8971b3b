//! Do-Not-Call sets: what both lists share (number parsing, errors) and the internal list.
//!
//! The national registry, its file format and loader are in `national.rs` ([`NationalDnc`],
//! re-exported here). [`InternalDnc`] is the operator's own list: a set editable at run time,
//! persisted to a text file (one number per line).

pub use crate::national::{FileProblem, NationalDnc};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a DNC file or list was not usable.
#[derive(Debug, thiserror::Error)]
pub enum DncError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A national DNC file that is not one `dce dnc build` wrote, or is damaged: what is wrong.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: FileProblem,
    },
    /// A line that is not a NANP number.
    #[error("{path}:{line}: `{text}` is not a 10-digit NANP number")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The text.
        text: String,
    },
}

/// A 10-digit NANP number from `+1NXXNXXXXXX`, `1NXXNXXXXXX` or `NXXNXXXXXX` (separators
/// allowed); `None` otherwise.
pub fn nanp10(s: &str) -> Option<u64> {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    if s.chars()
        .any(|c| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '(' | ')' | ' ')))
    {
        return None;
    }
    let d = match digits.len() {
        10 => digits.as_str(),
        11 if digits.starts_with('1') => &digits[1..],
        _ => return None,
    };
    d.parse().ok()
}

/// The operator's own list: editable at run time, persisted to a text file.
#[derive(Debug, Default)]
pub struct InternalDnc {
    numbers: BTreeSet<u64>,
    path: Option<PathBuf>,
}

impl InternalDnc {
    /// Load from `path` (created on the first add when missing).
    pub fn load(path: &Path) -> Result<InternalDnc, DncError> {
        let mut set = InternalDnc {
            numbers: BTreeSet::new(),
            path: Some(path.to_path_buf()),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let t = line.trim();
                    if t.is_empty() || t.starts_with('#') {
                        continue;
                    }
                    let n = nanp10(t).ok_or_else(|| DncError::BadLine {
                        path: path.into(),
                        line: i + 1,
                        text: t.into(),
                    })?;
                    set.numbers.insert(n);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DncError::Io {
                    path: path.into(),
                    source,
                })
            }
        }
        Ok(set)
    }

    /// Listed?
    pub fn contains_str(&self, number: &str) -> bool {
        nanp10(number).is_some_and(|n| self.numbers.contains(&n))
    }

    /// Add a number (effective on the next call) and persist. Returns false for a non-number.
    pub fn add(&mut self, number: &str) -> Result<bool, DncError> {
        let Some(n) = nanp10(number) else {
            return Ok(false);
        };
        self.numbers.insert(n);
        self.persist()?;
        Ok(true)
    }

    /// Remove a number and persist. Returns whether it was listed.
    pub fn remove(&mut self, number: &str) -> Result<bool, DncError> {
        let Some(n) = nanp10(number) else {
            return Ok(false);
        };
        let was = self.numbers.remove(&n);
        self.persist()?;
        Ok(was)
    }

    /// Numbers listed.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    /// Are changes written to a file?
    pub fn is_persistent(&self) -> bool {
        self.path.is_some()
    }

    /// Add (`add`) or remove a number in memory only; whether the list changed (`None` for a
    /// non-number). Pair with [`InternalDnc::pending_save`] to write the file outside the lock
    /// the call path reads through.
    pub fn edit(&mut self, number: &str, add: bool) -> Option<bool> {
        let n = nanp10(number)?;
        Some(if add {
            self.numbers.insert(n)
        } else {
            self.numbers.remove(&n)
        })
    }

    /// What [`save`] needs to write the list as it is now (nothing without a file).
    pub fn pending_save(&self) -> Option<(PathBuf, Vec<u64>)> {
        self.path
            .clone()
            .map(|p| (p, self.numbers.iter().copied().collect()))
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    fn persist(&self) -> Result<(), DncError> {
        match &self.path {
            Some(path) => save(path, self.numbers.iter().copied()),
            None => Ok(()),
        }
    }
}

/// Write an internal list to `path` atomically (temporary file, fsync, rename).
pub fn save(path: &Path, numbers: impl IntoIterator<Item = u64>) -> Result<(), DncError> {
    let tmp = path.with_extension("tmp");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DncError::Io { path: p, source }
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
    for n in numbers {
        writeln!(f, "{n:010}").map_err(io(&tmp))?;
    }
    let f = f.into_inner().map_err(|e| DncError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_files() {
        assert_eq!(nanp10("+1 (310) 555-1234"), Some(3_105_551_234));
        assert_eq!(nanp10("13105551234"), Some(3_105_551_234));
        assert_eq!(nanp10("3105551234"), Some(3_105_551_234));
        assert_eq!(nanp10("+443105551234"), None);
        assert_eq!(nanp10("310555123x"), None);
        let dir = std::env::temp_dir().join(format!("dnc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.txt");
        std::fs::write(
            &input,
            "# registry\n3105551234\n+12125550000\n\n3105551234\n",
        )
        .unwrap();
        let out = dir.join("national.dnc");
        assert_eq!(NationalDnc::build_file(&input, &out).unwrap(), 2);
        let set = NationalDnc::load(&out).unwrap();
        assert!(set.contains_str("+13105551234") && set.contains_str("2125550000"));
        assert!(!set.contains_str("+13105551235"));
        std::fs::write(&input, "3105551234\nnot-a-number\n").unwrap();
        let err = NationalDnc::build_file(&input, &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("in.txt:2: `not-a-number` is not a 10-digit NANP number"),
            "{err}"
        );
        std::fs::write(dir.join("junk.dnc"), b"nope").unwrap();
        assert!(matches!(
            NationalDnc::load(&dir.join("junk.dnc")),
            Err(DncError::Invalid {
                problem: FileProblem::NotDnc,
                ..
            })
        ));

        let path = dir.join("internal.txt");
        let mut internal = InternalDnc::load(&path).unwrap();
        assert!(internal.add("+1 310 555 0000").unwrap());
        assert!(internal.contains_str("13105550000"));
        let reloaded = InternalDnc::load(&path).unwrap();
        assert!(reloaded.contains_str("3105550000"), "persisted");
        assert!(internal.remove("3105550000").unwrap());
        assert_eq!(internal.edit("3105550001", true), Some(true));
        assert_eq!(internal.edit("3105550001", true), Some(false));
        assert_eq!(internal.edit("nope", true), None);
        let (p, numbers) = internal.pending_save().expect("a file");
        save(&p, numbers).unwrap();
        assert!(InternalDnc::load(&p).unwrap().contains_str("3105550001"));
        assert!(!InternalDnc::load(&path).unwrap().contains_str("3105550000"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Do-Not-Call sets.
//!
//! [`NationalDnc`] holds the national registry exactly (no false positives: this is a legal list,
//! not a Bloom filter) in under 2 bytes per number. Numbers are 10-digit NANP numbers, grouped
//! by their 6-digit prefix (area code + exchange); each prefix stores its 4-digit line numbers in
//! the smallest of three forms:
//!
//! - up to 80 numbers: a sorted `u16` array (2 bytes each);
//! - up to 1,168: 40 buckets of 250 line numbers — 41 cumulative `u16` counts (82 bytes), then
//!   each number's offset in its bucket as one `u8`, sorted (1 byte each plus the 82);
//! - more: a 10,000-bit bitmap (1,250 bytes, under 1.07 bytes each).
//!
//! An index of one million prefixes (6 MB) finds a prefix's block; a lookup is one index read
//! and a binary search over a handful of bytes.
//!
//! File layout (little endian): `DCEDNC01`, number count (u64), 1,000,001 block offsets (u32,
//! bytes into the data), 1,000,000 per-prefix counts (u16), then the data.
//!
//! [`InternalDnc`] is the operator's own list: a set editable at run time, persisted to a text
//! file (one number per line).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DCEDNC01";
const PREFIXES: usize = 1_000_000;
const ARRAY_MAX: usize = 80;
const BITMAP_THRESHOLD: usize = 1168;
const BITMAP_BYTES: usize = 1250;
const BUCKET: usize = 250;
const BUCKETS: usize = 40;
const HEADER: usize = 8 + 8 + (PREFIXES + 1) * 4 + PREFIXES * 2;

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
    /// Not a DNC file built by `dce dnc build`, or truncated.
    #[error("{0}: not a DCE DNC file (or truncated)")]
    Format(PathBuf),
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

/// The national registry, in memory.
pub struct NationalDnc {
    bytes: Vec<u8>,
    count: u64,
}

impl std::fmt::Debug for NationalDnc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NationalDnc({} numbers, {} bytes)",
            self.count,
            self.bytes.len()
        )
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

impl NationalDnc {
    /// Build the file image from numbers (10-digit, any order, duplicates allowed).
    pub fn build(mut numbers: Vec<u64>) -> Vec<u8> {
        numbers.retain(|n| *n < 10_000_000_000);
        numbers.sort_unstable();
        numbers.dedup();
        let mut offsets = vec![0u32; PREFIXES + 1];
        let mut counts = vec![0u16; PREFIXES];
        let mut data = Vec::with_capacity(numbers.len() * 2);
        let mut i = 0;
        for p in 0..PREFIXES {
            offsets[p] = data.len() as u32;
            let start = i;
            while i < numbers.len() && (numbers[i] / 10_000) as usize == p {
                i += 1;
            }
            let block = &numbers[start..i];
            counts[p] = block.len() as u16;
            if block.len() > BITMAP_THRESHOLD {
                let mut bits = [0u8; BITMAP_BYTES];
                for n in block {
                    let s = (n % 10_000) as usize;
                    bits[s / 8] |= 1 << (s % 8);
                }
                data.extend_from_slice(&bits);
            } else if block.len() > ARRAY_MAX {
                let mut cum = [0u16; BUCKETS + 1];
                for n in block {
                    cum[(n % 10_000) as usize / BUCKET + 1] += 1;
                }
                for b in 1..=BUCKETS {
                    cum[b] += cum[b - 1];
                }
                for c in cum {
                    data.extend_from_slice(&c.to_le_bytes());
                }
                // sorted numbers give offsets sorted within each bucket
                data.extend(block.iter().map(|n| ((n % 10_000) as usize % BUCKET) as u8));
            } else {
                for n in block {
                    data.extend_from_slice(&((n % 10_000) as u16).to_le_bytes());
                }
            }
        }
        offsets[PREFIXES] = data.len() as u32;
        let mut out = Vec::with_capacity(HEADER + data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(numbers.len() as u64).to_le_bytes());
        for o in &offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for c in &counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&data);
        out
    }

    /// Take a file image, checking its structure.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<NationalDnc, DncError> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(DncError::Format(path.into()));
        }
        let count = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
        let data_len = bytes.len() - HEADER;
        let last = u32_at(&bytes, 16 + PREFIXES * 4) as usize;
        if last != data_len {
            return Err(DncError::Format(path.into()));
        }
        Ok(NationalDnc { bytes, count })
    }

    /// Read a file built by `dce dnc build`.
    pub fn load(path: &Path) -> Result<NationalDnc, DncError> {
        let bytes = std::fs::read(path).map_err(|source| DncError::Io {
            path: path.into(),
            source,
        })?;
        NationalDnc::from_bytes(bytes, path)
    }

    /// `dce dnc build IN OUT`: numbers one per line (10-digit or E.164); blank lines and `#`
    /// comments skipped; a bad line is an error naming it. Returns how many numbers were kept.
    pub fn build_file(input: &Path, output: &Path) -> Result<u64, DncError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DncError::Io { path, source }
        };
        let f = std::fs::File::open(input).map_err(io(input))?;
        let mut numbers = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(io(input))?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match nanp10(t) {
                Some(n) => numbers.push(n),
                None => {
                    return Err(DncError::BadLine {
                        path: input.into(),
                        line: i + 1,
                        text: t.into(),
                    })
                }
            }
        }
        let image = NationalDnc::build(numbers);
        let tmp = output.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&image)
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, output).map_err(io(output))?;
        Ok(u64::from_le_bytes(
            image[8..16].try_into().unwrap_or([0; 8]),
        ))
    }

    /// Numbers in the set.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Is this 10-digit number listed?
    #[inline]
    pub fn contains(&self, number: u64) -> bool {
        if number >= 10_000_000_000 {
            return false;
        }
        let p = (number / 10_000) as usize;
        let s = (number % 10_000) as u16;
        let b = &self.bytes;
        let count = u16_at(b, 16 + (PREFIXES + 1) * 4 + p * 2) as usize;
        if count == 0 {
            return false;
        }
        let start = HEADER + u32_at(b, 16 + p * 4) as usize;
        if count > BITMAP_THRESHOLD {
            return b[start + s as usize / 8] & (1 << (s % 8)) != 0;
        }
        if count > ARRAY_MAX {
            let bucket = s as usize / BUCKET;
            let want = (s as usize % BUCKET) as u8;
            let from = u16_at(b, start + bucket * 2) as usize;
            let to = u16_at(b, start + bucket * 2 + 2) as usize;
            let offsets = &b[start + (BUCKETS + 1) * 2 + from..start + (BUCKETS + 1) * 2 + to];
            return offsets.binary_search(&want).is_ok();
        }
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let v = u16_at(b, start + mid * 2);
            if v == s {
                return true;
            }
            if v < s {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        false
    }

    /// Is this number (any accepted format) listed?
    pub fn contains_str(&self, number: &str) -> bool {
        nanp10(number).is_some_and(|n| self.contains(n))
    }
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

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn exact_membership_on_generated_sets() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // sparse prefixes (array blocks), a mid prefix (buckets) and a dense one (bitmap)
        let mut listed: Vec<u64> = (0..200_000)
            .map(|_| 2_000_000_000 + rng.next() % 7_999_999_999)
            .collect();
        listed.extend((0..9_000).map(|i| 3_105_550_000 + i));
        listed.extend((0..700).map(|_| 2_125_550_000 + rng.next() % 10_000));
        let set =
            NationalDnc::from_bytes(NationalDnc::build(listed.clone()), Path::new("t")).unwrap();
        let unique: std::collections::HashSet<u64> = listed.iter().copied().collect();
        assert_eq!(set.len(), unique.len() as u64);
        for n in &listed {
            assert!(set.contains(*n), "false negative {n}");
        }
        let mut fp = 0;
        for _ in 0..500_000 {
            let n = 2_000_000_000 + rng.next() % 7_999_999_999;
            if set.contains(n) != unique.contains(&n) {
                fp += 1;
            }
        }
        assert_eq!(fp, 0, "no false positives");
        // every number of the dense and the bucketed prefix, listed or not
        for n in (3_105_550_000..3_105_560_000u64).chain(2_125_550_000..2_125_560_000) {
            assert_eq!(set.contains(n), unique.contains(&n), "{n}");
        }
        assert!(
            set.memory_bytes() - HEADER <= unique.len() * 2,
            "≤ 2 bytes per number of data"
        );
    }

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
            Err(DncError::Format(_))
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

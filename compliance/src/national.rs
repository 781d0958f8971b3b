//! The national Do-Not-Call registry: its file format, the builder, the loader that validates
//! every byte, and the lookup.
//!
//! [`NationalDnc`] holds the registry exactly (no false positives: this is a legal list, not a
//! Bloom filter) in under 2 bytes per number. Numbers are 10-digit NANP numbers, grouped by
//! their 6-digit prefix (area code + exchange); each prefix stores its 4-digit line numbers in
//! the smallest of three forms, chosen by how many there are:
//!
//! - up to 80 numbers: a sorted `u16` array (2 bytes each);
//! - up to 1,168: 40 buckets of 250 line numbers — 41 cumulative `u16` counts (82 bytes), then
//!   each number's offset in its bucket as one `u8`, sorted within its bucket (1 byte each plus
//!   the 82);
//! - more: a 10,000-bit bitmap (1,250 bytes, under 1.07 bytes each).
//!
//! An index of one million prefixes (6 MB) finds a prefix's block; a lookup is one index read
//! and a binary search over a handful of bytes.
//!
//! ## File format, version 02 (little endian)
//!
//! | bytes | what |
//! |---|---|
//! | 0–7 | `DCEDNC02`: the magic `DCEDNC` and the format version as two ASCII digits |
//! | 8–15 | numbers in the set (`u64`) |
//! | 16–23 | length of the whole file in bytes (`u64`) |
//! | 24–27 | CRC-32 (IEEE) of the whole file, these four bytes left out |
//! | 28 … | 1,000,001 block offsets (`u32`, bytes into the data; the last is the data length) |
//! | … | 1,000,000 per-prefix counts (`u16`) |
//! | … | the data: every prefix's block, in prefix order, back to back |
//!
//! [`NationalDnc::from_bytes`] refuses a file unless all of it is as [`NationalDnc::build`]
//! writes it: magic and version, the length, the checksum, offsets starting at 0, never going
//! backwards and ending at the data length, each block exactly the size its count calls for,
//! line numbers in range, sorted and distinct, bucket counts adding up, bitmaps holding as many
//! bits as their count, and the counts summing to the header's. A file that passes cannot make
//! a lookup read outside it; the lookup still reads through checked accessors.

use crate::dnc::{nanp10, DncError};
use std::io::{BufRead, Write};
use std::path::Path;

/// The magic, without the version.
const MAGIC: &[u8; 6] = b"DCEDNC";
/// The format version this code writes and reads.
const VERSION: &[u8; 2] = b"02";
const PREFIXES: usize = 1_000_000;
const LINES: usize = 10_000;
const ARRAY_MAX: usize = 80;
const BITMAP_THRESHOLD: usize = 1168;
const BITMAP_BYTES: usize = 1250;
const BUCKET: usize = 250;
const BUCKETS: usize = 40;
const BUCKET_HEAD: usize = (BUCKETS + 1) * 2;
/// Where the header fields are.
const COUNT_AT: usize = 8;
const LENGTH_AT: usize = 16;
const CRC_AT: usize = 24;
/// Where the index starts.
const OFFSETS: usize = 28;
const COUNTS: usize = OFFSETS + (PREFIXES + 1) * 4;
/// Where the data starts.
pub(crate) const HEADER: usize = COUNTS + PREFIXES * 2;
/// The largest valid file: every prefix a bitmap.
const MAX_FILE: usize = HEADER + PREFIXES * BITMAP_BYTES;

/// What is wrong with a national DNC file (shown after the file's path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// It does not start with `DCEDNC`.
    #[error("not a DCE national DNC file (it does not start with `DCEDNC`)")]
    NotDnc,
    /// An older format version that this DCE no longer reads.
    #[error("DNC file format version {found} is not read by this DCE (it reads version 02): rebuild the file with `dce dnc build IN OUT`")]
    OldVersion {
        /// The version in the file.
        found: String,
    },
    /// A version this DCE does not know (a newer DCE wrote it, or it is damaged).
    #[error("unknown DNC file format version {found:?} (this DCE reads version 02)")]
    UnknownVersion {
        /// The two version bytes, as text.
        found: String,
    },
    /// Shorter than the header and index.
    #[error("truncated: {len} bytes, shorter than the {need}-byte header and index", need = HEADER)]
    Truncated {
        /// The file's length.
        len: usize,
    },
    /// Larger than any file the builder can write.
    #[error("{len} bytes: larger than any national DNC file ({max} bytes at most)", max = MAX_FILE)]
    TooLarge {
        /// The file's length.
        len: u64,
    },
    /// The length is not the one in the header.
    #[error("{len} bytes, but its header says {header} (truncated, or something appended)")]
    Length {
        /// The file's length.
        len: usize,
        /// The length the header gives.
        header: u64,
    },
    /// The checksum does not match the contents.
    #[error(
        "checksum mismatch (header {stored:08x}, contents {computed:08x}): the file is damaged"
    )]
    Checksum {
        /// The CRC-32 in the header.
        stored: u32,
        /// The CRC-32 of the contents.
        computed: u32,
    },
    /// The first block offset is not 0.
    #[error("the first block offset is {0}, not 0")]
    FirstOffset(u32),
    /// A block offset smaller than the one before.
    #[error("prefix {prefix:06}: its block ends before it starts (offsets go backwards)")]
    OffsetBackwards {
        /// The prefix (area code + exchange).
        prefix: usize,
    },
    /// The last block offset is not the data length.
    #[error("the blocks end at byte {end} of the data, but the data is {data} bytes")]
    DataEnd {
        /// The last block offset.
        end: u64,
        /// The data section's length.
        data: u64,
    },
    /// More line numbers than a prefix has.
    #[error("prefix {prefix:06}: {count} numbers, more than the 10000 a prefix has")]
    TooMany {
        /// The prefix.
        prefix: usize,
        /// Its count.
        count: usize,
    },
    /// A block that is not the size its count calls for.
    #[error("prefix {prefix:06}: {count} numbers need a {expected}-byte block, found {len} bytes")]
    BlockSize {
        /// The prefix.
        prefix: usize,
        /// Its count.
        count: usize,
        /// The size the count calls for.
        expected: usize,
        /// The size between its offsets.
        len: usize,
    },
    /// A line number above 9999 (or a bucket offset above 249).
    #[error("prefix {prefix:06}: a line number out of range")]
    OutOfRange {
        /// The prefix.
        prefix: usize,
    },
    /// Line numbers not in increasing order, or repeated.
    #[error("prefix {prefix:06}: line numbers out of order or repeated")]
    Unsorted {
        /// The prefix.
        prefix: usize,
    },
    /// Bucket counts that do not start at 0, go backwards or do not end at the count.
    #[error("prefix {prefix:06}: bucket counts do not add up to its {count} numbers")]
    Buckets {
        /// The prefix.
        prefix: usize,
        /// Its count.
        count: usize,
    },
    /// A bitmap with a different number of bits set than its count.
    #[error("prefix {prefix:06}: bitmap holds {bits} numbers, its count says {count}")]
    BitmapCount {
        /// The prefix.
        prefix: usize,
        /// Its count.
        count: usize,
        /// Bits set.
        bits: usize,
    },
    /// The counts do not sum to the header's number count.
    #[error("header says {header} numbers, the blocks hold {sum}")]
    NumberCount {
        /// The header's count.
        header: u64,
        /// The sum of the per-prefix counts.
        sum: u64,
    },
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

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// CRC-32 of a file image, its checksum field left out.
fn crc_of(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(b.get(..CRC_AT).unwrap_or(b));
    h.update(b.get(CRC_AT + 4..).unwrap_or(&[]));
    h.finalize()
}

/// Write the checksum of `image` into it (the builder; tests that craft files).
pub(crate) fn seal(image: &mut [u8]) {
    let crc = crc_of(image).to_le_bytes();
    if let Some(field) = image.get_mut(CRC_AT..CRC_AT + 4) {
        field.copy_from_slice(&crc);
    }
}

/// How many bytes a block of `count` numbers takes.
fn block_size(count: usize) -> usize {
    match count {
        0 => 0,
        c if c <= ARRAY_MAX => c * 2,
        c if c <= BITMAP_THRESHOLD => BUCKET_HEAD + c,
        _ => BITMAP_BYTES,
    }
}

/// Check one prefix's block (its size already checked against its count).
fn check_block(prefix: usize, count: usize, block: &[u8]) -> Result<(), FileProblem> {
    if count > BITMAP_THRESHOLD {
        let bits: usize = block.iter().map(|b| b.count_ones() as usize).sum();
        if bits != count {
            return Err(FileProblem::BitmapCount {
                prefix,
                count,
                bits,
            });
        }
    } else if count > ARRAY_MAX {
        let (head, offsets) = block.split_at(BUCKET_HEAD.min(block.len()));
        let cum: Vec<usize> = head
            .chunks_exact(2)
            .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let adds_up = cum.first() == Some(&0)
            && cum.last() == Some(&count)
            && cum.windows(2).all(|w| w[0] <= w[1]);
        if !adds_up {
            return Err(FileProblem::Buckets { prefix, count });
        }
        for w in cum.windows(2) {
            let bucket = offsets
                .get(w[0]..w[1])
                .ok_or(FileProblem::Buckets { prefix, count })?;
            if bucket.iter().any(|&o| usize::from(o) >= BUCKET) {
                return Err(FileProblem::OutOfRange { prefix });
            }
            if bucket.windows(2).any(|p| p[0] >= p[1]) {
                return Err(FileProblem::Unsorted { prefix });
            }
        }
    } else {
        let mut last = None;
        for c in block.chunks_exact(2) {
            let v = u16::from_le_bytes([c[0], c[1]]);
            if usize::from(v) >= LINES {
                return Err(FileProblem::OutOfRange { prefix });
            }
            if last.is_some_and(|l| l >= v) {
                return Err(FileProblem::Unsorted { prefix });
            }
            last = Some(v);
        }
    }
    Ok(())
}

/// Check a whole file image; its number count when it is valid.
fn check(b: &[u8]) -> Result<u64, FileProblem> {
    let len = b.len();
    if !MAGIC.starts_with(b.get(..MAGIC.len()).unwrap_or(b)) {
        return Err(FileProblem::NotDnc);
    }
    if let Some(v) = b.get(MAGIC.len()..MAGIC.len() + 2) {
        if v != VERSION {
            let found = String::from_utf8_lossy(v).into_owned();
            return Err(if v == b"01" {
                FileProblem::OldVersion { found }
            } else {
                FileProblem::UnknownVersion { found }
            });
        }
    }
    if len < HEADER {
        return Err(FileProblem::Truncated { len });
    }
    let truncated = FileProblem::Truncated { len };
    let header = u64_at(b, LENGTH_AT).ok_or(truncated.clone())?;
    if header != len as u64 {
        return Err(FileProblem::Length { len, header });
    }
    let stored = u32_at(b, CRC_AT).ok_or(truncated.clone())?;
    let computed = crc_of(b);
    if stored != computed {
        return Err(FileProblem::Checksum { stored, computed });
    }
    let data = b.get(HEADER..).ok_or(truncated.clone())?;
    let offsets = b.get(OFFSETS..COUNTS).ok_or(truncated.clone())?;
    let counts = b.get(COUNTS..HEADER).ok_or(truncated.clone())?;
    let mut offsets = offsets
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let mut start = offsets.next().ok_or(truncated)?;
    if start != 0 {
        return Err(FileProblem::FirstOffset(start));
    }
    let mut sum = 0u64;
    for (prefix, (end, c)) in offsets.zip(counts.chunks_exact(2)).enumerate() {
        let count = usize::from(u16::from_le_bytes([c[0], c[1]]));
        if end < start {
            return Err(FileProblem::OffsetBackwards { prefix });
        }
        if count > LINES {
            return Err(FileProblem::TooMany { prefix, count });
        }
        let (from, to) = (start as usize, end as usize);
        let expected = block_size(count);
        if to - from != expected {
            return Err(FileProblem::BlockSize {
                prefix,
                count,
                expected,
                len: to - from,
            });
        }
        let Some(block) = data.get(from..to) else {
            return Err(FileProblem::DataEnd {
                end: u64::from(end),
                data: data.len() as u64,
            });
        };
        check_block(prefix, count, block)?;
        sum += count as u64;
        start = end;
    }
    if start as usize != data.len() {
        return Err(FileProblem::DataEnd {
            end: u64::from(start),
            data: data.len() as u64,
        });
    }
    let header = u64_at(b, COUNT_AT).unwrap_or(0);
    if header != sum {
        return Err(FileProblem::NumberCount { header, sum });
    }
    Ok(sum)
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
        let mut rest = numbers.as_slice();
        // at most PREFIXES × BITMAP_BYTES (1.25 GB) of data: offsets fit a u32, counts a u16
        for (p, (offset, count)) in offsets.iter_mut().zip(counts.iter_mut()).enumerate() {
            *offset = data.len() as u32;
            let n = rest
                .iter()
                .take_while(|&&x| (x / 10_000) as usize == p)
                .count();
            let (block, tail) = rest.split_at(n);
            rest = tail;
            *count = block.len() as u16;
            let lines = block.iter().map(|n| (n % 10_000) as usize);
            if block.len() > BITMAP_THRESHOLD {
                let mut bits = [0u8; BITMAP_BYTES];
                for s in lines {
                    bits[s / 8] |= 1 << (s % 8);
                }
                data.extend_from_slice(&bits);
            } else if block.len() > ARRAY_MAX {
                let mut cum = [0u16; BUCKETS + 1];
                for s in lines.clone() {
                    cum[s / BUCKET + 1] += 1;
                }
                for b in 1..=BUCKETS {
                    cum[b] += cum[b - 1];
                }
                for c in cum {
                    data.extend_from_slice(&c.to_le_bytes());
                }
                // sorted numbers give offsets sorted within each bucket
                data.extend(lines.map(|s| (s % BUCKET) as u8));
            } else {
                for s in lines {
                    data.extend_from_slice(&(s as u16).to_le_bytes());
                }
            }
        }
        offsets[PREFIXES] = data.len() as u32;
        let mut out = Vec::with_capacity(HEADER + data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&(numbers.len() as u64).to_le_bytes());
        out.extend_from_slice(&((HEADER + data.len()) as u64).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // the checksum, below
        for o in &offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for c in &counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&data);
        seal(&mut out);
        out
    }

    /// Take a file image, checking all of it (see the module doc); `path` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<NationalDnc, DncError> {
        match check(&bytes) {
            Ok(count) => Ok(NationalDnc { bytes, count }),
            Err(problem) => Err(DncError::Invalid {
                path: path.into(),
                problem,
            }),
        }
    }

    /// Read and check a file built by `dce dnc build`.
    pub fn load(path: &Path) -> Result<NationalDnc, DncError> {
        let io = |source| DncError::Io {
            path: path.into(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE as u64 {
            return Err(DncError::Invalid {
                path: path.into(),
                problem: FileProblem::TooLarge { len },
            });
        }
        NationalDnc::from_bytes(std::fs::read(path).map_err(io)?, path)
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
        Ok(u64_at(&image, COUNT_AT).unwrap_or(0))
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

    /// Is this 10-digit number listed? A block that cannot be read — impossible in a file
    /// [`NationalDnc::from_bytes`] accepted — answers listed: refusing is the safe side.
    #[inline]
    pub fn contains(&self, number: u64) -> bool {
        if number >= 10_000_000_000 {
            return false;
        }
        let prefix = (number / 10_000) as usize;
        let line = (number % 10_000) as usize;
        self.lookup(prefix, line).unwrap_or(true)
    }

    #[inline]
    fn lookup(&self, prefix: usize, line: usize) -> Option<bool> {
        let b = self.bytes.as_slice();
        let count = usize::from(u16_at(b, COUNTS + prefix * 2)?);
        if count == 0 {
            return Some(false);
        }
        let start = HEADER + u32_at(b, OFFSETS + prefix * 4)? as usize;
        if count > BITMAP_THRESHOLD {
            return Some(b.get(start + line / 8)? & (1 << (line % 8)) != 0);
        }
        if count > ARRAY_MAX {
            let bucket = line / BUCKET;
            let from = usize::from(u16_at(b, start + bucket * 2)?);
            let to = usize::from(u16_at(b, start + bucket * 2 + 2)?);
            let base = start + BUCKET_HEAD;
            let offsets = b.get(base + from..base + to)?;
            return Some(offsets.binary_search(&((line % BUCKET) as u8)).is_ok());
        }
        let array = b.get(start..start + count * 2)?;
        let want = line as u16;
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let v = u16_at(array, mid * 2)?;
            if v == want {
                return Some(true);
            }
            if v < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(false)
    }

    /// Is this number (any accepted format) listed?
    pub fn contains_str(&self, number: &str) -> bool {
        nanp10(number).is_some_and(|n| self.contains(n))
    }
}

#[cfg(test)]
mod tests;

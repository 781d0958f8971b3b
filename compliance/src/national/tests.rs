//! The national registry: exact membership, and every way a file can be wrong refused with
//! what is wrong (never a panic, never an out-of-bounds read).

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const ARRAY_PREFIX: u64 = 212_555;
const BUCKET_PREFIX: u64 = 310_555;
const BITMAP_PREFIX: u64 = 713_555;

/// A small file: one prefix of each form, and a few numbers elsewhere.
fn small() -> (Vec<u8>, HashSet<u64>) {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut listed: Vec<u64> = (0..30)
        .map(|_| ARRAY_PREFIX * 10_000 + rng.next() % 10_000)
        .collect();
    listed.extend((0..300).map(|_| BUCKET_PREFIX * 10_000 + rng.next() % 10_000));
    listed.extend((0..2_000).map(|_| BITMAP_PREFIX * 10_000 + rng.next() % 10_000));
    listed.extend([2_025_550_000, 9_999_999_999, 5]);
    let unique: HashSet<u64> = listed.iter().copied().collect();
    (NationalDnc::build(listed), unique)
}

fn offset_of(image: &[u8], prefix: u64) -> usize {
    u32_at(image, OFFSETS + prefix as usize * 4).unwrap() as usize
}

fn count_of(image: &[u8], prefix: u64) -> usize {
    usize::from(u16_at(image, COUNTS + prefix as usize * 2).unwrap())
}

fn put_u16(image: &mut [u8], at: usize, v: u16) {
    image[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(image: &mut [u8], at: usize, v: u32) {
    image[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where a prefix's block starts in the image.
fn block_at(image: &[u8], prefix: u64) -> usize {
    HEADER + offset_of(image, prefix)
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
    let set = NationalDnc::from_bytes(NationalDnc::build(listed.clone()), Path::new("t")).unwrap();
    let unique: HashSet<u64> = listed.iter().copied().collect();
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
fn the_small_file_is_accepted_and_exact() {
    let (image, unique) = small();
    let set = NationalDnc::from_bytes(image, Path::new("t")).unwrap();
    assert_eq!(set.len(), unique.len() as u64);
    for p in [
        0,
        202_555,
        ARRAY_PREFIX,
        BUCKET_PREFIX,
        BITMAP_PREFIX,
        999_999,
    ] {
        for n in p * 10_000..(p + 1) * 10_000 {
            assert_eq!(set.contains(n), unique.contains(&n), "{n}");
        }
    }
    assert!(!set.contains(10_000_000_000) && !set.contains(u64::MAX));
}

#[test]
fn every_truncation_is_refused() {
    let (image, _) = small();
    assert!(check(&image).is_ok());
    for n in 0..image.len() {
        let got = check(&image[..n]);
        let expected = if n < HEADER {
            FileProblem::Truncated { len: n }
        } else {
            FileProblem::Length {
                len: n,
                header: image.len() as u64,
            }
        };
        assert_eq!(got, Err(expected), "truncated to {n} bytes");
    }
    let mut longer = image.clone();
    longer.push(0);
    assert!(matches!(check(&longer), Err(FileProblem::Length { .. })));
}

#[test]
fn flipped_bytes_are_always_refused() {
    let (mut image, _) = small();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let data = image.len() - HEADER;
    let mut positions: Vec<usize> = (0..HEADER.min(64)).collect();
    positions.extend((0..data).map(|i| HEADER + i));
    positions.extend((0..400).map(|_| rng.next() as usize % image.len()));
    for i in [ARRAY_PREFIX, BUCKET_PREFIX, BITMAP_PREFIX] {
        positions.extend((0..4).map(|k| OFFSETS + i as usize * 4 + k));
        positions.extend((0..2).map(|k| COUNTS + i as usize * 2 + k));
    }
    for at in positions {
        let mask = (rng.next() % 255 + 1) as u8;
        image[at] ^= mask;
        let got = check(&image);
        image[at] ^= mask;
        let problem = got.expect_err(&format!("byte {at} ^ {mask:#04x} accepted"));
        match at {
            0..=5 => assert_eq!(problem, FileProblem::NotDnc, "byte {at}"),
            6 | 7 => assert!(
                matches!(
                    problem,
                    FileProblem::UnknownVersion { .. } | FileProblem::OldVersion { .. }
                ),
                "byte {at}: {problem}"
            ),
            16..=23 => assert!(
                matches!(problem, FileProblem::Length { .. }),
                "byte {at}: {problem}"
            ),
            _ => assert!(
                matches!(problem, FileProblem::Checksum { .. }),
                "byte {at}: {problem}"
            ),
        }
    }
    assert!(check(&image).is_ok(), "every flip was undone");
}

#[test]
fn wrong_magic_and_versions() {
    let (image, _) = small();
    let with = |head: &[u8]| {
        let mut i = image.clone();
        i[..head.len()].copy_from_slice(head);
        check(&i)
    };
    let old = with(b"DCEDNC01").unwrap_err();
    assert_eq!(old, FileProblem::OldVersion { found: "01".into() });
    assert!(old
        .to_string()
        .contains("rebuild the file with `dce dnc build IN OUT`"));
    assert_eq!(
        with(b"DCEDNC99"),
        Err(FileProblem::UnknownVersion { found: "99".into() })
    );
    assert_eq!(with(b"XCEDNC02"), Err(FileProblem::NotDnc));
    assert_eq!(check(b"3105551234\n"), Err(FileProblem::NotDnc));
    assert_eq!(check(b""), Err(FileProblem::Truncated { len: 0 }));
    assert_eq!(
        check(b"DCEDNC01"),
        Err(FileProblem::OldVersion { found: "01".into() })
    );
    // the old format's header (count, then the offsets at byte 16), whatever its length
    let mut v1 = b"DCEDNC01".to_vec();
    v1.extend_from_slice(&3u64.to_le_bytes());
    v1.resize(8 + 8 + (PREFIXES + 1) * 4 + PREFIXES * 2 + 6, 0);
    assert!(matches!(check(&v1), Err(FileProblem::OldVersion { .. })));
}

/// `image` changed by `edit`, its checksum made right again: what the structure check says.
fn resealed(image: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Result<u64, FileProblem> {
    let mut i = image.to_vec();
    edit(&mut i);
    let len = i.len() as u64;
    i[LENGTH_AT..LENGTH_AT + 8].copy_from_slice(&len.to_le_bytes());
    seal(&mut i);
    check(&i)
}

/// A change to a file image.
type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;

#[test]
fn structural_problems_are_refused_even_with_a_good_checksum() {
    let (image, unique) = small();
    let a = block_at(&image, ARRAY_PREFIX);
    let b = block_at(&image, BUCKET_PREFIX);
    let m = block_at(&image, BITMAP_PREFIX);
    assert_eq!(count_of(&image, ARRAY_PREFIX), 30);
    assert_eq!(resealed(&image, |_| {}), Ok(unique.len() as u64));
    let pa = ARRAY_PREFIX as usize;
    let pb = BUCKET_PREFIX as usize;
    let pm = BITMAP_PREFIX as usize;
    let nb = count_of(&image, BUCKET_PREFIX);
    assert!(nb > ARRAY_MAX && nb <= BITMAP_THRESHOLD);
    let cases: Vec<(&str, Edit, FileProblem)> = vec![
        (
            "first offset",
            Box::new(|i| put_u32(i, OFFSETS, 2)),
            FileProblem::FirstOffset(2),
        ),
        (
            "offset backwards",
            Box::new(move |i| {
                let start = offset_of(i, BUCKET_PREFIX) as u32;
                put_u32(i, OFFSETS + (pb + 1) * 4, start - 1)
            }),
            FileProblem::OffsetBackwards { prefix: pb },
        ),
        (
            "count without its block",
            Box::new(|i| put_u16(i, COUNTS + 2, 1)),
            FileProblem::BlockSize {
                prefix: 1,
                count: 1,
                expected: 2,
                len: 0,
            },
        ),
        (
            "count one more than the array holds",
            Box::new(move |i| put_u16(i, COUNTS + pa * 2, 31)),
            FileProblem::BlockSize {
                prefix: pa,
                count: 31,
                expected: 62,
                len: 60,
            },
        ),
        (
            "count above 10000",
            Box::new(move |i| put_u16(i, COUNTS + pm * 2, 10_001)),
            FileProblem::TooMany {
                prefix: pm,
                count: 10_001,
            },
        ),
        (
            "data after the last block",
            Box::new(|i| i.extend_from_slice(&[0, 0])),
            FileProblem::DataEnd {
                end: (image.len() - HEADER) as u64,
                data: (image.len() - HEADER + 2) as u64,
            },
        ),
        (
            "blocks past the end of the data",
            Box::new(|i| {
                i.truncate(i.len() - 2);
                let end = (i.len() - HEADER) as u32;
                put_u32(i, OFFSETS + PREFIXES * 4, end + 2);
            }),
            FileProblem::DataEnd {
                end: (image.len() - HEADER) as u64,
                data: (image.len() - HEADER - 2) as u64,
            },
        ),
        (
            "header count",
            Box::new(|i| i[COUNT_AT] ^= 1),
            FileProblem::NumberCount {
                header: unique.len() as u64 ^ 1,
                sum: unique.len() as u64,
            },
        ),
        (
            "array value above 9999",
            Box::new(move |i| put_u16(i, a + 58, 10_000)),
            FileProblem::OutOfRange { prefix: pa },
        ),
        (
            "array out of order",
            Box::new(move |i| i.swap(a + 1, a + 57)),
            FileProblem::Unsorted { prefix: pa },
        ),
        (
            "array repeated",
            Box::new(move |i| {
                let v = u16_at(i, a).unwrap();
                put_u16(i, a + 2, v)
            }),
            FileProblem::Unsorted { prefix: pa },
        ),
        (
            "bucket counts not from 0",
            Box::new(move |i| put_u16(i, b, 1)),
            FileProblem::Buckets {
                prefix: pb,
                count: nb,
            },
        ),
        (
            "bucket counts not ending at the count",
            Box::new(move |i| put_u16(i, b + BUCKETS * 2, nb as u16 - 1)),
            FileProblem::Buckets {
                prefix: pb,
                count: nb,
            },
        ),
        (
            "bucket counts backwards",
            Box::new(move |i| {
                let c2 = u16_at(i, b + 4).unwrap();
                put_u16(i, b + 2, c2 + 1)
            }),
            FileProblem::Buckets {
                prefix: pb,
                count: nb,
            },
        ),
        (
            "bucket offset above 249",
            Box::new(move |i| i[b + BUCKET_HEAD] = 250),
            FileProblem::OutOfRange { prefix: pb },
        ),
        (
            "bitmap bit",
            Box::new(move |i| i[m + 10] ^= 1),
            FileProblem::BitmapCount {
                prefix: pm,
                count: count_of(&image, BITMAP_PREFIX),
                bits: count_of(&image, BITMAP_PREFIX) + 1 - 2 * usize::from(image[m + 10] & 1),
            },
        ),
    ];
    for (what, edit, want) in cases {
        let got = resealed(&image, edit);
        assert_eq!(got, Err(want), "{what}");
    }
    // a bucket whose offsets are out of order (the first bucket with two or more)
    let cum: Vec<usize> = (0..=BUCKETS)
        .map(|k| usize::from(u16_at(&image, b + k * 2).unwrap()))
        .collect();
    let k = cum.windows(2).position(|w| w[1] - w[0] >= 2).unwrap();
    let first = b + BUCKET_HEAD + cum[k];
    assert_eq!(
        resealed(&image, |i| i.swap(first, first + 1)),
        Err(FileProblem::Unsorted { prefix: pb })
    );
    assert!(FileProblem::Unsorted { prefix: pb }
        .to_string()
        .starts_with("prefix 310555: "));
}

#[test]
fn a_bad_file_is_refused_with_its_path_and_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("dnc-national-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (image, _) = small();
    let p = dir.join("national.dnc");
    for n in [0, 3, 7, 8, 100, HEADER - 1, HEADER, image.len() - 1] {
        std::fs::write(&p, &image[..n]).unwrap();
        let e = NationalDnc::load(&p).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{}: ", p.display())),
            "names the file: {text}"
        );
        let what = if n < HEADER {
            "truncated: "
        } else {
            "but its header says"
        };
        assert!(text.contains(what), "{n}: {text}");
    }
    std::fs::write(&p, &image).unwrap();
    assert!(NationalDnc::load(&p).is_ok());
    // larger than any valid file: refused before it is read
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_FILE as u64 + 1).unwrap();
    drop(f);
    assert!(matches!(
        NationalDnc::load(&p),
        Err(DncError::Invalid {
            problem: FileProblem::TooLarge { .. },
            ..
        })
    ));
    let missing = NationalDnc::load(&dir.join("missing.dnc")).unwrap_err();
    assert!(matches!(missing, DncError::Io { .. }), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prefixes a proptest file uses: numbers in them, and where their index entries are.
const PROP_PREFIXES: [u64; 4] = [200_200, 200_201, 555_123, 999_999];

fn prop_image(sizes: &[usize; 4], seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut numbers = Vec::new();
    for (p, &n) in PROP_PREFIXES.iter().zip(sizes) {
        numbers.extend((0..n).map(|_| p * 10_000 + rng.next() % 10_000));
    }
    NationalDnc::build(numbers)
}

/// Move one bit of prefix 555123's bitmap (when it is one) from `i` to `j`: the count stays
/// right, the contents change; the line numbers now listed and unlisted.
fn move_bit(image: &mut [u8], i: usize, j: usize) -> Option<(usize, usize)> {
    let p = PROP_PREFIXES[2];
    if count_of(image, p) <= BITMAP_THRESHOLD {
        return None;
    }
    let at = block_at(image, p);
    // an earlier edit may have moved the block off the end
    image.get(at..at + BITMAP_BYTES)?;
    let bit = |image: &[u8], k: usize| image[at + k / 8] & (1 << (k % 8)) != 0;
    if i == j || bit(image, i) == bit(image, j) {
        return None;
    }
    image[at + i / 8] ^= 1 << (i % 8);
    image[at + j / 8] ^= 1 << (j % 8);
    Some(if bit(image, i) { (i, j) } else { (j, i) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any file the loader accepts — however its structure was bent, its checksum made right —
    /// answers without panicking, and each prefix holds exactly as many numbers as its count.
    /// Lookups on bytes nobody checked (bent, truncated) do not panic either.
    #[test]
    fn lookups_on_any_accepted_file_never_panic(
        sizes in [0usize..200, 0usize..1_500, 0usize..4_000, 0usize..90],
        seed in any::<u64>(),
        edits in prop::collection::vec((0usize..5, any::<u16>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut image = prop_image(&sizes, seed);
        let data = image.len() - HEADER;
        let mut moved = Vec::new();
        let mut bent = false;
        for (region, at, value) in edits {
            let at = usize::from(at);
            let pos = match region {
                // the data
                0 if data > 0 => HEADER + at % data,
                // an index entry of a prefix in use (or its neighbour)
                1 => {
                    let p = PROP_PREFIXES[at % 4] as usize + (at / 4) % 2;
                    OFFSETS + p * 4 + (at / 8) % 4
                }
                2 => {
                    let p = PROP_PREFIXES[at % 4] as usize + (at / 4) % 2;
                    COUNTS + (p % PREFIXES) * 2 + (at / 8) % 2
                }
                // the header fields
                3 => COUNT_AT + at % 8,
                // an edit that keeps the file valid
                _ => {
                    let (i, j) = (at % LINES, (at + 1 + usize::from(value)) % LINES);
                    moved.extend(move_bit(&mut image, i, j));
                    continue;
                }
            };
            if let Some(b) = image.get_mut(pos) {
                bent |= *b != value;
                *b = value;
            }
        }
        seal(&mut image);
        let counts: Vec<usize> = PROP_PREFIXES.iter().map(|&p| count_of(&image, p)).collect();
        let unchecked = NationalDnc { bytes: image[..cut.index(image.len())].to_vec(), count: 0 };
        for &p in &PROP_PREFIXES {
            for n in p * 10_000..(p + 1) * 10_000 {
                let _ = unchecked.contains(n);
            }
        }
        let accepted = NationalDnc::from_bytes(image, Path::new("p"));
        if !bent {
            // moving bits alone never makes a file refused
            let refused = accepted.as_ref().err().map(ToString::to_string);
            prop_assert!(refused.is_none(), "{:?}", refused);
        }
        if let Ok(set) = accepted {
            for (&p, &count) in PROP_PREFIXES.iter().zip(&counts) {
                let hits = (p * 10_000..(p + 1) * 10_000).filter(|&n| set.contains(n)).count();
                prop_assert_eq!(hits, count, "prefix {}", p);
            }
            let p = PROP_PREFIXES[2] * 10_000;
            if let (false, Some(&(now_set, now_clear))) = (bent, moved.last()) {
                prop_assert!(set.contains(p + now_set as u64));
                prop_assert!(!set.contains(p + now_clear as u64));
            }
            for n in [0, 1, 9_999_999_999, 10_000_000_000, u64::MAX] {
                let _ = set.contains(n);
            }
        }
    }
}

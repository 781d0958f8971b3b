//! The CDR spool: when the database cannot take a CDR, it is appended here, with a checksum per
//! record, and fsync'd before the call is forgotten; a background task replays it.
//!
//! Record: length (u32 LE) · CRC-32 of the payload (u32 LE) · payload (a CDR as JSON). A torn
//! last record (a crash mid-append) fails its length or checksum and is skipped with a log line,
//! never replayed half. Replay renames the active file aside first, so new CDRs spooled during a
//! replay go to a fresh file.

use crate::call::cdr::Cdr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const ACTIVE: &str = "cdr.spool";

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// What was read back from one spool file.
#[derive(Debug)]
pub struct Batch {
    /// The file (delete it once its CDRs are in the database).
    pub path: PathBuf,
    /// The intact records.
    pub cdrs: Vec<Cdr>,
    /// A torn or corrupt tail was skipped.
    pub torn: bool,
}

impl Spool {
    /// A spool in `dir` (created when needed).
    pub fn new(dir: &Path) -> Spool {
        Spool {
            dir: dir.to_path_buf(),
        }
    }

    /// Append CDRs and fsync.
    pub fn append(&self, cdrs: &[Cdr]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(ACTIVE))?;
        f.write_all(&encode(cdrs)?)?;
        f.sync_data()
    }

    /// Records waiting (all files), without taking them.
    pub fn pending(&self) -> usize {
        self.files().iter().map(|p| read_records(p).0.len()).sum()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(ACTIVE))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Move the active file aside and read every spool file. Delete each file with
    /// [`Spool::done`] once its CDRs are stored.
    pub fn take(&self) -> Vec<Batch> {
        let active = self.dir.join(ACTIVE);
        if active.exists() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let _ = std::fs::rename(&active, self.dir.join(format!("{ACTIVE}.{stamp:020}")));
        }
        self.files()
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n != ACTIVE))
            .map(|path| {
                let (cdrs, torn) = read_records(&path);
                if torn {
                    tracing::warn!(file = %path.display(), kept = cdrs.len(), "spool file ends in a torn record; it is skipped");
                }
                Batch { path, cdrs, torn }
            })
            .collect()
    }

    /// Rewrite every spool file in which `change` alters a record (or that ends in a torn
    /// record, which could hold anything): the intact records, changed, go to a temporary
    /// file that is fsync'd and renamed over the old one. The caller holds the lock that
    /// appends take. Returns the records changed.
    pub fn rewrite(&self, mut change: impl FnMut(&mut Cdr) -> bool) -> std::io::Result<u64> {
        let mut total = 0;
        for path in self.files() {
            let (mut cdrs, torn) = read_records(&path);
            let changed = cdrs.iter_mut().map(|c| u64::from(change(c))).sum::<u64>();
            if changed == 0 && !torn {
                continue;
            }
            let bytes = encode(&cdrs)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = super::files::write_temp(&self.dir, &name, &bytes, 0o600)?;
            super::files::commit(&tmp, &path)?;
            if torn {
                tracing::warn!(file = %path.display(), kept = cdrs.len(), "torn spool record dropped while erasing a number");
            }
            total += changed;
        }
        Ok(total)
    }

    /// A batch is in the database: remove its file.
    pub fn done(&self, batch: &Batch) {
        if let Err(e) = std::fs::remove_file(&batch.path) {
            tracing::error!(file = %batch.path.display(), error = %e, "cannot remove replayed spool file");
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }
}

/// Records as the file holds them.
fn encode(cdrs: &[Cdr]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for c in cdrs {
        let payload = serde_json::to_vec(c).map_err(std::io::Error::other)?;
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
    }
    Ok(buf)
}

fn read_records(path: &Path) -> (Vec<Cdr>, bool) {
    let Ok(bytes) = std::fs::read(path) else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        if off + 8 > bytes.len() {
            return (out, true);
        }
        let len = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
            as usize;
        let crc = u32::from_le_bytes([
            bytes[off + 4],
            bytes[off + 5],
            bytes[off + 6],
            bytes[off + 7],
        ]);
        let end = off + 8 + len;
        if end > bytes.len() || crc32fast::hash(&bytes[off + 8..end]) != crc {
            return (out, true);
        }
        match serde_json::from_slice::<Cdr>(&bytes[off + 8..end]) {
            Ok(c) => out.push(c),
            Err(_) => return (out, true),
        }
        off = end;
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(id: &str) -> Cdr {
        Cdr {
            id: id.into(),
            ..Cdr::synthetic(0)
        }
    }

    #[test]
    fn append_take_done_and_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Spool::new(&dir);
        s.append(&[cdr("a"), cdr("b")]).unwrap();
        s.append(&[cdr("c")]).unwrap();
        // a crash mid-append: half a record at the end
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(ACTIVE))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        assert_eq!(s.pending(), 3);
        let batches = s.take();
        assert_eq!(batches.len(), 1);
        let ids: Vec<&str> = batches[0].cdrs.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(batches[0].torn);
        // new CDRs during a replay go to a fresh active file
        s.append(&[cdr("d")]).unwrap();
        s.done(&batches[0]);
        let next = s.take();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].cdrs[0].id, "d");
        assert!(!next[0].torn);
        s.done(&next[0]);
        assert_eq!(s.pending(), 0);
        // a flipped byte is a checksum failure, not a wrong CDR
        s.append(&[cdr("e")]).unwrap();
        let p = dir.join(ACTIVE);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        let b = s.take();
        assert!(b[0].cdrs.is_empty() && b[0].torn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rewrite_changes_records_in_place_and_drops_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("spool-rewrite-{}", crate::ids::uuid()));
        let s = Spool::new(&dir);
        s.append(&[cdr("a"), cdr("b")]).unwrap();
        let aside = s.take(); // one file moved aside (as a replay does), one active
        assert_eq!(aside.len(), 1);
        s.append(&[cdr("c")]).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(ACTIVE))
            .unwrap();
        f.write_all(b"\x40\x00\x00\x00 19995550199 torn").unwrap();
        let n = s
            .rewrite(|c| {
                let hit = c.id != "b";
                if hit {
                    c.caller = "anon:0000000000000000".into();
                }
                hit
            })
            .unwrap();
        assert_eq!(n, 2);
        let mut all = Vec::new();
        for p in s.files() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains("19995550199"));
            let (cdrs, torn) = read_records(&p);
            assert!(!torn, "the torn tail is gone");
            all.extend(cdrs.into_iter().map(|c| (c.id, c.caller)));
        }
        all.sort();
        assert_eq!(
            all,
            [
                ("a".to_string(), "anon:0000000000000000".to_string()),
                ("b".into(), "13105550000".into()),
                ("c".into(), "anon:0000000000000000".into()),
            ]
        );
        s.append(&[cdr("d")]).unwrap();
        assert_eq!(s.pending(), 4, "appends go on after a rewrite");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

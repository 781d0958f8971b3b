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
        let mut buf = Vec::new();
        for c in cdrs {
            let payload = serde_json::to_vec(c).map_err(std::io::Error::other)?;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        f.write_all(&buf)?;
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
}

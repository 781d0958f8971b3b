//! GDPR erasure of one number from every copy DCE keeps: the database, the spool, the
//! JSON-lines file, and the CDRs still queued in a running node, which are anonymised when
//! they are written.
//!
//! The erased numbers are kept only as their pseudonyms (the same keyed hash retention uses,
//! under `spool_dir/anon.key`) in `spool_dir/gdpr.erased`, replaced atomically and fsync'd
//! before an erasure touches anything else. Every write of a CDR (database batch, replay,
//! spool append, JSON line) first hashes its caller and called and replaces any that is on
//! the list, so a CDR that was still in a queue, in flight or in a spool file replayed after
//! a restart lands anonymised.
//!
//! Ordering: an erasure records the number, then takes the database gate exclusively (every
//! database write holds it shared, from the hash check to the commit), so a batch that was
//! checked before the number was recorded has committed before the erasure's `UPDATE` runs;
//! the spool is rewritten under the spool lock that appends and replays take; a JSON-lines
//! file is rewritten by its own writer thread, between two appends.

use super::anonymize::{self, pseudonym, KeyError};
use super::db::Db;
use super::spool::Spool;
use crate::call::cdr::Cdr;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The list of erased numbers' pseudonyms, one a line.
pub const ERASED_FILE: &str = "gdpr.erased";
/// The hash key (shared with retention).
pub const KEY_FILE: &str = "anon.key";
/// Held (an advisory lock) by the running node that owns the spool directory.
pub const LOCK_FILE: &str = "dce.lock";
/// How long an erasure waits for the database (including a write in flight).
const DB_DEADLINE: Duration = Duration::from_secs(15);
/// How long an erasure waits for a JSON-lines writer to rewrite its file.
const JSONL_DEADLINE: Duration = Duration::from_secs(60);

/// Why an erasure could not be done (or not completely).
#[derive(Debug, thiserror::Error)]
pub enum GdprError {
    /// The hash key could not be had.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The list of erased numbers exists but the key it was made with is gone: no CDR can be
    /// matched against it.
    #[error("{list} lists erased numbers but the hash key {key} is missing; restore the key")]
    KeyLost {
        /// The list.
        list: String,
        /// The key file.
        key: String,
    },
    /// The list of erased numbers could not be read or written.
    #[error("the list of erased numbers {file}: {source}")]
    List {
        /// The list.
        file: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The number was recorded (new CDRs are anonymised) but some copies could not be
    /// changed; running the erasure again finishes it.
    #[error("erasure recorded as {pseudonym}, but not finished: {}", failed.join("; "))]
    Incomplete {
        /// The number's pseudonym.
        pseudonym: String,
        /// The copies that failed, and why.
        failed: Vec<String>,
    },
}

/// What one erasure changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// The number's pseudonym (`anon:` + 16 hex digits), which now stands in its place.
    pub pseudonym: String,
    /// Call records changed in the database.
    pub database_calls: u64,
    /// CDRs changed in the spool (waiting for the database).
    pub spool_records: u64,
    /// Lines changed (or torn lines holding the number removed) in the JSON-lines file.
    pub jsonl_records: u64,
}

/// The erasure list and what an erasure coordinates with. One per spool directory and
/// process; the writer, the JSON-lines sink and the API share it.
pub struct Gdpr {
    dir: PathBuf,
    key: RwLock<Option<Arc<Vec<u8>>>>,
    erased: RwLock<HashSet<String>>,
    /// Anything on the list (a CDR write skips the hashing when not).
    any: AtomicBool,
    /// One erasure at a time.
    order: tokio::sync::Mutex<()>,
    /// Shared by every database write of CDRs, from the check against the list to the
    /// commit; an erasure takes it exclusively for its `UPDATE`.
    pub(crate) db_gate: tokio::sync::RwLock<()>,
    /// Held while the spool is appended to, taken for replay, or rewritten.
    pub(crate) spool_lock: Arc<Mutex<()>>,
    /// The JSON-lines writers of this process.
    jsonl: Mutex<Vec<std::sync::mpsc::Sender<super::jsonl::Msg>>>,
    /// The node's hold on `dce.lock`.
    node_lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for Gdpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gdpr")
            .field("dir", &self.dir)
            .field("erased", &self.erased.read().map(|e| e.len()).unwrap_or(0))
            .finish()
    }
}

/// A number as the records hold it: E.164 digits when it is one, else as given.
pub fn normal(number: &str) -> String {
    dce_routing::normalize(number).unwrap_or_else(|| number.to_owned())
}

impl Gdpr {
    /// The erasure state of `spool_dir`: the list is read when it exists (and then the key
    /// must exist too).
    pub fn open(spool_dir: &Path) -> Result<Arc<Gdpr>, GdprError> {
        let list = spool_dir.join(ERASED_FILE);
        let erased: HashSet<String> = match std::fs::read_to_string(&list) {
            Ok(t) => t
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("anon:"))
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(source) => {
                return Err(GdprError::List {
                    file: list.display().to_string(),
                    source,
                })
            }
        };
        let key_file = spool_dir.join(KEY_FILE);
        let key = if erased.is_empty() {
            None
        } else if key_file.exists() {
            Some(Arc::new(anonymize::key(&key_file)?))
        } else {
            return Err(GdprError::KeyLost {
                list: list.display().to_string(),
                key: key_file.display().to_string(),
            });
        };
        Ok(Arc::new(Gdpr {
            dir: spool_dir.to_path_buf(),
            key: RwLock::new(key),
            any: AtomicBool::new(!erased.is_empty()),
            erased: RwLock::new(erased),
            order: tokio::sync::Mutex::new(()),
            db_gate: tokio::sync::RwLock::new(()),
            spool_lock: Arc::new(Mutex::new(())),
            jsonl: Mutex::new(Vec::new()),
            node_lock: Mutex::new(None),
        }))
    }

    /// Numbers on the list.
    pub fn erased_count(&self) -> usize {
        self.erased.read().map(|e| e.len()).unwrap_or(0)
    }

    /// Replace caller and called by their pseudonyms when they are on the list (and drop the
    /// call's DTMF digits); true when something changed.
    pub fn scrub(&self, cdr: &mut Cdr) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let Some(key) = self.key.read().ok().and_then(|k| k.clone()) else {
            return false;
        };
        let erased = self.erased.read().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for n in [&mut cdr.caller, &mut cdr.called] {
            if n.starts_with("anon:") {
                continue;
            }
            let p = pseudonym(&key, &normal(n));
            if erased.contains(&p) {
                *n = p;
                changed = true;
            }
        }
        if changed {
            // what the caller keyed in (an account, a card number) and said go with the number
            cdr.dtmf = None;
            if let Some(r) = cdr.recording.take() {
                super::recordings::remove_files(r.path.as_deref());
            }
        }
        changed
    }

    /// [`Gdpr::scrub`] each; how many changed.
    pub fn scrub_all(&self, cdrs: &mut [Cdr]) -> u64 {
        if !self.any.load(Ordering::Acquire) {
            return 0;
        }
        cdrs.iter_mut().map(|c| u64::from(self.scrub(c))).sum()
    }

    fn key(&self) -> Result<Arc<Vec<u8>>, GdprError> {
        if let Some(k) = self.key.read().ok().and_then(|k| k.clone()) {
            return Ok(k);
        }
        let k = Arc::new(anonymize::key(&self.dir.join(KEY_FILE))?);
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(k.clone());
        Ok(k)
    }

    /// Put `number` on the list (durably: the list file is replaced and fsync'd first), so
    /// every CDR written from now on is anonymised. Returns its pseudonym.
    pub fn record(&self, number: &str) -> Result<String, GdprError> {
        let key = self.key()?;
        let p = pseudonym(&key, &normal(number));
        let mut lines: Vec<String> = {
            let e = self.erased.read().unwrap_or_else(|p| p.into_inner());
            if e.contains(&p) {
                return Ok(p);
            }
            e.iter().cloned().collect()
        };
        lines.push(p.clone());
        lines.sort();
        let mut text = lines.join("\n");
        text.push('\n');
        let list = self.dir.join(ERASED_FILE);
        super::files::replace(&list, text.as_bytes(), 0o600).map_err(|source| GdprError::List {
            file: list.display().to_string(),
            source,
        })?;
        self.erased
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(p.clone());
        self.any.store(true, Ordering::Release);
        Ok(p)
    }

    /// A JSON-lines writer of this process, to be asked to rewrite its file on erasure.
    pub fn register_jsonl(&self, tx: std::sync::mpsc::Sender<super::jsonl::Msg>) {
        self.jsonl
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
    }

    /// Take the node's lock on the spool directory (held until the process ends). False
    /// (after a warning) when another process holds it.
    pub fn claim_node(&self) -> bool {
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::create_dir_all(&self.dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        });
        match file.map(|f| (f.try_lock(), f)) {
            Ok((Ok(()), f)) => {
                *self.node_lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
                true
            }
            Ok((Err(e), _)) => {
                tracing::warn!(file = %path.display(), error = %e, "another DCE uses this spool directory");
                false
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot take the spool directory's lock");
                false
            }
        }
    }

    /// Erase `number` from every copy: record it, then the database (after any write in
    /// flight), the spool, and the JSON-lines file — through this process's JSON-lines writer
    /// when it has one, else `jsonl_path` directly (only when no node is appending to it).
    /// Every copy is tried; [`GdprError::Incomplete`] names those that failed.
    pub async fn erase(
        self: &Arc<Self>,
        number: &str,
        db: &Db,
        spool: &Spool,
        jsonl_path: Option<&Path>,
    ) -> Result<Erased, GdprError> {
        let _one = self.order.lock().await;
        let number = normal(number);
        let p = self.record(&number)?;
        let key = self.key()?;
        let mut failed = Vec::new();
        let mut out = Erased {
            pseudonym: p.clone(),
            database_calls: 0,
            spool_records: 0,
            jsonl_records: 0,
        };
        {
            // every batch checked against the list before `record` has committed once this
            // is ours; later ones are anonymised on write
            let db_part = async {
                let _gate = self.db_gate.write().await;
                db.erase_number(&key, &number).await
            };
            match tokio::time::timeout(DB_DEADLINE, db_part).await {
                Ok(Ok(n)) => out.database_calls = n,
                Ok(Err(e)) => failed.push(format!("database: {e}")),
                Err(_) => failed.push(format!(
                    "database: no answer within {} s",
                    DB_DEADLINE.as_secs()
                )),
            }
        }
        let (me, sp) = (self.clone(), spool.clone());
        match tokio::task::spawn_blocking(move || {
            let _g = me.spool_lock.lock().unwrap_or_else(|p| p.into_inner());
            sp.rewrite(|c| me.scrub(c))
        })
        .await
        {
            Ok(Ok(n)) => out.spool_records = n,
            Ok(Err(e)) => failed.push(format!("spool: {e}")),
            Err(e) => failed.push(format!("spool: {e}")),
        }
        match self.erase_jsonl(&number, jsonl_path).await {
            Ok(n) => out.jsonl_records = n,
            Err(e) => failed.push(format!("JSON-lines file: {e}")),
        }
        if failed.is_empty() {
            tracing::info!(
                pseudonym = %p,
                database_calls = out.database_calls,
                spool_records = out.spool_records,
                jsonl_records = out.jsonl_records,
                "GDPR erasure done"
            );
            Ok(out)
        } else {
            tracing::warn!(pseudonym = %p, failed = %failed.join("; "), "GDPR erasure recorded but not finished");
            Err(GdprError::Incomplete {
                pseudonym: p,
                failed,
            })
        }
    }

    async fn erase_jsonl(
        self: &Arc<Self>,
        number: &str,
        jsonl_path: Option<&Path>,
    ) -> Result<u64, String> {
        let writers: Vec<_> = self.jsonl.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut total = 0;
        let mut asked = 0;
        for tx in writers {
            let (done, answer) = tokio::sync::oneshot::channel();
            let msg = super::jsonl::Msg::Erase {
                number: number.to_owned(),
                done,
            };
            if tx.send(msg).is_err() {
                continue; // that sink has stopped
            }
            asked += 1;
            match tokio::time::timeout(JSONL_DEADLINE, answer).await {
                Ok(Ok(Ok(n))) => total += n,
                Ok(Ok(Err(e))) => return Err(e.to_string()),
                Ok(Err(_)) => return Err("the CDR file writer stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "not rewritten within {} s",
                        JSONL_DEADLINE.as_secs()
                    ))
                }
            }
        }
        if asked == 0 {
            if let Some(path) = jsonl_path {
                let (me, path, number) = (self.clone(), path.to_path_buf(), number.to_owned());
                return tokio::task::spawn_blocking(move || {
                    super::jsonl::rewrite(&path, &me, &number)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string());
            }
        }
        Ok(total)
    }
}

/// Is a DCE node running on `spool_dir` (holding its lock)?
pub fn node_running(spool_dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(spool_dir.join(LOCK_FILE)) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dce-gdpr-{tag}-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_list_holds_pseudonyms_only_survives_a_restart_and_scrubs_later_cdrs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("list");
        let g = Gdpr::open(&dir).unwrap();
        let mut before = Cdr::synthetic(1234);
        assert!(!g.scrub(&mut before), "nothing erased yet");
        let p = g.record("+1 (310) 555-1234").unwrap();
        assert!(p.starts_with("anon:"));
        assert_eq!(g.record("3105551234").unwrap(), p, "one number, any format");
        let list = std::fs::read_to_string(dir.join(ERASED_FILE)).unwrap();
        assert_eq!(list, format!("{p}\n"), "the pseudonym, never the number");
        assert!(!list.contains("5551234"));
        let mode = std::fs::metadata(dir.join(ERASED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(g);
        // a restart reads the list back
        let g = Gdpr::open(&dir).unwrap();
        assert_eq!(g.erased_count(), 1);
        let mut c = Cdr::synthetic(1234);
        assert_eq!(c.caller, "13105551234");
        let called = c.called.clone();
        assert!(g.scrub(&mut c));
        assert_eq!(c.caller, p);
        assert_eq!(c.called, called, "the other number stays");
        let mut other = Cdr::synthetic(1235);
        assert!(!g.scrub(&mut other));
        assert_eq!(other.caller, "13105551235");
        // a list without its key is refused, not silently ignored
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        assert!(matches!(Gdpr::open(&dir), Err(GdprError::KeyLost { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn erase_reaches_database_spool_and_jsonl_file() {
        let dir = tmp("erase");
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display())).unwrap();
        db.migrate().await.unwrap();
        let spool = Spool::new(&dir.join("spool"));
        let target = "13105551234";
        let mine = |i: usize| Cdr {
            caller: target.into(),
            ..Cdr::synthetic(i)
        };
        db.insert(&[mine(1), Cdr::synthetic(2)]).await.unwrap();
        spool.append(&[mine(3), Cdr::synthetic(4)]).unwrap();
        let jsonl = dir.join("cdr.jsonl");
        let lines: Vec<String> = [mine(5), Cdr::synthetic(6)]
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        // and a torn last line (a crash mid-write) holding the number
        let torn = &lines[0][..lines[0].find(target).unwrap() + target.len() + 3];
        std::fs::write(&jsonl, format!("{}\n{}\n{torn}", lines[0], lines[1])).unwrap();

        let g = Gdpr::open(&dir.join("spool")).unwrap();
        let done = g
            .erase("+13105551234", &db, &spool, Some(jsonl.as_path()))
            .await
            .unwrap();
        assert_eq!(
            (done.database_calls, done.spool_records, done.jsonl_records),
            (1, 1, 2),
            "{done:?}"
        );
        let rows = db
            .export("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.caller != target));
        assert!(rows.iter().any(|r| r.caller == done.pseudonym));
        for f in std::fs::read_dir(dir.join("spool")).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(target),
                "{}",
                f.path().display()
            );
        }
        assert_eq!(spool.pending(), 2, "both spooled CDRs are still there");
        let text = std::fs::read_to_string(&jsonl).unwrap();
        assert!(!text.contains(target), "{text}");
        assert_eq!(text.lines().count(), 2, "the torn line is gone: {text}");
        assert!(text.contains(&done.pseudonym));
        assert!(text.contains("13105550006"), "other calls are untouched");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The CDR writer: the call path hands a CDR to a bounded channel and moves on; a task batches
//! them into the database (by count or every 100 ms). When the database errors, is slow or the
//! channel is full, CDRs go to the fsync'd spool; a replay loop (its own task, so a dead
//! database never holds up the batching) puts them in the database once it answers again, and
//! only then removes them from the spool. Inserts are idempotent on the call id, so a replay
//! interrupted between commit and file removal cannot duplicate a call.

use super::db::Db;
use super::gdpr::Gdpr;
use super::spool::Spool;
use crate::call::cdr::{Cdr, CdrSink};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest batch per transaction.
const BATCH: usize = 500;
/// A batch waits at most this long for more CDRs.
const LINGER: Duration = Duration::from_millis(100);
/// A database write slower than this is given up and spooled.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How often the spool is replayed.
const REPLAY_EVERY: Duration = Duration::from_secs(2);

/// Counters of the writer, for health and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// CDRs written to the database (directly or by replay).
    pub written: AtomicU64,
    /// CDRs appended to the spool.
    pub spooled: AtomicU64,
    /// The writer's queue, for its depth.
    queue: std::sync::OnceLock<mpsc::WeakSender<Cdr>>,
}

impl WriterStats {
    /// CDRs handed to the writer and not yet taken from its queue.
    pub fn queue_depth(&self) -> usize {
        self.queue
            .get()
            .and_then(|w| w.upgrade())
            .map(|tx| tx.max_capacity() - tx.capacity())
            .unwrap_or(0)
    }
}

/// The sink the call controller writes to.
pub struct DbSink {
    tx: mpsc::Sender<Cdr>,
    spool: Spool,
    gdpr: Arc<Gdpr>,
    stats: Arc<WriterStats>,
}

impl CdrSink for DbSink {
    fn emit(&mut self, cdr: Cdr) {
        if let Err(e) = self.tx.try_send(cdr) {
            let cdr = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            spool_or_log(&self.spool, &self.gdpr, &self.stats, &mut [cdr]);
        }
    }
}

/// Append to the spool (erased numbers anonymised first, under the lock an erasure rewrites
/// the spool under); when even that fails, log each CDR as its last copy.
fn spool_or_log(spool: &Spool, gdpr: &Gdpr, stats: &WriterStats, cdrs: &mut [Cdr]) {
    let _g = gdpr.spool_lock.lock().unwrap_or_else(|p| p.into_inner());
    gdpr.scrub_all(cdrs);
    match spool.append(cdrs) {
        Ok(()) => {
            stats
                .spooled
                .fetch_add(cdrs.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            for c in cdrs.iter() {
                // The log is this CDR's last copy; numbers stay masked unless masking is off.
                let mut c = c.clone();
                c.caller = crate::logging::num(&c.caller);
                c.called = crate::logging::num(&c.called);
                tracing::error!(call = %c.id, error = %e, "CDR could not be spooled: {}", serde_json::to_string(&c).unwrap_or_default());
            }
        }
    }
}

/// Start the writer. Dropping the returned sink (and every clone of its sender) ends the task
/// after it has written or spooled everything it was given; await the handle for that. The
/// database is not touched before `gate` fires (so start-up work such as loading consent can
/// migrate first); CDRs handed over before then are spooled. Numbers on `gdpr`'s erasure
/// list are anonymised before any CDR is stored or spooled.
#[allow(clippy::too_many_arguments)]
pub fn start(
    db: Db,
    spool: Spool,
    auto_migrate: bool,
    capacity: usize,
    retention: Retention,
    gdpr: Arc<Gdpr>,
    gate: tokio::sync::oneshot::Receiver<()>,
    webhooks: Arc<std::sync::RwLock<crate::webhooks::Webhooks>>,
) -> (DbSink, JoinHandle<()>, Arc<WriterStats>) {
    let (tx, rx) = mpsc::channel(capacity);
    gdpr.claim_node();
    let stats = Arc::new(WriterStats::default());
    let _ = stats.queue.set(tx.downgrade());
    let task = tokio::spawn(run(
        db,
        spool.clone(),
        gdpr.clone(),
        stats.clone(),
        auto_migrate,
        rx,
        retention,
        gate,
        webhooks,
    ));
    (
        DbSink {
            tx,
            spool,
            gdpr,
            stats: stats.clone(),
        },
        task,
        stats,
    )
}

/// What the batching loop and the replay loop share.
struct Shared {
    db: Db,
    spool: Spool,
    /// The erasure list, the database gate and the spool lock.
    gdpr: Arc<Gdpr>,
    stats: Arc<WriterStats>,
    /// The running config's webhooks: each stored call's postbacks are derived from them and
    /// written in its transaction.
    webhooks: Arc<std::sync::RwLock<crate::webhooks::Webhooks>>,
    /// False while the database is known to be away (a write failed, or it has not answered
    /// since start): new batches then go straight to the fsync'd spool, so a crash during an
    /// outage loses at most one linger's worth of CDRs, and the batching loop never waits on a
    /// dead database. The replay loop sets it again once the database takes the spool.
    healthy: AtomicBool,
}

impl Shared {
    /// Store a batch, its erased numbers anonymised first; the database gate is held from
    /// that check to the commit, so an erasure's `UPDATE` runs after it.
    async fn write(&self, batch: &mut [Cdr]) -> bool {
        let _gate = self.gdpr.db_gate.read().await;
        self.gdpr.scrub_all(batch);
        let postbacks: Vec<crate::webhooks::Postback> = {
            let hooks = self.webhooks.read().unwrap_or_else(|e| e.into_inner());
            batch.iter().flat_map(|c| hooks.postbacks(c)).collect()
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let insert = self.db.insert_with(batch, &postbacks, now_ms);
        match tokio::time::timeout(WRITE_DEADLINE, insert).await {
            Ok(Ok(())) => {
                self.stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                true
            }
            Ok(Err(e)) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, cdrs = batch.len(), "database write failed; spooling until it answers");
                }
                false
            }
            Err(_) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        cdrs = batch.len(),
                        "database write too slow; spooling until it answers"
                    );
                }
                false
            }
        }
    }

    /// Put every spool file into the database; true when the spool is empty afterwards.
    async fn replay(&self) -> bool {
        let batches = {
            let _g = self
                .gdpr
                .spool_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.spool.take()
        };
        for mut b in batches {
            // In transactions of BATCH; a crash part-way leaves the file, and the next replay's
            // inserts of the rows already in skip them (idempotent on the call id).
            for chunk in b.cdrs.chunks_mut(BATCH) {
                if !self.write(chunk).await {
                    return false; // still down: the file stays for the next round
                }
            }
            if !b.cdrs.is_empty() {
                tracing::info!(cdrs = b.cdrs.len(), file = %b.path.display(), "spool replayed");
            }
            self.spool.done(&b);
        }
        true
    }
}

async fn migrate(db: &Db) -> bool {
    match tokio::time::timeout(WRITE_DEADLINE, db.migrate()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database migration failed; CDRs are spooled");
            false
        }
        Err(_) => {
            tracing::warn!("database migration too slow; CDRs are spooled");
            false
        }
    }
}

/// The retention job's settings.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Anonymise numbers of calls older than this many days; 0 = never.
    pub days: u32,
    /// The hash key file.
    pub key_file: std::path::PathBuf,
}

/// Why a retention pass changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The hash key could not be read or created.
    #[error(transparent)]
    Key(#[from] super::anonymize::KeyError),
    /// The database failed (retried next hour).
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One retention pass: caller and called of calls older than `r.days` are anonymised (none
/// when `days` is 0). The hash key is created on first use, so a fresh install (no spool
/// directory yet) passes too. Returns the calls changed.
pub async fn retention_step(db: &Db, r: &Retention) -> Result<u64, RetentionError> {
    if r.days == 0 {
        return Ok(0);
    }
    let key = super::anonymize::key(&r.key_file)?;
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64::from(r.days)))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(db.anonymize_before(&key, &cutoff).await?)
}

/// [`retention_step`], with what it did logged.
async fn retention_pass(db: &Db, r: &Retention) {
    match retention_step(db, r).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(calls = n, days = r.days, "retention: numbers anonymised"),
        Err(RetentionError::Key(e)) => tracing::error!(error = %e, "retention: no hash key"),
        Err(e) => tracing::warn!(error = %e, "retention pass failed; retried next hour"),
    }
}

/// Every [`REPLAY_EVERY`]: migrate (once, when asked to), replay the spool and mark the database
/// healthy when it took everything; hourly retention. A last replay when told to stop.
async fn replay_loop(
    sh: Arc<Shared>,
    auto_migrate: bool,
    retention: Retention,
    gate: tokio::sync::oneshot::Receiver<()>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    // A stop before the gate opens ends the loop at once (a completed oneshot must not be
    // polled again).
    let stopped = tokio::select! {
        _ = gate => false,
        _ = &mut stop => true,
    };
    let mut migrated = !auto_migrate;
    let mut retention_at = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if stopped {
            break;
        }
        if !migrated {
            migrated = migrate(&sh.db).await;
        }
        if migrated && sh.replay().await && !sh.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("database answers; CDRs are written directly");
        }
        if migrated && tokio::time::Instant::now() >= retention_at {
            retention_pass(&sh.db, &retention).await;
            retention_at = tokio::time::Instant::now() + Duration::from_secs(3600);
        }
        tokio::select! {
            _ = tokio::time::sleep(REPLAY_EVERY) => {}
            _ = &mut stop => break,
        }
    }
    // Shutting down: one last attempt to empty the spool.
    if migrated || migrate(&sh.db).await {
        sh.replay().await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    db: Db,
    spool: Spool,
    gdpr: Arc<Gdpr>,
    stats: Arc<WriterStats>,
    auto_migrate: bool,
    mut rx: mpsc::Receiver<Cdr>,
    retention: Retention,
    gate: tokio::sync::oneshot::Receiver<()>,
    webhooks: Arc<std::sync::RwLock<crate::webhooks::Webhooks>>,
) {
    let sh = Arc::new(Shared {
        db,
        spool,
        gdpr,
        stats,
        webhooks,
        healthy: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let replayer = tokio::spawn(replay_loop(
        sh.clone(),
        auto_migrate,
        retention,
        gate,
        stop_rx,
    ));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(c)) => batch.push(c),
                _ => break,
            }
        }
        if !sh.healthy.load(Ordering::Relaxed) || !sh.write(&mut batch).await {
            spool_or_log(&sh.spool, &sh.gdpr, &sh.stats, &mut batch);
        }
    }
    let _ = stop_tx.send(());
    let _ = replayer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_cdr_that_cannot_be_spooled_is_logged_whole_but_with_numbers_masked() {
        let buf = Buf::default();
        let sink = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        // a spool directory under a regular file cannot be created
        let spool = Spool::new(std::path::Path::new("/dev/null/spool"));
        let stats = WriterStats::default();
        let cdr = Cdr::synthetic(7);
        tracing::subscriber::with_default(sub, || {
            let nowhere = std::env::temp_dir().join(format!("dce-none-{}", crate::ids::uuid()));
            let gdpr = Gdpr::open(&nowhere).unwrap();
            spool_or_log(&spool, &gdpr, &stats, &mut [cdr.clone()]);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("CDR could not be spooled"), "{text}");
        assert!(text.contains(&cdr.id), "{text}");
        assert!(
            text.contains("\"revenue_cents\":1200,\"payout_cents\":960,\"margin_cents\":240"),
            "the billing facts are there: {text}"
        );
        assert!(!text.contains(&cdr.caller), "{text}");
        assert!(text.contains("1310*****07"), "{text}");
        assert_eq!(stats.spooled.load(Ordering::Relaxed), 0);
    }

    fn log_to(buf: &Buf) -> impl tracing::Subscriber {
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish()
    }

    #[tokio::test]
    async fn retention_on_a_fresh_install_creates_its_key_and_logs_no_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dce-retention-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display())).unwrap();
        db.migrate().await.unwrap();
        // nothing was ever spooled: the spool directory does not exist yet
        let r = Retention {
            days: 30,
            key_file: dir.join("spool").join("anon.key"),
        };
        let buf = Buf::default();
        {
            let _g = tracing::subscriber::set_default(log_to(&buf));
            retention_pass(&db, &r).await;
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("ERROR"), "{text}");
        assert!(!text.contains("no hash key"), "{text}");
        let key = std::fs::read(&r.key_file).expect("the pass created the key");
        assert_eq!(key.len(), 32);
        let mode = std::fs::metadata(&r.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only DCE's user reads the key");
        // the next pass keeps that key and anonymises a call older than the cutoff
        let old = Cdr {
            invite_at: "2001-01-01T00:00:00.000Z".into(),
            end_at: "2001-01-01T00:02:00.000Z".into(),
            ..Cdr::synthetic(3)
        };
        db.insert(std::slice::from_ref(&old)).await.unwrap();
        db.insert(&[Cdr {
            invite_at: chrono::Utc::now().to_rfc3339(),
            ..Cdr::synthetic(4)
        }])
        .await
        .unwrap();
        assert_eq!(
            retention_step(&db, &r).await.unwrap(),
            1,
            "only the old call"
        );
        assert_eq!(std::fs::read(&r.key_file).unwrap(), key, "the key is kept");
        let rows = db
            .export("2000-01-01T00:00:00Z", "2002-01-01T00:00:00Z")
            .await
            .unwrap();
        assert_eq!(
            rows[0].caller,
            crate::store::anonymize::pseudonym(&key, &old.caller)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_erased_number_reaches_the_database_anonymised_from_spool_and_queue() {
        let dir = std::env::temp_dir().join(format!("dce-writer-gdpr-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display())).unwrap();
        db.migrate().await.unwrap();
        let spool = Spool::new(&dir.join("spool"));
        let gdpr = Gdpr::open(&dir.join("spool")).unwrap();
        let (gate_tx, gate) = tokio::sync::oneshot::channel();
        let retention = Retention {
            days: 0,
            key_file: dir.join("spool/anon.key"),
        };
        let (mut sink, task, stats) = start(
            db.clone(),
            spool.clone(),
            false,
            100,
            retention,
            gdpr.clone(),
            gate,
            Default::default(),
        );
        // before the gate the database is not touched: the batch goes to the spool
        for i in [1234, 1] {
            sink.emit(Cdr::synthetic(i));
        }
        for _ in 0..200 {
            if stats.spooled.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.spooled.load(Ordering::Relaxed), 2, "both spooled");
        let done = gdpr.erase("+13105551234", &db, &spool, None).await.unwrap();
        assert_eq!((done.database_calls, done.spool_records), (0, 1));
        sink.emit(Cdr {
            id: Cdr::synthetic(99).id,
            ..Cdr::synthetic(1234)
        }); // queued after the erasure
        let _ = gate_tx.send(());
        for _ in 0..500 {
            if stats.written.load(Ordering::Relaxed) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(sink);
        task.await.unwrap();
        let rows = db
            .export("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
            .await
            .unwrap();
        let mut callers: Vec<&str> = rows.iter().map(|r| r.caller.as_str()).collect();
        callers.sort();
        let p = done.pseudonym.as_str();
        let mut want = vec![p, p, "13105550001"];
        want.sort();
        assert_eq!(callers, want);
        assert_eq!(spool.pending(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

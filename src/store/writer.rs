//! The CDR writer: the call path hands a CDR to a bounded channel and moves on; a task batches
//! them into the database (by count or every 100 ms). When the database errors, is slow or the
//! channel is full, CDRs go to the fsync'd spool; a replay loop puts them in the database once it
//! answers again, and only then removes them from the spool.

use super::db::Db;
use super::spool::Spool;
use crate::call::cdr::{Cdr, CdrSink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// The sink the call controller writes to.
pub struct DbSink {
    tx: mpsc::Sender<Cdr>,
    spool: Spool,
    lock: Arc<Mutex<()>>,
    stats: Arc<WriterStats>,
}

impl CdrSink for DbSink {
    fn emit(&mut self, cdr: Cdr) {
        if let Err(e) = self.tx.try_send(cdr) {
            let cdr = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            spool_or_log(&self.spool, &self.lock, &self.stats, &[cdr]);
        }
    }
}

fn spool_or_log(spool: &Spool, lock: &Mutex<()>, stats: &WriterStats, cdrs: &[Cdr]) {
    let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
    match spool.append(cdrs) {
        Ok(()) => {
            stats
                .spooled
                .fetch_add(cdrs.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            for c in cdrs {
                tracing::error!(call = %c.id, error = %e, "CDR could not be spooled: {}", serde_json::to_string(c).unwrap_or_default());
            }
        }
    }
}

/// Start the writer. Dropping the returned sink (and every clone of its sender) ends the task
/// after it has written or spooled everything it was given; await the handle for that.
pub fn start(
    db: Db,
    spool: Spool,
    auto_migrate: bool,
    capacity: usize,
    retention: Retention,
) -> (DbSink, JoinHandle<()>, Arc<WriterStats>) {
    let (tx, rx) = mpsc::channel(capacity);
    let lock = Arc::new(Mutex::new(()));
    let stats = Arc::new(WriterStats::default());
    let task = tokio::spawn(run(
        db,
        spool.clone(),
        lock.clone(),
        stats.clone(),
        auto_migrate,
        rx,
        retention,
    ));
    (
        DbSink {
            tx,
            spool,
            lock,
            stats: stats.clone(),
        },
        task,
        stats,
    )
}

struct Writer {
    db: Db,
    spool: Spool,
    lock: Arc<Mutex<()>>,
    stats: Arc<WriterStats>,
    auto_migrate: bool,
    migrated: bool,
}

impl Writer {
    async fn ready(&mut self) -> bool {
        if self.migrated || !self.auto_migrate {
            return true;
        }
        match tokio::time::timeout(WRITE_DEADLINE, self.db.migrate()).await {
            Ok(Ok(())) => {
                self.migrated = true;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "database migration failed; CDRs are spooled");
                false
            }
            Err(_) => false,
        }
    }

    async fn write(&mut self, batch: &[Cdr]) -> bool {
        if !self.ready().await {
            return false;
        }
        match tokio::time::timeout(WRITE_DEADLINE, self.db.insert(batch)).await {
            Ok(Ok(())) => {
                self.stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, cdrs = batch.len(), "database write failed; spooling");
                false
            }
            Err(_) => {
                tracing::warn!(cdrs = batch.len(), "database write too slow; spooling");
                false
            }
        }
    }

    async fn replay(&mut self) {
        let batches = {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.spool.take()
        };
        for b in batches {
            if b.cdrs.is_empty() || self.write(&b.cdrs).await {
                if !b.cdrs.is_empty() {
                    tracing::info!(cdrs = b.cdrs.len(), file = %b.path.display(), "spool replayed");
                }
                self.spool.done(&b);
            } else {
                break; // still down: the file stays for the next round
            }
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

async fn retention_pass(db: &Db, r: &Retention) {
    if r.days == 0 {
        return;
    }
    let key = match super::anonymize::key(&r.key_file) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(file = %r.key_file.display(), error = %e, "retention: no hash key");
            return;
        }
    };
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64::from(r.days)))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match db.anonymize_before(&key, &cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(calls = n, before = %cutoff, "retention: numbers anonymised"),
        Err(e) => tracing::warn!(error = %e, "retention pass failed; retried next hour"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    db: Db,
    spool: Spool,
    lock: Arc<Mutex<()>>,
    stats: Arc<WriterStats>,
    auto_migrate: bool,
    mut rx: mpsc::Receiver<Cdr>,
    retention: Retention,
) {
    let mut retention_at = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut w = Writer {
        db,
        spool,
        lock,
        stats,
        auto_migrate,
        migrated: false,
    };
    w.ready().await;
    w.replay().await;
    let mut replay_at = tokio::time::Instant::now() + REPLAY_EVERY;
    loop {
        let first = tokio::select! {
            c = rx.recv() => c,
                        _ = tokio::time::sleep_until(replay_at) => {
                w.replay().await;
                replay_at = tokio::time::Instant::now() + REPLAY_EVERY;
                continue;
            }
            _ = tokio::time::sleep_until(retention_at) => {
                if w.migrated || !w.auto_migrate {
                    retention_pass(&w.db, &retention).await;
                }
                retention_at = tokio::time::Instant::now() + Duration::from_secs(3600);
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(c)) => batch.push(c),
                _ => break,
            }
        }
        if !w.write(&batch).await {
            spool_or_log(&w.spool, &w.lock, &w.stats, &batch);
        }
    }
    // Shutting down: one last attempt to empty the spool.
    w.replay().await;
}

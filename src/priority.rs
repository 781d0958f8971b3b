//! Thread priorities. The SIP workers and the media relay run at the default priority; threads
//! that do background work (the CDR database's SQLite thread, the CDR file writer, the log
//! writer) run at nice [`BACKGROUND_NICE`], so that when the cores are busy the scheduler gives
//! the call path the CPU first (with every DCE thread on one core at 2,000 calls/s the SIP
//! worker was preempted ~4,900 times a second, by the node runtime's threads and SQLite's;
//! docs/decisions/0010-sip-workers.md). The relay's threads stay at the default: RTP is as
//! late-sensitive as SIP.
//!
//! Linux keeps a nice value per thread (`setpriority(PRIO_PROCESS, tid, …)`), and a thread
//! starts with its creator's. Raising one's own nice needs no privilege; this is best-effort:
//! a failure is logged at debug and changes nothing else.

/// The nice value of background threads (0 is the default, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Run the calling thread at background priority.
pub fn background_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    renice(tid);
}

/// Run every thread of this process whose name starts with `prefix` at background priority
/// (threads a library starts, e.g. sqlx's SQLite connection thread, `sqlx-sqlite-worker-N`,
/// which the kernel shows cut to 15 bytes). Returns how many threads matched.
pub fn background_threads_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut n = 0;
    for t in tasks.flatten() {
        let Some(tid) = t
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if name.trim_end().starts_with(prefix) {
            renice(tid);
            n += 1;
        }
    }
    n
}

fn renice(tid: libc::id_t) {
    if nice_of(tid).is_some_and(|n| n >= BACKGROUND_NICE) {
        return; // already as low (a whole process started with `nice`): never raise it
    }
    // SAFETY: setpriority takes plain integers; a tid that has gone makes it fail with ESRCH.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE) };
    if rc != 0 {
        tracing::debug!(tid, error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
    }
}

/// The nice value of thread `tid` of this process (`None` when it cannot be read).
pub fn nice_of(tid: libc::id_t) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // the name (field 2) is in parentheses and may hold spaces: count fields after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    // after ')': state is field 3, nice is field 19
    rest.split_whitespace().nth(19 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid() -> libc::id_t {
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
    }

    #[test]
    fn a_background_thread_runs_at_nice_10_and_others_keep_theirs() {
        let before = nice_of(tid()).unwrap();
        let (nice, named) = std::thread::Builder::new()
            .name("prio-test-bg".into())
            .spawn(|| {
                background_thread();
                (nice_of(tid()), tid())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(nice, Some(BACKGROUND_NICE.max(before)));
        assert_ne!(named, tid());
        // the calling thread is not touched
        assert_eq!(nice_of(tid()), Some(before));
    }

    #[test]
    fn threads_are_found_by_name() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name("prio-test-named-7".into())
            .spawn(move || {
                ready_tx.send(tid()).unwrap();
                let _ = done_rx.recv();
            })
            .unwrap();
        let other = ready_rx.recv().unwrap();
        assert_eq!(nice_of(other), Some(nice_of(tid()).unwrap()));
        assert_eq!(background_threads_named("prio-test-named"), 1);
        assert_eq!(
            nice_of(other),
            Some(BACKGROUND_NICE.max(nice_of(tid()).unwrap()))
        );
        assert_eq!(background_threads_named("no-such-thread"), 0);
        done_tx.send(()).unwrap();
        h.join().unwrap();
    }
}

#[cfg(test)]
mod sqlite_tests {
    /// The threads of this process named `prefix*` and their nice values.
    fn threads(prefix: &str) -> Vec<i32> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .unwrap_or_default()
                    .starts_with(prefix)
            })
            .filter_map(|t| super::nice_of(t.file_name().to_str()?.parse().ok()?))
            .collect()
    }

    #[tokio::test]
    async fn the_sqlite_connection_thread_runs_at_background_priority() {
        let dir = std::env::temp_dir().join(format!("dce-prio-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = crate::store::Db::connect(&format!("sqlite://{}/t.db", dir.display())).unwrap();
        db.ping().await.unwrap();
        // sqlx names its thread sqlx-sqlite-worker-N (the kernel keeps 15 bytes of it); if that
        // name changes, the renice in Db::connect silently stops working: this catches it
        let nice = threads("sqlx-sqlite-wor");
        assert!(!nice.is_empty(), "no sqlx-sqlite-wor* thread found");
        assert!(
            nice.iter().any(|&n| n >= super::BACKGROUND_NICE),
            "sqlite threads' nice values: {nice:?}"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

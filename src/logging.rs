//! Log set-up (`[log]`): text or JSON lines, and phone numbers masked by default.
//!
//! Every line about a call carries `call=<uuid>`; numbers go through [`num`], which masks all
//! but the first four and last two digits unless `[log] mask_numbers = false`.

use std::sync::atomic::{AtomicBool, Ordering};

static MASK: AtomicBool = AtomicBool::new(true);

/// Mask numbers in logs and live events (the default) or not.
pub fn set_mask(on: bool) {
    MASK.store(on, Ordering::Relaxed);
}

/// Are numbers masked?
pub fn masking() -> bool {
    MASK.load(Ordering::Relaxed)
}

/// A number as logs show it: `1310*****34` when masking.
pub fn num(n: &str) -> String {
    if !masking() {
        return n.to_owned();
    }
    mask(n)
}

/// Mask every character but the first four and the last two (short numbers: all but the last
/// two).
pub fn mask(n: &str) -> String {
    let chars: Vec<char> = n.chars().collect();
    let len = chars.len();
    let keep_head = if len > 8 { 4 } else { 0 };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i + 2 >= len {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// Lines waiting for the log thread, and the state it shares with the writers.
struct Buffered {
    lines: std::sync::Mutex<Vec<u8>>,
    wake: std::sync::Condvar,
    dropped: std::sync::atomic::AtomicU64,
}

static BUFFER: std::sync::OnceLock<Buffered> = std::sync::OnceLock::new();

/// Bytes of lines held at most while stderr does not take them (a stuck pipe); beyond, lines
/// are dropped and counted, never waited for.
const MAX_BUFFERED: usize = 4 << 20;

/// How often the log thread writes what it holds.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Where the subscriber writes: INFO and below are appended to a buffer that a log thread
/// writes to stderr every 50 ms (or at 64 KiB), so a SIP worker never makes a system call —
/// or waits on a slow or stuck stderr — to log a call's line; WARN and ERROR are written at
/// once (after what is buffered, to keep the order).
#[derive(Clone, Copy)]
struct LogWriter {
    urgent: bool,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b)?;
        Ok(b.len())
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        let Some(buf) = BUFFER.get() else {
            return std::io::stderr().write_all(b);
        };
        let mut lines = buf.lines.lock().unwrap_or_else(|p| p.into_inner());
        if self.urgent {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&lines);
            lines.clear();
            return err.write_all(b);
        }
        if lines.len() + b.len() > MAX_BUFFERED {
            buf.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        lines.extend_from_slice(b);
        if lines.len() >= 64 << 10 {
            buf.wake.notify_one();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        *self
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogWriter {
        LogWriter {
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Write what the log buffer holds now (at exit, before a panic message).
pub fn flush() {
    use std::io::Write;
    if let Some(buf) = BUFFER.get() {
        let mut lines = buf.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&lines);
        lines.clear();
        let dropped = buf.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                err,
                "dce: {dropped} log lines dropped: stderr did not take them"
            );
        }
    }
}

/// Start the log thread (once) and flush before any panic message.
fn start_buffering() {
    if BUFFER
        .set(Buffered {
            lines: std::sync::Mutex::new(Vec::with_capacity(64 << 10)),
            wake: std::sync::Condvar::new(),
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
        .is_err()
    {
        return;
    }
    let started = std::thread::Builder::new()
        .name("dce-log".into())
        .spawn(|| {
            crate::priority::background_thread();
            let Some(buf) = BUFFER.get() else { return };
            let mut out = Vec::with_capacity(64 << 10);
            loop {
                {
                    let lines = buf.lines.lock().unwrap_or_else(|p| p.into_inner());
                    let (mut lines, _) = buf
                        .wake
                        .wait_timeout(lines, FLUSH_EVERY)
                        .unwrap_or_else(|p| p.into_inner());
                    std::mem::swap(&mut *lines, &mut out);
                }
                if !out.is_empty() {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(&out);
                    out.clear();
                }
                let dropped = buf.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
                if dropped > 0 {
                    eprintln!("dce: {dropped} log lines dropped: stderr did not take them");
                }
            }
        });
    if started.is_err() {
        eprintln!("dce: no log thread; logging directly");
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        default(info);
    }));
}

/// Install the global subscriber: `json` for one JSON object per line; the filter comes from
/// `RUST_LOG` or `default_filter`.
pub fn init(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    start_buffering();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter { urgent: false });
    let _ = if json {
        b.json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_middle_of_numbers() {
        assert_eq!(mask("13105551234"), "1310*****34");
        assert_eq!(mask("+13105551234"), "+131******34");
        assert_eq!(mask("5551"), "**51");
        assert_eq!(mask(""), "");
    }
}

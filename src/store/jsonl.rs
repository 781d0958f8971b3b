//! The JSON-lines copy of the CDRs (`[cdr] jsonl_path`): [`JsonlSink`] and its writer thread,
//! which anonymises erased numbers before each line and, when
//! an erasure asks, rewrites its own file between two appends (so no append can interleave
//! with the rewrite); and the rewrite itself, atomic (temporary file, fsync, rename, directory
//! fsync).

use super::gdpr::{normal, Gdpr};
use crate::call::cdr::{Cdr, CdrSink};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// Appends JSON lines to a file from a writer thread ([`run`]). Dropping
/// it waits until every record handed over is written and synced.
pub struct JsonlSink {
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        // An erasure may hold a sender too: the thread stops on this, not on the last sender.
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl JsonlSink {
    /// Open (create or append) `path` and start the writer thread.
    pub fn open(path: &Path) -> std::io::Result<JsonlSink> {
        JsonlSink::open_with(path, None)
    }

    /// Like [`JsonlSink::open`]; with `gdpr`, erased numbers are anonymised before they are
    /// written, and an erasure can have the thread rewrite its file.
    pub fn open_with(path: &Path, gdpr: Option<Arc<Gdpr>>) -> std::io::Result<JsonlSink> {
        let file = open_append(path)?;
        let (tx, rx) = mpsc::channel();
        if let Some(g) = &gdpr {
            g.register_jsonl(tx.clone());
        }
        let path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || {
                crate::priority::background_thread();
                run(path, file, rx, gdpr)
            })?;
        Ok(JsonlSink {
            tx: Some(tx),
            writer: Some(writer),
        })
    }
}

impl CdrSink for JsonlSink {
    fn emit(&mut self, cdr: Cdr) {
        let sent = match &self.tx {
            Some(tx) => tx.send(Msg::Cdr(Box::new(cdr))).map_err(|e| match e.0 {
                Msg::Cdr(c) => c.id,
                _ => String::new(),
            }),
            None => Err(cdr.id),
        };
        if let Err(id) = sent {
            tracing::error!(call = %id, "CDR writer gone; record lost");
        }
    }
}

/// What the writer thread is handed.
pub enum Msg {
    /// Append one CDR.
    Cdr(Box<Cdr>),
    /// Rewrite the file with `number` (and every other erased number) anonymised; answer with
    /// the lines changed.
    Erase {
        /// The number, as the records hold it.
        number: String,
        /// The answer.
        done: tokio::sync::oneshot::Sender<std::io::Result<u64>>,
    },
    /// Write what came before, then end.
    Stop,
}

/// Open `path` for appending.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: append what arrives, flush and fsync after each run of messages; stop
/// on [`Msg::Stop`] or when every sender is gone.
pub fn run(path: PathBuf, file: File, rx: mpsc::Receiver<Msg>, gdpr: Option<Arc<Gdpr>>) {
    let shown = path.display().to_string();
    let mut out = BufWriter::new(file);
    while let Ok(first) = rx.recv() {
        let mut stop = false;
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Cdr(mut cdr) => {
                    if let Some(g) = &gdpr {
                        g.scrub(&mut cdr);
                    }
                    match serde_json::to_string(&cdr) {
                        Ok(line) => {
                            if let Err(e) = writeln!(out, "{line}") {
                                tracing::error!(file = %shown, error = %e, call = %cdr.id, "CDR write failed");
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, call = %cdr.id, "CDR not serialisable")
                        }
                    }
                }
                Msg::Erase { number, done } => {
                    let r = match &gdpr {
                        None => Ok(0),
                        Some(g) => out
                            .flush()
                            .and_then(|()| rewrite(&path, g, &number))
                            .and_then(|n| {
                                // the old handle points at the replaced file
                                out = BufWriter::new(open_append(&path)?);
                                Ok(n)
                            }),
                    };
                    let _ = done.send(r);
                }
                Msg::Stop => {
                    stop = true;
                    break;
                }
            }
        }
        if let Err(e) = out.flush().and_then(|_| out.get_ref().sync_data()) {
            tracing::error!(file = %shown, error = %e, "CDR flush failed");
        }
        if stop {
            break;
        }
    }
}

/// Rewrite `path` with every erased number anonymised; a line that is not a whole CDR (a
/// torn last line) but holds `number` is dropped. Nothing is written when nothing changes.
/// Only one writer may touch the file meanwhile: the node's own writer thread, or the command
/// line when no node runs. Returns the lines changed or dropped.
pub fn rewrite(path: &Path, gdpr: &Gdpr, number: &str) -> std::io::Result<u64> {
    let number = normal(number);
    let src = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mode = src.metadata()?.permissions().mode() & 0o777;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp_file, tmp) = super::files::create_temp(dir, &stem, mode)?;
    let result = (|| -> std::io::Result<u64> {
        let mut out = BufWriter::new(tmp_file);
        let mut changed = 0u64;
        for line in BufReader::new(src).split(b'\n') {
            let line = line?;
            match serde_json::from_slice::<Cdr>(&line) {
                Ok(mut c) => {
                    if gdpr.scrub(&mut c) {
                        serde_json::to_writer(&mut out, &c).map_err(std::io::Error::other)?;
                        changed += 1;
                    } else {
                        out.write_all(&line)?;
                    }
                }
                Err(_) if contains(&line, number.as_bytes()) => {
                    changed += 1;
                    continue;
                }
                Err(_) => out.write_all(&line)?,
            }
            out.write_all(b"\n")?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(changed)
    })();
    match result {
        Ok(0) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(0)
        }
        Ok(n) => super::files::commit(&tmp, path).map(|()| n),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::JsonlSink;
    use crate::call::cdr::{Cdr, CdrSink};
    use crate::store::{Db, Gdpr, Spool};

    #[tokio::test]
    async fn the_sink_rewrites_its_own_file_on_erasure_and_anonymises_later_lines() {
        let dir = std::env::temp_dir().join(format!("dce-jsonl-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cdr.jsonl");
        let gdpr = Gdpr::open(&dir.join("spool")).unwrap();
        let mut sink = JsonlSink::open_with(&path, Some(gdpr.clone())).unwrap();
        for i in [1234, 1, 1234] {
            sink.emit(Cdr::synthetic(i));
        }
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display())).unwrap();
        db.migrate().await.unwrap();
        // the erasure goes through the sink's thread (queued behind the three CDRs), not the
        // file directly: no `jsonl_path` is given
        let done = gdpr
            .erase("13105551234", &db, &Spool::new(&dir.join("spool")), None)
            .await
            .unwrap();
        assert_eq!(done.jsonl_records, 2, "{done:?}");
        sink.emit(Cdr::synthetic(1234)); // a later call of the erased number
        sink.emit(Cdr::synthetic(2));
        drop(sink); // written and synced
        let text = std::fs::read_to_string(&path).unwrap();
        let callers: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Cdr>(l).unwrap().caller)
            .collect();
        let p = done.pseudonym.as_str();
        assert_eq!(
            callers,
            [p, "13105550001", p, p, "13105550002"],
            "in order, none lost, the erased number nowhere: {text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

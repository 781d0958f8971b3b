//! Call recording: both directions of a call as one stereo WAV file (caller left, buyer right),
//! G.711 decoded to 16-bit PCM at 8 kHz, each packet placed by its RTP timestamp so gaps and
//! jitter keep the channels aligned. Written on a thread of its own (`dce-rec`): the relay
//! thread hands each recorded packet over a bounded queue and never waits (a full queue drops
//! the packet from the recording, and counts it; the call's media is unaffected).
//!
//! Placement: the recording starts when it is asked for (the answer) and ends when the call's
//! media closes, silence included; a side's first packet is put where that clock says it
//! arrived; its later packets at that place plus their RTP
//! timestamp's distance from the first. A timestamp that lands more than [`REBASE`] away from
//! where the clock says (a new source after a re-INVITE) starts the side afresh at its arrival.
//! Frames are kept in memory for [`WINDOW`] behind the newest, so a late packet still finds its
//! place; older ones are on disk, and a packet later than that is dropped.

use crate::engine::{MediaEvent, MediaId, MediaReport};
use std::collections::{HashMap, VecDeque};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Samples per second.
pub const RATE: u32 = 8000;
/// How far behind the newest frame a late packet may still be placed.
const WINDOW: usize = 2 * RATE as usize;
/// A timestamp this far (samples) from where the clock puts it restarts its side.
const REBASE: i64 = 2 * RATE as i64;
/// Packets queued for the recorder at most.
pub const QUEUE: usize = 16_384;
/// The longest recording (frames): 4 hours.
const MAX_FRAMES: u64 = 4 * 3600 * RATE as u64;

/// ITU-T G.711 μ-law to linear PCM.
pub fn ulaw(b: u8) -> i16 {
    let b = !b;
    let t = ((i32::from(b & 0x0f) << 3) + 0x84) << ((b & 0x70) >> 4);
    (if b & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// ITU-T G.711 A-law to linear PCM.
pub fn alaw(b: u8) -> i16 {
    let b = b ^ 0x55;
    let mut t = i32::from(b & 0x0f) << 4;
    let seg = (b & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if b & 0x80 != 0 { t } else { -t }) as i16
}

/// What the relay thread tells the recorder.
pub(crate) enum RecMsg {
    /// Record call `id` into `path`, from `at`.
    Start {
        id: MediaId,
        path: PathBuf,
        at: Instant,
    },
    /// An RTP packet of call `id` from `side` (0 carrier, 1 buyer).
    Packet {
        id: MediaId,
        side: usize,
        at: Instant,
        pkt: Vec<u8>,
    },
    /// The call is over: finish its file, then send `report` (with the recording) on.
    Stop {
        id: MediaId,
        report: Box<MediaReport>,
        at: Instant,
    },
    Exit,
}

/// What the relay thread holds of the recorder.
#[derive(Clone)]
pub(crate) struct RecorderLink {
    tx: SyncSender<RecMsg>,
    /// Packets that found the queue full.
    pub(crate) dropped: Arc<AtomicU64>,
}

impl RecorderLink {
    /// Hand `msg` over without waiting; false (and counted, for packets) when the queue is
    /// full.
    pub(crate) fn send(&self, msg: RecMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(RecMsg::Stop { id, report, at })) => {
                // the end must get through: wait for room (rare: the queue is full of packets)
                self.tx.send(RecMsg::Stop { id, report, at }).is_ok()
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Start the recorder thread; reports of recorded calls go to `events` when their files are
/// complete.
pub(crate) fn spawn(
    events: mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<(RecorderLink, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let link = RecorderLink {
        tx,
        dropped: dropped.clone(),
    };
    let h = std::thread::Builder::new()
        .name("dce-rec".into())
        .spawn(move || run(rx, events, dropped))?;
    Ok((link, h))
}

fn run(rx: Receiver<RecMsg>, events: mpsc::UnboundedSender<MediaEvent>, dropped: Arc<AtomicU64>) {
    let mut calls: HashMap<MediaId, Wav> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            RecMsg::Start { id, path, at } => match Wav::create(path.clone(), at) {
                Ok(w) => {
                    calls.insert(id, w);
                }
                Err(e) => eprintln!("dce-rec: cannot create {}: {e}", path.display()),
            },
            RecMsg::Packet { id, side, at, pkt } => {
                if let Some(w) = calls.get_mut(&id) {
                    w.packet(side, at, &pkt);
                }
            }
            RecMsg::Stop { id, mut report, at } => {
                if let Some(mut w) = calls.remove(&id) {
                    w.pad_to(at);
                    let path = w.path.clone();
                    match w.finish() {
                        Ok(frames) => {
                            report.recording =
                                Some((path, f64::from(frames as u32) / f64::from(RATE)))
                        }
                        Err(e) => eprintln!("dce-rec: cannot finish {}: {e}", path.display()),
                    }
                }
                report.recording_dropped = dropped.swap(0, Ordering::Relaxed);
                let _ = events.send(MediaEvent::Closed { id, report });
            }
            RecMsg::Exit => break,
        }
    }
    for (_, w) in calls.drain() {
        let _ = w.finish();
    }
}

/// Where a side's packets go.
#[derive(Debug, Clone, Copy)]
struct Base {
    ts0: u32,
    at0: i64,
}

/// One call's file.
pub(crate) struct Wav {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    t0: Instant,
    base: [Option<Base>; 2],
    /// Frames `flushed..flushed + window.len()`, not yet on disk.
    window: VecDeque<[i16; 2]>,
    flushed: u64,
}

const HEADER: usize = 44;

impl Wav {
    /// A new file at `path` (its directory made) for a recording from `t0`, with a header to
    /// be completed.
    pub(crate) fn create(path: PathBuf, t0: Instant) -> std::io::Result<Wav> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        file.write_all(&header(0))?;
        Ok(Wav {
            path,
            file,
            t0,
            base: [None, None],
            window: VecDeque::new(),
            flushed: 0,
        })
    }

    /// Place RTP packet `pkt` from `side` (0 left, 1 right), received `at`. Only G.711
    /// (payload types 0 and 8) is recorded.
    pub(crate) fn packet(&mut self, side: usize, at: Instant, pkt: &[u8]) {
        let Some((pt, ts, payload)) =
            crate::dtmf::payload(pkt).filter(|(pt, ..)| *pt == 0 || *pt == 8)
        else {
            return;
        };
        let arrival = self.frame_at(at) as i64;
        let base = self.base[side & 1].get_or_insert(Base {
            ts0: ts,
            at0: arrival,
        });
        let mut idx = base.at0 + i64::from(ts.wrapping_sub(base.ts0) as i32);
        if (idx - arrival).abs() > REBASE {
            *base = Base {
                ts0: ts,
                at0: arrival,
            };
            idx = arrival;
        }
        if idx < self.flushed as i64 || idx as u64 + payload.len() as u64 > MAX_FRAMES {
            return; // too late for the window, or past the longest recording
        }
        let start = (idx as u64 - self.flushed) as usize;
        let end = start + payload.len();
        if self.window.len() < end {
            self.window.resize(end, [0, 0]);
        }
        let decode = if pt == 0 { ulaw } else { alaw };
        for (i, &b) in payload.iter().enumerate() {
            self.window[start + i][side & 1] = decode(b);
        }
        if self.window.len() > 2 * WINDOW {
            let n = self.window.len() - WINDOW;
            let _ = self.write(n);
        }
    }

    /// The frame the clock puts `at` on.
    fn frame_at(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.t0).as_micros() as u64) * u64::from(RATE) / 1_000_000
    }

    /// Silence up to `at` (the end of the call), as far as the longest recording allows.
    pub(crate) fn pad_to(&mut self, at: Instant) {
        let end = self.frame_at(at).min(MAX_FRAMES);
        while self.flushed + (self.window.len() as u64) < end {
            let room = (end - self.flushed - self.window.len() as u64).min(WINDOW as u64);
            self.window
                .extend(std::iter::repeat_n([0, 0], room as usize));
            if self.window.len() > 2 * WINDOW {
                let n = self.window.len() - WINDOW;
                let _ = self.write(n);
            }
        }
    }

    /// Write the `n` oldest frames of the window.
    fn write(&mut self, n: usize) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(n * 4);
        for f in self.window.drain(..n) {
            buf.extend_from_slice(&f[0].to_le_bytes());
            buf.extend_from_slice(&f[1].to_le_bytes());
        }
        self.flushed += n as u64;
        self.file.write_all(&buf)
    }

    /// Write what is left, complete the header, and sync the file to disk; the frames in it.
    pub(crate) fn finish(mut self) -> std::io::Result<u64> {
        let n = self.window.len();
        self.write(n)?;
        let frames = self.flushed;
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(frames))?;
        file.sync_all()?;
        Ok(frames)
    }
}

/// The 44-byte header of a stereo 8 kHz PCM16 WAV file of `frames` frames.
fn header(frames: u64) -> [u8; HEADER] {
    let data = (frames * 4).min(u64::from(u32::MAX) - 36) as u32;
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&2u16.to_le_bytes()); // channels
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(RATE * 4).to_le_bytes()); // bytes per second
    h[32..34].copy_from_slice(&4u16.to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn g711_decodes_to_the_reference_values() {
        // silence and the extremes (ITU-T G.711 tables)
        assert_eq!(ulaw(0xff), 0);
        assert_eq!(ulaw(0x7f), 0);
        assert_eq!(ulaw(0x00), -32124);
        assert_eq!(ulaw(0x80), 32124);
        assert_eq!(alaw(0xd5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xaa), 32256);
        assert_eq!(alaw(0x2a), -32256);
    }

    fn pkt(pt: u8, ts: u32, fill: u8) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend(std::iter::repeat_n(fill, 160));
        p
    }

    fn read(path: &std::path::Path) -> Vec<[i16; 2]> {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(&b[8..16], b"WAVEfmt ");
        let data = u32::from_le_bytes([b[40], b[41], b[42], b[43]]) as usize;
        assert_eq!(data, b.len() - HEADER, "the header says the data's length");
        b[HEADER..]
            .chunks(4)
            .map(|c| {
                [
                    i16::from_le_bytes([c[0], c[1]]),
                    i16::from_le_bytes([c[2], c[3]]),
                ]
            })
            .collect()
    }

    #[test]
    fn both_sides_are_placed_by_timestamp_and_arrival_with_gaps_kept() {
        let dir = std::env::temp_dir().join(format!("dce-rec-{}", std::process::id()));
        let path = dir.join("call.wav");
        let t0 = Instant::now();
        let mut w = Wav::create(path.clone(), t0).unwrap();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // the carrier (μ-law, 0x00 = -32124) from 0 ms; the buyer (A-law, 0xaa = 32256) from
        // 40 ms with its own timestamps; the carrier's third packet is lost and its fourth
        // comes late, after the buyer's
        w.packet(0, ms(0), &pkt(0, 1000, 0x00));
        w.packet(0, ms(20), &pkt(0, 1160, 0x00));
        w.packet(1, ms(40), &pkt(8, 77_000, 0xaa));
        w.packet(1, ms(60), &pkt(8, 77_160, 0xaa));
        w.packet(0, ms(75), &pkt(0, 1480, 0x00)); // 60 ms of media, 15 ms late
        w.packet(9, ms(80), &pkt(18, 0, 0x11)); // G.729: not recorded
        w.pad_to(ms(100)); // the call ends at 100 ms
        assert_eq!(w.finish().unwrap(), 800);
        let f = read(&path);
        assert_eq!(f.len(), 800, "100 ms at 8 kHz");
        let left: Vec<i16> = f.iter().map(|s| s[0]).collect();
        let right: Vec<i16> = f.iter().map(|s| s[1]).collect();
        assert!(left[..320].iter().all(|&s| s == -32124));
        assert!(
            left[320..480].iter().all(|&s| s == 0),
            "the lost packet is silence"
        );
        assert!(
            left[480..640].iter().all(|&s| s == -32124),
            "the late one in its place"
        );
        assert!(f[640..].iter().all(|&s| s == [0, 0]), "silence to the end");
        assert!(
            right[..320].iter().all(|&s| s == 0),
            "the buyer starts at 40 ms"
        );
        assert!(right[320..640].iter().all(|&s| s == 32256));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_jump_in_timestamps_restarts_the_side_at_its_arrival_and_long_calls_stream_to_disk() {
        let dir = std::env::temp_dir().join(format!("dce-rec2-{}", std::process::id()));
        let path = dir.join("call.wav");
        let t0 = Instant::now();
        let mut w = Wav::create(path.clone(), t0).unwrap();
        // 10 s of the carrier, then a new source whose timestamps are far away
        for i in 0..500u32 {
            w.packet(
                0,
                t0 + Duration::from_millis(20 * u64::from(i)),
                &pkt(0, 160 * i, 0x00),
            );
        }
        assert!(w.window.len() <= 2 * WINDOW, "older frames went to disk");
        w.packet(
            0,
            t0 + Duration::from_millis(10_000),
            &pkt(0, 3_000_000_000, 0x00),
        );
        let frames = w.finish().unwrap();
        assert_eq!(frames, 80_160, "the new source at 10 s, not 4 days later");
        assert_eq!(read(&path).len(), 80_160);
        // hostile input: nothing panics, nothing is written
        let mut w = Wav::create(dir.join("junk.wav"), t0).unwrap();
        for n in 0..12 {
            w.packet(0, t0, &pkt(0, 0, 0)[..n]); // shorter than an RTP header
        }
        let mut padded = pkt(0, 0, 0);
        *padded.last_mut().unwrap() = 200; // padding longer than the payload
        padded[0] |= 0x20;
        w.packet(0, t0, &padded);
        let mut ext = pkt(0, 0, 0);
        ext[0] |= 0x10; // an extension header that runs past the end
        ext[14] = 0xff;
        w.packet(0, t0, &ext);
        assert_eq!(w.finish().unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

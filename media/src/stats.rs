//! Quality of one RTP stream (one direction of one leg), as pure code with time passed in:
//! packets, bytes, loss from sequence numbers (RFC 3550 A.1 and A.3), interarrival jitter (A.8),
//! RTT and remote loss from RTCP receiver/sender reports when present, and a MOS estimate from a
//! simplified ITU-T G.107 E-model that needs no RTCP at all.
//!
//! Loss follows RFC 3550 A.1 (`update_seq`): a source is valid after `MIN_SEQUENTIAL` packets in
//! sequence; a jump of `MAX_DROPOUT` or more ahead (or more than `MAX_MISORDER` behind) is not
//! believed until the next packet follows it in sequence, which restarts the count (a replayed
//! stream, a restarted encoder); a new SSRC restarts it too. Each restart closes a segment whose
//! expected and lost packets are kept, so the stream's loss is the sum over its segments.
//! Unlike plain A.1, a packet that arrives twice is counted once (a window of the last 128
//! sequence numbers), so duplicates cannot hide real loss.

use std::time::{Duration, Instant};

/// Running statistics of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    packets: u64,
    bytes: u64,
    seq: Sequence,
    jitter: f64,
    last_transit: Option<f64>,
    clock_rate: u32,
    origin: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    longest_gap: Duration,
    payload_type: Option<u8>,
    rtt_ms: Option<f64>,
    remote_fraction_lost: Option<u8>,
}

/// What a stream's statistics say, for the CDR.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamReport {
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Packets lost, from sequence numbers (RFC 3550 A.1/A.3, summed over restarts).
    pub lost: u64,
    /// Loss in percent of expected.
    pub loss_pct: f64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Loss the far end reported in RTCP, percent.
    pub remote_loss_pct: Option<f64>,
    /// Longest silence between packets, seconds.
    pub longest_gap_s: f64,
    /// MOS estimate (1.0–4.5), 0 when nothing was received.
    pub mos: f64,
    /// First payload type seen.
    pub payload_type: Option<u8>,
}

/// Codec impairment (Ie) and packet-loss robustness (Bpl) of ITU-T G.113 Appendix I.
fn codec_impairment(codec: &str) -> (f64, f64) {
    match codec.to_ascii_uppercase().as_str() {
        "PCMU" | "PCMA" => (0.0, 4.3),
        "G729" => (11.0, 19.0),
        "G722" => (0.0, 4.3),
        "GSM" => (20.0, 10.0),
        "OPUS" => (0.0, 20.0),
        _ => (0.0, 4.3),
    }
}

/// E-model R factor to MOS (ITU-T G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
    }
}

/// Simplified E-model: R = 93.2 − Id − Ie,eff, with the one-way delay estimated from the RTT
/// (or 20 ms of network when there is no RTCP) plus a jitter buffer of twice the jitter plus one
/// 20 ms packet.
pub fn estimate_mos(codec: &str, loss_pct: f64, jitter_ms: f64, rtt_ms: Option<f64>) -> f64 {
    let (ie, bpl) = codec_impairment(codec);
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    let ta = rtt_ms.map(|r| r / 2.0).unwrap_or(20.0) + 2.0 * jitter_ms + 20.0;
    let id = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
    mos_from_r(93.2 - id - ie_eff)
}

/// RFC 3550 A.1: a jump of this many sequence numbers or more ahead is not believed at once.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet up to this many behind the highest is late (or a duplicate).
const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: packets in sequence before a new source counts.
const MIN_SEQUENTIAL: u32 = 2;
/// RFC 3550 A.1: `RTP_SEQ_MOD`.
const RTP_SEQ_MOD: u64 = 1 << 16;

/// What one packet did to the sequence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqOutcome {
    /// Received (in order, with a gap, or late): counted.
    Counted,
    /// A sequence number already received: not counted again.
    Duplicate,
    /// Not counted: the source is on probation, the packet is a jump not (yet) believed, or it
    /// is older than the segment's first packet.
    NotCounted,
    /// A new segment started with this packet (new SSRC, or a jump confirmed); counted in it.
    Restarted,
}

/// RFC 3550 A.1 `source`: the sequence state of one segment of a stream.
#[derive(Debug, Clone, Default)]
struct SeqState {
    /// Highest sequence number seen.
    max_seq: u16,
    /// Shifted count of sequence number cycles (a multiple of `RTP_SEQ_MOD`).
    cycles: u64,
    /// First sequence number counted.
    base_seq: u16,
    /// Last 'bad' sequence number + 1 (None: none pending; A.1 uses `RTP_SEQ_MOD + 1`).
    bad_seq: Option<u16>,
    /// Sequential packets still needed before the source is valid.
    probation: u32,
    /// Packets counted (each sequence number once).
    received: u64,
    /// Bit `i`: the packet `i` behind `max_seq` was received (duplicate detection).
    window: u128,
}

impl SeqState {
    /// A.1 `init_seq`: the segment starts at `seq`.
    fn init(seq: u16) -> SeqState {
        SeqState {
            max_seq: seq,
            cycles: 0,
            base_seq: seq,
            bad_seq: None,
            probation: 0,
            received: 0,
            window: 0,
        }
    }

    /// A source heard for the first time: on probation until `MIN_SEQUENTIAL` in sequence.
    fn probation(seq: u16) -> SeqState {
        SeqState {
            max_seq: seq.wrapping_sub(1),
            probation: MIN_SEQUENTIAL,
            ..SeqState::init(seq)
        }
    }

    /// A.1 `update_seq`, except that a confirmed jump is returned as `Restarted` for the caller
    /// to close this segment, and a duplicate is not counted.
    fn update(&mut self, seq: u16) -> SeqOutcome {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    *self = SeqState::init(seq);
                    self.received = 1;
                    self.window = 1;
                    return SeqOutcome::Counted;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqOutcome::NotCounted;
        }
        if udelta < MAX_DROPOUT {
            // in order, with a permissible gap
            if udelta == 0 {
                return SeqOutcome::Duplicate;
            }
            if seq < self.max_seq {
                self.cycles += RTP_SEQ_MOD;
            }
            self.max_seq = seq;
            self.window = if udelta >= 128 {
                1
            } else {
                (self.window << udelta) | 1
            };
        } else if udelta as u64 <= RTP_SEQ_MOD - MAX_MISORDER as u64 {
            // a very large jump: believe it only if the next packet follows it
            if self.bad_seq == Some(seq) {
                return SeqOutcome::Restarted;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqOutcome::NotCounted;
        } else {
            // late or duplicate: `behind` is 1..MAX_MISORDER
            let behind = self.max_seq.wrapping_sub(seq);
            let extended = (self.cycles + self.max_seq as u64).checked_sub(behind as u64);
            if extended.is_none_or(|e| e < self.base_seq as u64) {
                return SeqOutcome::NotCounted;
            }
            let bit = 1u128 << behind;
            if self.window & bit != 0 {
                return SeqOutcome::Duplicate;
            }
            self.window |= bit;
        }
        self.received += 1;
        SeqOutcome::Counted
    }

    /// A.3: (expected, lost) of this segment; nothing before the source is valid.
    fn expected_and_lost(&self) -> (u64, u64) {
        if self.probation > 0 {
            return (0, 0);
        }
        let expected = self.cycles + self.max_seq as u64 - self.base_seq as u64 + 1;
        (expected, expected.saturating_sub(self.received))
    }
}

/// A stream's sequence numbers across restarts: the current segment and the closed ones.
#[derive(Debug, Clone, Default)]
struct Sequence {
    /// The current segment; None before the first packet.
    current: Option<SeqState>,
    /// SSRC of the current segment.
    ssrc: u32,
    /// Expected packets of the closed segments.
    closed_expected: u64,
    /// Lost packets of the closed segments.
    closed_lost: u64,
    /// Packets received more than once.
    duplicates: u64,
}

impl Sequence {
    fn on_packet(&mut self, ssrc: u32, seq: u16) -> SeqOutcome {
        let outcome = match self.current.as_mut() {
            Some(cur) if self.ssrc == ssrc => cur.update(seq),
            Some(_) => {
                self.close_segment(SeqState::probation(seq));
                self.ssrc = ssrc;
                self.current_update(seq);
                return SeqOutcome::Restarted;
            }
            None => {
                self.ssrc = ssrc;
                self.current = Some(SeqState::probation(seq));
                self.current_update(seq)
            }
        };
        match outcome {
            SeqOutcome::Restarted => {
                let mut fresh = SeqState::init(seq);
                fresh.received = 1;
                fresh.window = 1;
                self.close_segment(fresh);
            }
            SeqOutcome::Duplicate => self.duplicates += 1,
            SeqOutcome::Counted | SeqOutcome::NotCounted => {}
        }
        outcome
    }

    fn current_update(&mut self, seq: u16) -> SeqOutcome {
        match self.current.as_mut() {
            Some(cur) => cur.update(seq),
            None => SeqOutcome::NotCounted,
        }
    }

    /// Keep the current segment's figures and start `next`.
    fn close_segment(&mut self, next: SeqState) {
        if let Some(cur) = self.current.replace(next) {
            let (expected, lost) = cur.expected_and_lost();
            self.closed_expected += expected;
            self.closed_lost += lost;
        }
    }

    /// (expected, lost) over the whole stream.
    fn expected_and_lost(&self) -> (u64, u64) {
        let (e, l) = self
            .current
            .as_ref()
            .map(SeqState::expected_and_lost)
            .unwrap_or((0, 0));
        (self.closed_expected + e, self.closed_lost + l)
    }
}

impl StreamStats {
    /// A stream whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> StreamStats {
        StreamStats {
            clock_rate: clock_rate.max(1),
            ..StreamStats::default()
        }
    }

    /// Account one RTP packet received at `now`. Returns false (and counts nothing) when it is
    /// not RTP version 2.
    pub fn on_rtp(&mut self, pkt: &[u8], now: Instant) -> bool {
        if pkt.len() < 12 || pkt[0] >> 6 != 2 {
            return false;
        }
        let cc = (pkt[0] & 0x0f) as usize;
        let header = 12 + 4 * cc;
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        self.packets += 1;
        self.bytes += pkt.len().saturating_sub(header) as u64;
        if self.payload_type.is_none() {
            self.payload_type = Some(pkt[1] & 0x7f);
        }
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        if self.seq.on_packet(ssrc, seq) == SeqOutcome::Restarted {
            // a new source or a restarted one: its timestamps have nothing to do with the old
            self.last_transit = None;
        }
        // RFC 3550 A.8: interarrival jitter in timestamp units.
        let origin = *self.origin.get_or_insert(now);
        let arrival = now.saturating_duration_since(origin).as_secs_f64() * self.clock_rate as f64;
        let transit = arrival - ts as f64;
        if let Some(last) = self.last_transit {
            let mut d = transit - last;
            if d < 0.0 {
                d = -d;
            }
            // a timestamp wrap or a new talk spurt should not explode the estimate
            if d < self.clock_rate as f64 * 10.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        if let Some(last) = self.last {
            self.longest_gap = self.longest_gap.max(now.saturating_duration_since(last));
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        true
    }

    /// Account an RTCP compound packet from the far end of this stream's sender: a receiver
    /// report block about *our* sending gives RTT (LSR/DLSR) only with NTP bookkeeping we do
    /// not keep, so DCE takes the fraction lost, and the RTT when the report carries both LSR
    /// and DLSR relative to `sr_sent` (the compact NTP time DCE saw in the last SR it relayed).
    pub fn on_rtcp(&mut self, pkt: &[u8], now_ntp_compact: Option<u32>) {
        let mut off = 0;
        while off + 8 <= pkt.len() {
            let b0 = pkt[off];
            if b0 >> 6 != 2 {
                return;
            }
            let count = (b0 & 0x1f) as usize;
            let pt = pkt[off + 1];
            let len = (u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]) as usize + 1) * 4;
            if off + len > pkt.len() {
                return;
            }
            let blocks_at = match pt {
                200 => Some(off + 28), // SR: header 8 + sender info 20
                201 => Some(off + 8),  // RR
                _ => None,
            };
            if let Some(mut b) = blocks_at {
                for _ in 0..count {
                    if b + 24 > off + len {
                        break;
                    }
                    self.remote_fraction_lost = Some(pkt[b + 4]);
                    let lsr =
                        u32::from_be_bytes([pkt[b + 16], pkt[b + 17], pkt[b + 18], pkt[b + 19]]);
                    let dlsr =
                        u32::from_be_bytes([pkt[b + 20], pkt[b + 21], pkt[b + 22], pkt[b + 23]]);
                    if let (Some(now), true) = (now_ntp_compact, lsr != 0) {
                        let rtt = now.wrapping_sub(lsr).wrapping_sub(dlsr);
                        if rtt < 65536 * 10 {
                            self.rtt_ms = Some(rtt as f64 * 1000.0 / 65536.0);
                        }
                    }
                    b += 24;
                }
            }
            off += len;
        }
    }

    /// When the last packet arrived.
    pub fn last_packet(&self) -> Option<Instant> {
        self.last
    }

    /// Packets so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets that arrived more than once (counted once for loss).
    pub fn duplicates(&self) -> u64 {
        self.seq.duplicates
    }

    /// The report for the CDR; `codec` names the codec for the MOS estimate.
    pub fn report(&self, codec: &str) -> StreamReport {
        let (expected, lost) = self.seq.expected_and_lost();
        let loss_pct = if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        };
        let jitter_ms = self.jitter * 1000.0 / self.clock_rate as f64;
        let mos = if self.packets == 0 {
            0.0
        } else {
            estimate_mos(codec, loss_pct, jitter_ms, self.rtt_ms)
        };
        StreamReport {
            packets: self.packets,
            bytes: self.bytes,
            lost,
            loss_pct,
            jitter_ms,
            rtt_ms: self.rtt_ms,
            remote_loss_pct: self.remote_fraction_lost.map(|f| f as f64 * 100.0 / 256.0),
            longest_gap_s: self.longest_gap.as_secs_f64(),
            mos,
            payload_type: self.payload_type,
        }
    }
}

/// An RTP packet for tests and tools: version 2, `pt`, `seq`, `ts`, `ssrc`, `payload` bytes.
pub fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; 12 + payload];
    p[0] = 0x80;
    p[1] = pt & 0x7f;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(drop_every: Option<u16>, jitter_ms: u64, n: u16) -> StreamReport {
        let t0 = Instant::now();
        let mut s = StreamStats::new(8000);
        for i in 0..n {
            if drop_every.is_some_and(|d| i % d == d - 1) {
                continue;
            }
            // every other packet arrives `jitter_ms` late
            let late = if i % 2 == 1 { jitter_ms } else { 0 };
            let at = t0 + Duration::from_millis(20 * i as u64 + late);
            s.on_rtp(
                &rtp_packet(0, i.wrapping_add(65000), 160 * i as u32, 1, 160),
                at,
            );
        }
        s.report("PCMU")
    }

    #[test]
    fn clean_stream() {
        let r = run(None, 0, 500);
        assert_eq!((r.packets, r.lost, r.bytes), (500, 0, 500 * 160));
        assert!(r.jitter_ms < 0.01);
        assert!(r.mos > 4.3, "{}", r.mos);
    }

    #[test]
    fn ten_percent_loss_and_jitter_across_a_sequence_wrap() {
        // 1001 packets, every 10th dropped (the last one is sent: trailing loss is invisible)
        let r = run(Some(10), 10, 1001);
        assert_eq!(r.packets, 901);
        assert_eq!(r.lost, 100);
        assert!((r.loss_pct - 10.0).abs() < 0.2, "{}", r.loss_pct);
        // alternate 0/10 ms lateness: |D| = 10 ms between neighbours, 0 across a dropped
        // packet (1 pair in 9) → J settles near 10 × 8/9 ≈ 8.9 ms
        assert!((8.0..=10.5).contains(&r.jitter_ms), "{}", r.jitter_ms);
        let clean = run(None, 0, 1000);
        assert!(r.mos < clean.mos - 1.0, "{} vs {}", r.mos, clean.mos);
    }

    #[test]
    fn mos_curve() {
        assert!((mos_from_r(93.2) - 4.41).abs() < 0.02);
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert!(estimate_mos("G729", 0.0, 0.0, None) < estimate_mos("PCMU", 0.0, 0.0, None));
    }

    #[test]
    fn rtcp_receiver_report_fraction_lost() {
        let mut s = StreamStats::new(8000);
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&1u32.to_be_bytes()); // sender SSRC
        let mut block = vec![0u8; 24];
        block[4] = 64; // 25 %
        block[16..20].copy_from_slice(&1000u32.to_be_bytes());
        block[20..24].copy_from_slice(&100u32.to_be_bytes());
        rr.extend_from_slice(&block);
        s.on_rtcp(&rr, Some(1000 + 100 + 6554)); // 100 ms
        let r = s.report("PCMU");
        assert_eq!(r.remote_loss_pct, Some(25.0));
        assert!((r.rtt_ms.unwrap() - 100.0).abs() < 0.1);
        s.on_rtcp(b"garbage that is not rtcp", None);
    }

    #[test]
    fn not_rtp_is_not_counted() {
        let mut s = StreamStats::new(8000);
        assert!(!s.on_rtp(b"hello", Instant::now()));
        assert!(!s.on_rtp(&[0u8; 20], Instant::now()));
        assert_eq!(s.packets(), 0);
    }

    /// Feed `seqs` from `ssrc`, one packet each 20 ms after `t0 + at_ms`, timestamps following.
    fn feed(
        s: &mut StreamStats,
        t0: Instant,
        at_ms: u64,
        ssrc: u32,
        seqs: impl IntoIterator<Item = u16>,
    ) {
        for (i, seq) in seqs.into_iter().enumerate() {
            let at = t0 + Duration::from_millis(at_ms + 20 * i as u64);
            assert!(s.on_rtp(&rtp_packet(0, seq, 160 * i as u32, ssrc, 160), at));
        }
    }

    /// `n` sequence numbers from `start` (wrapping), without those at the indices in `drop`.
    fn seqs(start: u16, n: u16, drop: &[u16]) -> Vec<u16> {
        (0..n)
            .filter(|i| !drop.contains(i))
            .map(|i| start.wrapping_add(i))
            .collect()
    }

    #[test]
    fn a_replayed_stream_has_the_loss_it_really_had() {
        let t0 = Instant::now();
        // the same 1000 packets twice (seq restarts from the beginning), none lost
        let mut s = StreamStats::new(8000);
        feed(&mut s, t0, 0, 7, seqs(60000, 1000, &[]));
        feed(&mut s, t0, 20_000, 7, seqs(60000, 1000, &[]));
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (2000, 0));
        assert_eq!(r.loss_pct, 0.0);
        assert!(r.mos > 4.3, "{}", r.mos);
        // the same, with 5 lost in the first run and 3 in the replay
        let mut s = StreamStats::new(8000);
        feed(
            &mut s,
            t0,
            0,
            7,
            seqs(60000, 1000, &[100, 200, 300, 400, 500]),
        );
        feed(&mut s, t0, 20_000, 7, seqs(60000, 1000, &[10, 20, 990]));
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (1992, 8));
        assert!((r.loss_pct - 0.4).abs() < 0.01, "{}", r.loss_pct);
        // a short prompt replayed: its packets are seen again, nothing is lost
        let mut s = StreamStats::new(8000);
        feed(&mut s, t0, 0, 7, seqs(500, 50, &[]));
        feed(&mut s, t0, 1_000, 7, seqs(500, 1000, &[]));
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (1050, 0));
        assert_eq!(
            s.duplicates(),
            49,
            "the first packet predates the validated stream"
        );
    }

    #[test]
    fn a_restarted_encoder_with_a_new_random_sequence() {
        let t0 = Instant::now();
        // same SSRC, the sequence jumps 18,500 ahead (well under half the space)
        let mut s = StreamStats::new(8000);
        feed(&mut s, t0, 0, 7, seqs(1000, 500, &[]));
        feed(&mut s, t0, 10_000, 7, seqs(20000, 1000, &[]));
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (1500, 0));
        assert!(r.mos > 4.3, "{}", r.mos);
        // same SSRC, the sequence jumps back, and the new run loses 4 packets
        let mut s = StreamStats::new(8000);
        feed(&mut s, t0, 0, 7, seqs(40000, 500, &[]));
        feed(
            &mut s,
            t0,
            10_000,
            7,
            seqs(123, 1000, &[100, 101, 102, 500]),
        );
        assert_eq!(s.report("PCMU").lost, 4);
        // a new SSRC whose sequence lands just ahead of the old one: no phantom gap
        let mut s = StreamStats::new(8000);
        feed(&mut s, t0, 0, 7, seqs(5000, 500, &[]));
        feed(&mut s, t0, 10_000, 8, seqs(5600, 500, &[250]));
        assert_eq!(s.report("PCMU").lost, 1);
    }

    #[test]
    fn loss_across_the_wrap_at_65535() {
        let t0 = Instant::now();
        let mut s = StreamStats::new(8000);
        // 65400 … 65535, 0 … 263; lost: 65535 and 0 (indices 135, 136) and 10 (index 146)
        feed(&mut s, t0, 0, 7, seqs(65400, 400, &[135, 136, 146]));
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (397, 3));
        // twice round the space, nothing lost
        let mut s = StreamStats::new(8000);
        feed(&mut s, t0, 0, 7, seqs(30000, 65535, &[]));
        feed(&mut s, t0, 65535 * 20, 7, seqs(29999, 65535, &[]));
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (131_070, 0));
    }

    #[test]
    fn real_loss_is_counted_and_a_lone_jump_is_not_believed() {
        let t0 = Instant::now();
        // a burst of 50 lost, then 2,998 lost (a jump of 2,999: just under MAX_DROPOUT)
        let burst = |jump: u16| {
            let mut all = seqs(0, 1000, &[]);
            all.retain(|&q| !(300..350).contains(&q));
            all.extend(seqs(999 + jump, 100, &[]));
            let mut s = StreamStats::new(8000);
            feed(&mut s, t0, 0, 7, all);
            s.report("PCMU").lost
        };
        assert_eq!(burst(2999), 50 + 2998);
        // a jump of MAX_DROPOUT (60 s of 20 ms packets) followed in sequence is a restart
        assert_eq!(burst(3000), 50);
        // one stray packet far ahead does not restart the count, nor add loss
        let mut s = StreamStats::new(8000);
        let mut all = seqs(0, 500, &[]);
        all.push(30_000);
        all.extend(seqs(500, 500, &[]));
        feed(&mut s, t0, 0, 7, all);
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (1001, 0));
        // 10 % loss stays 10 %
        let r = run(Some(10), 0, 2001);
        assert_eq!(r.lost, 200);
        assert!((r.loss_pct - 10.0).abs() < 0.01, "{}", r.loss_pct);
    }

    #[test]
    fn misordered_packets_are_not_loss() {
        let t0 = Instant::now();
        let mut s = StreamStats::new(8000);
        // pairs swapped, and one packet 50 late
        let mut order: Vec<u16> = (0..1000u16)
            .map(|i| if i % 2 == 0 { i + 1 } else { i - 1 })
            .collect();
        order.retain(|&q| q != 400);
        order.insert(450, 400);
        feed(&mut s, t0, 0, 7, order);
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (1000, 0));
        // a packet more than MAX_MISORDER late is lost for the listener and counted so
        let mut s = StreamStats::new(8000);
        let mut order = seqs(0, 1000, &[400]);
        order.insert(550, 400);
        feed(&mut s, t0, 0, 7, order);
        assert_eq!(s.report("PCMU").lost, 1);
    }

    #[test]
    fn duplicates_do_not_hide_loss() {
        let t0 = Instant::now();
        let mut s = StreamStats::new(8000);
        // every packet sent twice, 3 packets lost (both copies)
        let once = seqs(65000, 1000, &[100, 600, 601]);
        let twice: Vec<u16> = once.iter().flat_map(|&q| [q, q]).collect();
        feed(&mut s, t0, 0, 7, twice);
        let r = s.report("PCMU");
        assert_eq!((r.packets, r.lost), (2 * 997, 3));
        assert_eq!(s.duplicates(), 996, "the first packet is on probation");
        // a late duplicate (the copy of a packet 20 back) is not a packet received
        let mut s = StreamStats::new(8000);
        let mut order = seqs(0, 500, &[300]);
        order.insert(350, 320);
        feed(&mut s, t0, 0, 7, order);
        assert_eq!((s.report("PCMU").lost, s.duplicates()), (1, 1));
    }
}

//! Quality of one RTP stream (one direction of one leg), as pure code with time passed in:
//! packets, bytes, loss from sequence numbers (RFC 3550 A.3), interarrival jitter (A.8), RTT
//! and remote loss from RTCP receiver/sender reports when present, and a MOS estimate from a
//! simplified ITU-T G.107 E-model that needs no RTCP at all.

use std::time::{Duration, Instant};

/// Running statistics of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    packets: u64,
    bytes: u64,
    base_seq: u16,
    max_seq: u16,
    cycles: u32,
    started: bool,
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
    /// Packets lost, from sequence numbers.
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
        // RFC 3550 A.1/A.3: extended highest sequence number (no probation: DCE relays known streams).
        if !self.started {
            self.started = true;
            self.base_seq = seq;
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles += 1;
                }
                self.max_seq = seq;
            }
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

    /// The report for the CDR; `codec` names the codec for the MOS estimate.
    pub fn report(&self, codec: &str) -> StreamReport {
        let expected = if self.started {
            (self.cycles as u64 * 65536 + self.max_seq as u64).saturating_sub(self.base_seq as u64)
                + 1
        } else {
            0
        };
        let lost = expected.saturating_sub(self.packets);
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
}

//! One stream's state on the relay thread: what each side's SDP announced, where each of its
//! sockets is latched, what it sent, and the timeout clock (no locks: only the relay thread
//! touches it).
//!
//! Which packets a side's sockets accept (per socket: RTP and RTCP separately):
//!
//! - By default only packets from the exact address *and port* that side's SDP signalled: RTP
//!   from the m-line's port, RTCP from `a=rtcp` if present, else RTP port + 1 (the RTP port with
//!   rtcp-mux). Anyone else — even on the signalled IP — is dropped and counted, before or after
//!   the party's first packet, so nobody can latch a leg by spraying DCE's ports first
//!   (the class of rtpengine's CVE-2025-53399).
//! - With `latch_any_source` (peers behind NAT) the first packet from anywhere latches the
//!   socket, and DCE sends that side's media there. A packet from the signalled address always
//!   takes the latch back. After that, `strict_source` drops (and counts) packets from any other
//!   address; without it the latch follows the latest sender.
//!
//! A dropped packet is never forwarded to a party nor answered.

use crate::dtmf::{self, Detector};
use crate::engine::{MediaReport, Side};
use crate::sdp::Stream;
use crate::stats::StreamStats;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The last RTP packet relayed to a leg: where DCE's own telephone-events continue from.
#[derive(Debug, Clone, Copy)]
struct Out {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    at: Instant,
}

/// A digit DCE plays to a leg as RFC 4733 events (a SIP INFO from the other leg).
#[derive(Debug, Clone)]
struct Injection {
    event: u8,
    /// Its whole duration, in timestamp units.
    total: u16,
    /// The duration the last packet sent carried (0: nothing sent yet).
    sent: u16,
    timestamp: u32,
    next_at: Instant,
}

/// Digits queued toward a leg at most (a peer sending INFOs faster than they play is cut).
pub(crate) const MAX_QUEUED_DIGITS: usize = 16;
/// How often an event's packet is repeated with its growing duration (RFC 4733 §2.5.1.2).
const EVENT_UPDATE: Duration = Duration::from_millis(50);

/// Relay settings (`[media]`).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address the media sockets bind to.
    pub bind_ip: IpAddr,
    /// RTP ports from here …
    pub port_min: u16,
    /// … to here.
    pub port_max: u16,
    /// No RTP either way this long after answer: report a timeout.
    pub rtp_timeout: Duration,
    /// With `latch_any_source`: once a socket is latched, drop (and count) packets from any
    /// other address instead of moving the latch to them. Without `latch_any_source` a socket
    /// only ever accepts the signalled address, whatever this says.
    pub strict_source: bool,
    /// Accept and latch to the first packet from anywhere (peers behind NAT), not only from the
    /// address and port the SDP signalled.
    pub latch_any_source: bool,
}

/// Per side: what its SDP announced, where it was latched, what it sent.
pub(crate) struct Leg {
    announced: Option<Stream>,
    rtp_from: Option<SocketAddr>,
    rtcp_from: Option<SocketAddr>,
    stats: StreamStats,
    /// The telephone-events (RFC 4733) this side sent.
    dtmf: Detector,
    pub(crate) forwarded_out: u64,
    /// The last RTP relayed to this side.
    out: Option<Out>,
    /// Packets DCE added to the stream relayed to this side (its telephone-events): every
    /// relayed packet of that SSRC after them has its sequence number moved up by this.
    seq_shift: u16,
    /// Digits to play to this side; the first is playing.
    inject: VecDeque<Injection>,
}

impl Leg {
    /// RTP packet `pkt` is relayed to this side: its sequence number moved past the packets
    /// DCE added to this SSRC, and remembered.
    fn relaying(&mut self, pkt: &mut [u8], now: Instant) {
        if pkt.len() < 12 {
            return;
        }
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        if self.out.is_some_and(|o| o.ssrc != ssrc) {
            self.seq_shift = 0; // another source: DCE added nothing to it
        }
        let mut seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        if self.seq_shift != 0 {
            seq = seq.wrapping_add(self.seq_shift);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        }
        self.out = Some(Out {
            ssrc,
            seq,
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            at: now,
        });
    }

    fn new() -> Leg {
        Leg {
            announced: None,
            rtp_from: None,
            rtcp_from: None,
            stats: StreamStats::new(8000),
            dtmf: Detector::new(8000),
            forwarded_out: 0,
            out: None,
            seq_shift: 0,
            inject: VecDeque::new(),
        }
    }

    /// Where to send this side's media: where it sends from, else where its SDP said.
    fn rtp_dest(&self) -> Option<SocketAddr> {
        self.rtp_from
            .or(self.announced.as_ref().and_then(|a| a.rtp))
    }

    fn rtcp_dest(&self) -> Option<SocketAddr> {
        self.rtcp_from
            .or(self.announced.as_ref().and_then(|a| a.rtcp))
    }
}

/// The per-stream state the packet path reads and writes (task-local, no locks).
pub(crate) struct TaskState {
    cfg: RelayConfig,
    pub(crate) legs: [Leg; 2],
    foreign: u64,
    pub(crate) answered: Option<Instant>,
    last_packet: Option<Instant>,
    timed_out: bool,
}

const A: usize = 0;
const B: usize = 1;

/// RFC 5761: with rtcp-mux, RTCP (PT 200–204) arrives on the RTP port.
pub(crate) fn is_rtcp(which: usize, pkt: &[u8]) -> bool {
    which % 2 == 1 || (pkt.len() >= 2 && (200..=204).contains(&pkt[1]))
}

/// The same transport address (an IPv4-mapped IPv6 address equals its IPv4 form).
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

impl TaskState {
    pub(crate) fn new(cfg: RelayConfig) -> TaskState {
        TaskState {
            cfg,
            legs: [Leg::new(), Leg::new()],
            foreign: 0,
            answered: None,
            last_packet: None,
            timed_out: false,
        }
    }

    pub(crate) fn remote(&mut self, side: Side, stream: Stream) {
        let leg = &mut self.legs[if side == Side::A { A } else { B }];
        if leg.announced.as_ref().map(|a| (a.rtp, a.rtcp)) != Some((stream.rtp, stream.rtcp)) {
            // a new party or address on this side: latch afresh
            leg.rtp_from = None;
            leg.rtcp_from = None;
        }
        if leg.stats.packets() == 0 {
            leg.stats = StreamStats::new(stream.clock_rate);
        }
        if let Some((_, rate)) = stream.telephone_event {
            if leg.dtmf.is_empty() {
                leg.dtmf = Detector::new(rate);
            }
        }
        leg.announced = Some(stream);
    }

    /// Play `digit` for `duration_ms` to side `toward` (0 carrier, 1 buyer) as RFC 4733 events,
    /// in the stream relayed to it; counted as a digit the other side sent. False (nothing
    /// queued) when that side announced no telephone-event, has no address yet, or has
    /// [`MAX_QUEUED_DIGITS`] waiting, or `digit` is no DTMF digit.
    pub(crate) fn queue_dtmf(
        &mut self,
        toward: usize,
        digit: char,
        duration_ms: u32,
        now: Instant,
    ) -> bool {
        let leg = &mut self.legs[toward];
        let (Some(event), Some((_, rate)), Some(_)) = (
            dtmf::event_of(digit),
            leg.announced.as_ref().and_then(|a| a.telephone_event),
            leg.rtp_dest(),
        ) else {
            return false;
        };
        if leg.inject.len() >= MAX_QUEUED_DIGITS {
            return false;
        }
        let ms = duration_ms.clamp(40, 5000);
        let total = (u64::from(ms) * u64::from(rate) / 1000).min(u64::from(u16::MAX)) as u16;
        // a digit behind another is timed when that one ends
        leg.inject.push_back(Injection {
            event,
            total,
            sent: 0,
            timestamp: 0,
            next_at: now,
        });
        self.legs[1 - toward]
            .dtmf
            .push(digit.to_ascii_uppercase(), ms);
        true
    }

    /// When the next telephone-event packet DCE plays is due.
    pub(crate) fn next_injection(&self) -> Option<Instant> {
        self.legs
            .iter()
            .filter_map(|l| l.inject.front().map(|i| i.next_at))
            .min()
    }

    /// The telephone-event packets due at `now`: (packet, destination, socket index).
    pub(crate) fn due_injections(
        &mut self,
        now: Instant,
        out: &mut Vec<([u8; 16], SocketAddr, usize)>,
    ) {
        for (side, leg) in self.legs.iter_mut().enumerate() {
            let (Some(dest), Some((pt, rate))) = (
                leg.rtp_dest(),
                leg.announced.as_ref().and_then(|a| a.telephone_event),
            ) else {
                leg.inject.clear();
                continue;
            };
            while let Some(inj) = leg.inject.front_mut() {
                if inj.next_at > now {
                    break;
                }
                let first = inj.sent == 0;
                if first {
                    // the event's timestamp: where the relayed stream is now
                    inj.timestamp = leg.out.map_or(0, |o| {
                        let ms = now.saturating_duration_since(o.at).as_millis() as u64;
                        o.timestamp
                            .wrapping_add((ms * u64::from(rate) / 1000) as u32)
                    });
                }
                let step = (EVENT_UPDATE.as_millis() as u64 * u64::from(rate) / 1000) as u16;
                let duration = inj.sent.saturating_add(step).min(inj.total);
                let end = duration >= inj.total;
                let (event, timestamp) = (inj.event, inj.timestamp);
                inj.sent = duration;
                inj.next_at = now + EVENT_UPDATE;
                // the end is sent three times (RFC 4733 §2.5.1.4)
                for _ in 0..if end { 3 } else { 1 } {
                    let o = leg.out.get_or_insert(Out {
                        ssrc: 0x4443_4500 ^ (side as u32),
                        seq: 0x1000,
                        timestamp,
                        at: now,
                    });
                    o.seq = o.seq.wrapping_add(1);
                    leg.seq_shift = leg.seq_shift.wrapping_add(1);
                    let p = dtmf::packet(pt, first, o.seq, timestamp, o.ssrc, event, end, duration);
                    out.push((p, dest, 2 * side));
                    leg.forwarded_out += 1;
                }
                if end {
                    leg.inject.pop_front();
                    if let Some(next) = leg.inject.front_mut() {
                        next.next_at = now + EVENT_UPDATE;
                    }
                } else {
                    break;
                }
            }
        }
    }

    /// True once, when RTP has been missing for the timeout after answer.
    pub(crate) fn check_timeout(&mut self) -> bool {
        if let (Some(ans), false) = (self.answered, self.timed_out) {
            let since = self.last_packet.map(|l| l.max(ans)).unwrap_or(ans);
            if since.elapsed() >= self.cfg.rtp_timeout {
                self.timed_out = true;
                return true;
            }
        }
        false
    }

    /// Account a packet from `src` on socket `which`; where to send it (and from which socket).
    /// A telephone-event (RFC 4733) is read for its digit and, when the other side announced
    /// telephone-event under another payload type, leaves with that one.
    pub(crate) fn on_packet(
        &mut self,
        which: usize,
        pkt: &mut [u8],
        src: SocketAddr,
    ) -> Option<(SocketAddr, usize)> {
        let side = which / 2;
        let other = 1 - side;
        let rtcp = is_rtcp(which, pkt);
        if !self.admit(side, src, which % 2 == 1) {
            return None;
        }
        let now = Instant::now();
        if rtcp {
            self.legs[side].stats.on_rtcp(pkt, None);
        } else {
            if self.legs[side].stats.on_rtp(pkt, now) {
                self.last_packet = Some(now);
            }
            let event_pt = |l: &Leg| l.announced.as_ref().and_then(|a| a.telephone_event);
            if let Some((pt, _)) = event_pt(&self.legs[side]) {
                if dtmf::payload_type(pkt) == Some(pt) {
                    self.legs[side].dtmf.on_packet(pkt);
                    match event_pt(&self.legs[other]) {
                        Some((theirs, _)) if theirs != pt => dtmf::set_payload_type(pkt, theirs),
                        _ => {}
                    }
                }
            }
            self.legs[other].relaying(pkt, now);
        }
        if which % 2 == 1 {
            self.legs[other].rtcp_dest().map(|d| (d, 2 * other + 1))
        } else {
            self.legs[other].rtp_dest().map(|d| (d, 2 * other))
        }
    }

    /// Accept a packet from `src` on side `s`'s RTP socket (`rtcp_socket` false) or RTCP
    /// socket, latching as the module doc says? A packet refused is counted.
    fn admit(&mut self, s: usize, src: SocketAddr, rtcp_socket: bool) -> bool {
        let (latch_any, strict) = (self.cfg.latch_any_source, self.cfg.strict_source);
        let leg = &mut self.legs[s];
        let signalled = leg
            .announced
            .as_ref()
            .and_then(|a| if rtcp_socket { a.rtcp } else { a.rtp });
        let latched = if rtcp_socket {
            &mut leg.rtcp_from
        } else {
            &mut leg.rtp_from
        };
        let accept = if signalled.is_some_and(|sig| same_addr(sig, src)) {
            // the signalled address is always good, and takes the latch back
            *latched = Some(src);
            true
        } else if !latch_any {
            false
        } else {
            match *latched {
                Some(l) if same_addr(l, src) => true,
                Some(_) if strict => false,
                _ => {
                    *latched = Some(src);
                    true
                }
            }
        };
        if !accept {
            self.foreign += 1;
        }
        accept
    }

    pub(crate) fn report(&self) -> MediaReport {
        let codec = self.legs[A]
            .announced
            .as_ref()
            .and_then(|s| s.codec.clone())
            .or_else(|| {
                self.legs[B]
                    .announced
                    .as_ref()
                    .and_then(|s| s.codec.clone())
            });
        let c = codec.as_deref().unwrap_or("PCMU");
        MediaReport {
            carrier_in: self.legs[A].stats.report(c),
            buyer_in: self.legs[B].stats.report(c),
            to_carrier: self.legs[A].forwarded_out,
            to_buyer: self.legs[B].forwarded_out,
            foreign_dropped: self.foreign,
            codec,
            dtmf_from_carrier: self.legs[A].dtmf.digits(),
            dtmf_from_buyer: self.legs[B].dtmf.digits(),
            recording: None,
            recording_dropped: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(strict_source: bool, latch_any_source: bool) -> RelayConfig {
        RelayConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_min: 30400,
            port_max: 30499,
            rtp_timeout: Duration::from_secs(30),
            strict_source,
            latch_any_source,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn stream(rtp: &str, rtcp: &str) -> Stream {
        Stream {
            kind: "audio".into(),
            rtp: Some(addr(rtp)),
            rtcp: Some(addr(rtcp)),
            rtcp_mux: false,
            codec: Some("PCMU".into()),
            clock_rate: 8000,
            telephone_event: None,
        }
    }

    /// A relay's stream state with the carrier at 10.0.0.1:4000 (RTCP at `a_rtcp`) and the
    /// buyer at 10.0.0.2:5000/5001.
    fn state(strict: bool, latch_any: bool, a_rtcp: &str) -> TaskState {
        let mut st = TaskState::new(cfg(strict, latch_any));
        st.remote(Side::A, stream("10.0.0.1:4000", a_rtcp));
        st.remote(Side::B, stream("10.0.0.2:5000", "10.0.0.2:5001"));
        st
    }

    const RTP: &[u8] = &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    const RTCP: &[u8] = &[0x80, 201, 0, 1, 0, 0, 0, 9];

    #[test]
    fn only_the_signalled_address_and_port_is_accepted() {
        for strict in [true, false] {
            let mut st = state(strict, false, "10.0.0.1:4001");
            // before the carrier sent anything: same IP, other ports, on both sockets
            assert_eq!(
                st.on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4002")),
                None
            );
            assert_eq!(
                st.on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:4000")),
                None,
                "RTP port to RTCP"
            );
            assert_eq!(
                st.on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:9")),
                None
            );
            assert_eq!(
                st.on_packet(2, &mut RTP.to_vec(), addr("10.0.0.2:5002")),
                None
            );
            assert_eq!(
                st.on_packet(3, &mut RTCP.to_vec(), addr("10.0.0.2:5003")),
                None
            );
            assert_eq!(
                (st.foreign, st.legs[A].rtp_from, st.legs[A].rtcp_from),
                (5, None, None)
            );
            // the parties themselves
            assert_eq!(
                st.on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4000")),
                Some((addr("10.0.0.2:5000"), 2))
            );
            assert_eq!(
                st.on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:4001")),
                Some((addr("10.0.0.2:5001"), 3))
            );
            assert_eq!(
                st.on_packet(2, &mut RTP.to_vec(), addr("10.0.0.2:5000")),
                Some((addr("10.0.0.1:4000"), 0))
            );
            // after latching, the same stranger is still refused and nothing moved
            assert_eq!(
                st.on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4002")),
                None
            );
            assert_eq!(
                st.on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:4002")),
                None
            );
            assert_eq!(st.foreign, 7, "strict_source {strict}");
            assert_eq!(st.legs[A].rtp_dest(), Some(addr("10.0.0.1:4000")));
            assert_eq!(st.legs[A].rtcp_dest(), Some(addr("10.0.0.1:4001")));
            assert_eq!(st.legs[A].stats.packets() + st.legs[B].stats.packets(), 2);
        }
    }

    #[test]
    fn rtcp_is_expected_where_a_rtcp_says() {
        let mut st = state(true, false, "10.0.0.1:7000");
        assert_eq!(
            st.on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:4001")),
            None
        );
        assert_eq!(
            st.on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:7000")),
            Some((addr("10.0.0.2:5001"), 3))
        );
        assert_eq!(st.foreign, 1);
    }

    #[test]
    fn latch_any_source_latches_the_first_and_the_signalled_address_takes_it_back() {
        let mut st = state(true, true, "10.0.0.1:4001");
        // the carrier behind NAT sends from elsewhere: latched, the buyer's media goes there
        let nat = addr("203.0.113.9:30000");
        assert!(st.on_packet(0, &mut RTP.to_vec(), nat).is_some());
        assert_eq!(
            st.on_packet(2, &mut RTP.to_vec(), addr("10.0.0.2:5000")),
            Some((nat, 0))
        );
        // strict: another sender is refused
        assert_eq!(
            st.on_packet(0, &mut RTP.to_vec(), addr("198.51.100.7:1234")),
            None
        );
        assert_eq!(st.legs[A].rtp_dest(), Some(nat));
        // the signalled address takes the latch back; then the first latch is a stranger
        assert!(st
            .on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4000"))
            .is_some());
        assert_eq!(st.legs[A].rtp_dest(), Some(addr("10.0.0.1:4000")));
        assert_eq!(st.on_packet(0, &mut RTP.to_vec(), nat), None);
        assert_eq!(st.foreign, 2);
        // RTCP latches on its own socket
        assert!(st
            .on_packet(1, &mut RTCP.to_vec(), addr("203.0.113.9:30001"))
            .is_some());
        assert_eq!(st.legs[A].rtcp_dest(), Some(addr("203.0.113.9:30001")));
    }

    #[test]
    fn without_strict_source_the_any_source_latch_follows_the_latest_sender() {
        let mut st = state(false, true, "10.0.0.1:4001");
        assert!(st
            .on_packet(0, &mut RTP.to_vec(), addr("203.0.113.9:30000"))
            .is_some());
        assert!(st
            .on_packet(0, &mut RTP.to_vec(), addr("203.0.113.9:30002"))
            .is_some());
        assert_eq!(st.legs[A].rtp_dest(), Some(addr("203.0.113.9:30002")));
        assert_eq!(st.foreign, 0);
    }

    #[test]
    fn a_new_sdp_moves_the_accepted_address() {
        let mut st = state(true, false, "10.0.0.1:4001");
        assert!(st
            .on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4000"))
            .is_some());
        // re-INVITE: the carrier moved to another port
        st.remote(Side::A, stream("10.0.0.1:4100", "10.0.0.1:4101"));
        assert_eq!(
            st.on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4000")),
            None
        );
        assert!(st
            .on_packet(0, &mut RTP.to_vec(), addr("10.0.0.1:4100"))
            .is_some());
        assert!(st
            .on_packet(1, &mut RTCP.to_vec(), addr("10.0.0.1:4101"))
            .is_some());
        // an IPv4-mapped source on a dual-stack socket is the same address
        assert!(st
            .on_packet(0, &mut RTP.to_vec(), addr("[::ffff:10.0.0.1]:4100"))
            .is_some());
        assert_eq!(st.foreign, 1);
    }

    /// An RFC 4733 end packet for `digit` (event number) with payload type `pt`.
    fn event(pt: u8, ts: u32, ev: u8) -> Vec<u8> {
        let mut p = vec![0x80, 0x80 | pt, 0, 7];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 9, ev, 0x80 | 10, 0x03, 0x20]);
        p
    }

    #[test]
    fn telephone_events_are_read_per_side_and_leave_with_the_other_sides_payload_type() {
        let mut st = TaskState::new(cfg(true, false));
        let with_te = |rtp: &str, rtcp: &str, te: Option<u8>| Stream {
            telephone_event: te.map(|pt| (pt, 8000)),
            ..stream(rtp, rtcp)
        };
        st.remote(
            Side::A,
            with_te("10.0.0.1:4000", "10.0.0.1:4001", Some(101)),
        );
        st.remote(Side::B, with_te("10.0.0.2:5000", "10.0.0.2:5001", Some(96)));
        let carrier = addr("10.0.0.1:4000");
        let buyer = addr("10.0.0.2:5000");
        // the carrier's 101 leaves as the buyer's 96, marker kept; three ends count once
        for _ in 0..3 {
            let mut p = event(101, 800, 7);
            assert!(st.on_packet(0, &mut p, carrier).is_some());
            assert_eq!(p[1], 0x80 | 96);
        }
        let mut p = event(101, 1600, 11);
        st.on_packet(0, &mut p, carrier);
        // audio is not touched
        let mut audio = RTP.to_vec();
        st.on_packet(0, &mut audio, carrier);
        assert_eq!(audio, RTP);
        // the buyer's 96 goes back as 101
        let mut p = event(96, 4000, 0);
        st.on_packet(2, &mut p, buyer);
        assert_eq!(p[1] & 0x7f, 101);
        let r = st.report();
        let digits = |d: &[crate::dtmf::Digit]| d.iter().map(|d| d.digit).collect::<String>();
        assert_eq!(digits(&r.dtmf_from_carrier), "7#");
        assert_eq!(r.dtmf_from_carrier[0].duration_ms, 100);
        assert_eq!(digits(&r.dtmf_from_buyer), "0");

        // a side that did not announce telephone-event: relayed unchanged, nothing read
        let mut st = TaskState::new(cfg(true, false));
        st.remote(Side::A, with_te("10.0.0.1:4000", "10.0.0.1:4001", None));
        st.remote(Side::B, with_te("10.0.0.2:5000", "10.0.0.2:5001", Some(96)));
        let mut p = event(101, 800, 7);
        st.on_packet(0, &mut p, carrier);
        assert_eq!(p[1] & 0x7f, 101);
        assert!(st.report().dtmf_from_carrier.is_empty());
        // the other side without it: read, sent on as it came
        let mut p = event(96, 800, 3);
        st.on_packet(2, &mut p, buyer);
        assert_eq!(p[1] & 0x7f, 96);
        assert_eq!(digits(&st.report().dtmf_from_buyer), "3");
    }
}

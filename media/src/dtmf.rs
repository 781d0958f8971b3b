//! RFC 4733 telephone-events: what a leg sent (digit and duration), read off the packets the
//! relay forwards unchanged. Pure: the packet is passed in.
//!
//! An event is one RTP timestamp: every packet of one key press carries the press's start
//! timestamp and its growing duration; the last carries the E bit and is usually sent three
//! times (RFC 4733 §2.5.1.4). So a digit is recorded once per timestamp: when its first E packet
//! arrives, or — when every end packet was lost — when a packet with another timestamp arrives,
//! or when the call's report is taken.

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    /// How long it was held, ms (the event's last duration at its clock rate).
    pub duration_ms: u32,
}

/// The most digits kept per leg: a leg that sends more is hostile or broken, and the CDR must
/// stay bounded.
pub const MAX_DIGITS: usize = 64;

/// The DTMF events (0–15) RFC 4733 §3.2 names.
fn digit_of(event: u8) -> Option<char> {
    b"0123456789*#ABCD"
        .get(usize::from(event))
        .map(|&c| c as char)
}

/// Where an event stands.
#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    digit: char,
    duration: u16,
    recorded: bool,
}

/// One leg's telephone-events.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    current: Option<Current>,
    digits: Vec<Digit>,
    clock_rate: u32,
}

impl Detector {
    /// For events at `clock_rate` Hz (`telephone-event/8000`: 8000).
    pub fn new(clock_rate: u32) -> Detector {
        Detector {
            current: None,
            digits: Vec::new(),
            clock_rate: clock_rate.max(1),
        }
    }

    /// A telephone-event RTP packet (`rtp` is the whole packet, header included). Packets that
    /// are too short or name no DTMF digit (events 16 and up: tones, flash) are ignored.
    pub fn on_packet(&mut self, rtp: &[u8]) {
        let Some((_, timestamp, payload)) = payload(rtp) else {
            return;
        };
        let [event, flags, d0, d1, ..] = *payload else {
            return;
        };
        let Some(digit) = digit_of(event) else {
            return;
        };
        let end = flags & 0x80 != 0;
        let duration = u16::from_be_bytes([d0, d1]);
        match &mut self.current {
            Some(c) if c.timestamp == timestamp => {
                // the same press: a longer duration, or its end (retransmitted ends change
                // nothing once recorded)
                if !c.recorded {
                    c.duration = c.duration.max(duration);
                }
            }
            _ => {
                self.settle();
                self.current = Some(Current {
                    timestamp,
                    digit,
                    duration,
                    recorded: false,
                });
            }
        }
        if end {
            self.settle();
        }
    }

    /// Record the current press if it is not yet.
    fn settle(&mut self) {
        let Some(c) = &mut self.current else { return };
        if c.recorded {
            return;
        }
        c.recorded = true;
        if self.digits.len() < MAX_DIGITS {
            self.digits.push(Digit {
                digit: c.digit,
                duration_ms: (u64::from(c.duration) * 1000 / u64::from(self.clock_rate)) as u32,
            });
        }
    }

    /// A digit this leg sent by other means (a SIP INFO DCE turned into RFC 4733).
    pub fn push(&mut self, digit: char, duration_ms: u32) {
        self.settle();
        if self.digits.len() < MAX_DIGITS {
            self.digits.push(Digit { digit, duration_ms });
        }
    }

    /// Nothing heard yet.
    pub fn is_empty(&self) -> bool {
        self.digits.is_empty() && self.current.is_none()
    }

    /// The digits so far, in order (a press still held counts, with its duration so far).
    pub fn digits(&self) -> Vec<Digit> {
        let mut d = self.clone();
        d.settle();
        d.digits
    }
}

/// An RTP packet's payload type, timestamp and payload (after CSRCs and any header
/// extension, before padding), or `None` when it is not RTP version 2 or is cut short. Shared
/// by the DTMF detector and the recorder.
pub(crate) fn payload(rtp: &[u8]) -> Option<(u8, u32, &[u8])> {
    if rtp.len() < 12 || rtp[0] >> 6 != 2 {
        return None;
    }
    let timestamp = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
    let mut at = 12 + 4 * usize::from(rtp[0] & 0x0f);
    if rtp[0] & 0x10 != 0 {
        let ext = rtp.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = rtp.len();
    if rtp[0] & 0x20 != 0 {
        // padding: the last byte says how much
        end = end.checked_sub(usize::from(*rtp.last()?))?;
    }
    Some((rtp[1] & 0x7f, timestamp, rtp.get(at..end)?))
}

/// The RFC 4733 event number of a DTMF digit (`0`–`9`, `*`, `#`, `A`–`D`; lower case too).
pub fn event_of(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase() as u8;
    b"0123456789*#ABCD"
        .iter()
        .position(|&c| c == d)
        .map(|i| i as u8)
}

/// One RFC 4733 packet: `marker` on the first of an event, `end` on its last ones.
#[allow(clippy::too_many_arguments)]
pub fn packet(
    pt: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    event: u8,
    end: bool,
    duration: u16,
) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 0x80;
    p[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&timestamp.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p[12] = event;
    p[13] = (u8::from(end) << 7) | 10; // volume: -10 dBm0
    p[14..16].copy_from_slice(&duration.to_be_bytes());
    p
}

/// Set packet `rtp`'s payload type to `pt`, keeping its marker bit.
pub fn set_payload_type(rtp: &mut [u8], pt: u8) {
    if let Some(b) = rtp.get_mut(1) {
        *b = (*b & 0x80) | (pt & 0x7f);
    }
}

/// The payload type of RTP packet `rtp`.
pub fn payload_type(rtp: &[u8]) -> Option<u8> {
    rtp.get(1).map(|b| b & 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RFC 4733 packet: PT 101, `seq`, `ts`, event, end bit, duration.
    pub(crate) fn event(seq: u16, ts: u32, ev: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut p = vec![0x80, 101];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.push(ev);
        p.push(if end { 0x80 | 10 } else { 10 });
        p.extend_from_slice(&duration.to_be_bytes());
        p
    }

    /// A press of `ev` at `ts`: packets every 20 ms (160 units) to `units`, then 3 ends.
    fn press(seq: &mut u16, ts: u32, ev: u8, units: u16) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut d = 160;
        while d < units {
            v.push(event(*seq, ts, ev, false, d));
            *seq += 1;
            d += 160;
        }
        for _ in 0..3 {
            v.push(event(*seq, ts, ev, true, units));
            *seq += 1;
        }
        v
    }

    #[test]
    fn each_press_is_one_digit_with_its_duration_whatever_the_retransmitted_ends() {
        let mut d = Detector::new(8000);
        let mut seq = 1;
        for p in press(&mut seq, 1000, 1, 800)
            .into_iter()
            .chain(press(&mut seq, 3000, 11, 1280))
            .chain(press(&mut seq, 6000, 0, 640))
        {
            d.on_packet(&p);
        }
        assert_eq!(
            d.digits(),
            [
                Digit {
                    digit: '1',
                    duration_ms: 100
                },
                Digit {
                    digit: '#',
                    duration_ms: 160
                },
                Digit {
                    digit: '0',
                    duration_ms: 80
                },
            ]
        );
    }

    #[test]
    fn a_press_whose_ends_were_lost_still_counts_and_a_held_key_counts_so_far() {
        let mut d = Detector::new(8000);
        d.on_packet(&event(1, 100, 5, false, 160));
        d.on_packet(&event(2, 100, 5, false, 320));
        // the ends of 5 were lost; the next press begins
        d.on_packet(&event(3, 900, 9, false, 160));
        assert_eq!(
            d.digits(),
            [
                Digit {
                    digit: '5',
                    duration_ms: 40
                },
                Digit {
                    digit: '9',
                    duration_ms: 20
                }
            ]
        );
        // digits() does not close the held press: its end still lengthens it
        d.on_packet(&event(4, 900, 9, true, 480));
        assert_eq!(d.digits()[1].duration_ms, 60);
        assert_eq!(d.digits().len(), 2);
    }

    #[test]
    fn hostile_and_foreign_packets_are_ignored_and_the_list_is_bounded() {
        let mut d = Detector::new(8000);
        for n in 0..20 {
            let p = event(1, 7, 3, true, 800);
            d.on_packet(&p[..n.min(p.len() - 1)]); // every truncation
        }
        d.on_packet(&event(1, 7, 16, true, 800)); // a tone, not a digit
        d.on_packet(&[0x40; 16]); // RTP version 1
        assert!(d.digits().is_empty());
        for i in 0..200u32 {
            d.on_packet(&event(i as u16, i * 1000, (i % 16) as u8, true, 800));
        }
        assert_eq!(d.digits().len(), MAX_DIGITS);
        // padding and CSRCs are stepped over
        let mut p = event(1, 5_000_000, 2, true, 800);
        p[0] = 0x80 | 0x20 | 0x01; // padding, one CSRC
        p.splice(12..12, [0, 0, 0, 1]);
        p.extend_from_slice(&[0, 0, 3]);
        let mut d = Detector::new(8000);
        d.on_packet(&p);
        assert_eq!(d.digits()[0].digit, '2');
    }

    #[test]
    fn the_payload_type_is_mapped_and_the_marker_kept() {
        let mut p = event(1, 7, 3, false, 160);
        p[1] |= 0x80;
        set_payload_type(&mut p, 96);
        assert_eq!((p[1] & 0x80, payload_type(&p)), (0x80, Some(96)));
    }
}

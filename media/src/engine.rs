//! What the call controller asks of the media layer. The controller is sans-IO, so this is a
//! trait: [`crate::Relay`] implements it with sockets; tests implement it in memory.

use crate::sdp::Stream;
use crate::stats::StreamReport;

/// A call's media, as the engine knows it.
pub type MediaId = u64;

/// Which leg: A = carrier, B = buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The carrier's leg.
    A,
    /// The buyer's leg.
    B,
}

/// Why media could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// No free port pairs.
    #[error("RTP port pool exhausted")]
    PortsExhausted,
    /// A socket could not be bound.
    #[error("cannot bind a media socket: {0}")]
    Bind(String),
}

/// What the engine reports back, asynchronously.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The media of a call was closed; its final report.
    Closed {
        /// The call's media.
        id: MediaId,
        /// What flowed.
        report: Box<MediaReport>,
    },
    /// No RTP either way for the configured timeout after answer.
    Timeout {
        /// The call's media.
        id: MediaId,
    },
}

/// Quality of a call's first audio stream, per leg and direction, for the CDR.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaReport {
    /// What the carrier sent to DCE (what the buyer heard).
    pub carrier_in: StreamReport,
    /// What the buyer sent to DCE (what the caller heard).
    pub buyer_in: StreamReport,
    /// Packets DCE sent to the carrier.
    pub to_carrier: u64,
    /// Packets DCE sent to the buyer.
    pub to_buyer: u64,
    /// Packets dropped because they came from an address a socket does not accept (not the
    /// signalled one, or not the latched one with `strict_source`).
    pub foreign_dropped: u64,
    /// Codec of the first audio stream.
    pub codec: Option<String>,
    /// The DTMF digits (RFC 4733) the carrier sent, in order.
    pub dtmf_from_carrier: Vec<crate::dtmf::Digit>,
    /// The DTMF digits (RFC 4733) the buyer sent, in order.
    pub dtmf_from_buyer: Vec<crate::dtmf::Digit>,
    /// The recording, when the call was recorded and its file is complete: path, seconds.
    pub recording: Option<(std::path::PathBuf, f64)>,
    /// Packets left out of recordings because the recorder fell behind (since the last
    /// recorded call's report).
    pub recording_dropped: u64,
}

impl MediaReport {
    /// One side sent audio after answer and the other (almost) none.
    pub fn one_way_audio(&self) -> bool {
        let (a, b) = (self.carrier_in.packets, self.buyer_in.packets);
        let (hi, lo) = (a.max(b), a.min(b));
        hi >= 50 && (lo as f64) < hi as f64 * 0.05
    }
}

/// The media layer, as the call controller drives it.
pub trait MediaEngine: Send {
    /// Allocate ports for `streams` m-lines on both legs.
    fn open(&mut self, streams: usize) -> Result<MediaId, MediaError>;
    /// DCE's RTP ports facing `side`, one per m-line (what goes into SDP sent to that side).
    fn ports(&self, id: MediaId, side: Side) -> Vec<u16>;
    /// What `side` announced in its SDP.
    fn set_remote(&mut self, id: MediaId, side: Side, streams: &[Stream]);
    /// The call was answered (start the RTP timeout and dead-air clocks).
    fn answered(&mut self, id: MediaId);
    /// Close; a [`MediaEvent::Closed`] follows with the report.
    fn close(&mut self, id: MediaId);
    /// Play DTMF `digit` for `duration_ms` to side `toward` as RFC 4733 telephone-events in
    /// the media relayed to it (a SIP INFO from the other side, turned into RTP). False when
    /// this engine cannot: that side's SDP announced no telephone-event (the caller then
    /// relays the INFO as it came).
    fn send_dtmf(&mut self, _id: MediaId, _toward: Side, _digit: char, _duration_ms: u32) -> bool {
        false
    }
    /// Record both directions of the call from now on into the WAV file `path` (its report
    /// then comes once the file is complete, with the path and duration).
    fn record(&mut self, _id: MediaId, _path: std::path::PathBuf) {}
    /// Deliver the commands given since the last flush (an engine may batch them: the SIP
    /// worker flushes once per turn of its loop).
    fn flush(&mut self) {}
}

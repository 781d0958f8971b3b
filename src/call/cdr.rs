//! Call detail records: what the call controller emits for every call, and where it goes.
//!
//! The core emits a finished [`Cdr`] as an output; the driver hands it to a [`CdrSink`] and
//! moves on: the database writer (`crate::store`) and, with `[cdr] jsonl_path`,
//! `crate::store::jsonl::JsonlSink`, which appends one JSON object per line to a file from its
//! own thread, synced per batch.

use serde::{Deserialize, Serialize};

/// One auction entry with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRecord {
    /// Buyer id.
    pub buyer_id: String,
    /// Its bid, in cents.
    pub amount_cents: u32,
    /// `won`, `lost`, `excluded:<filter>`, `attempted:<SIP code|timeout|ring_timeout|cancelled|
    /// bad_uri|send_failed|bad_sdp|too_large>` (`crate::call::vocab::BidOutcome`).
    pub outcome: String,
}

/// One real-time bid request of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingRecord {
    /// Buyer id.
    pub buyer_id: String,
    /// Milliseconds from the request to its answer (or to the deadline).
    pub latency_ms: u32,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// `bid`, `timeout`, `error:<status>`, `malformed`, `rejected:<reason>`, `expired`.
    pub outcome: String,
    /// The bid, in cents, when one came.
    pub amount_cents: Option<u32>,
}

/// One buyer leg that answered, billed on its own. A call has one per buyer that took it:
/// more than one when a buyer hung up soon after answering and the call went on to the next
/// (`reroute_if_buyer_hangs_up_within_s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegRecord {
    /// Buyer id.
    pub buyer_id: String,
    /// Its bid (or the price it reserved), in cents.
    pub bid_cents: u32,
    /// It answered (RFC 3339).
    pub answer_at: String,
    /// Its leg ended (RFC 3339).
    pub end_at: String,
    /// Seconds from its answer to its end.
    pub duration_s: f64,
    /// Lasted at least its billable time (and no duplicate rule made it unbillable).
    pub billable: bool,
    /// What this buyer pays for this leg.
    pub revenue_cents: u32,
    /// What the publisher is paid for this leg.
    pub payout_cents: u32,
    /// `buyer` when the buyer hung up its leg, else who ended the call.
    pub hangup_by: Option<String>,
    /// The buyer hung up within the campaign's reroute time and the call went on to the next
    /// buyer.
    #[serde(default)]
    pub rerouted: bool,
}

/// A call detail record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdr {
    /// DCE's id of the call (also sent to the buyer as `X-DCE-Call-ID`).
    pub id: String,
    /// Node that handled it.
    pub node_id: String,
    /// `answered`, `rejected`, `cancelled`, `failed`.
    pub disposition: String,
    /// Carrier id (empty when the source was unknown).
    pub carrier: String,
    /// Campaign id (empty when none matched).
    pub campaign: String,
    /// Caller, E.164 digits (as received when not a number).
    pub caller: String,
    /// Called, E.164 digits (as received when not a number).
    pub called: String,
    /// Carrier's SIP Call-ID.
    pub carrier_call_id: String,
    /// Winning buyer, if any answered.
    pub buyer_id: Option<String>,
    /// The winner's bid.
    pub bid_cents: u32,
    /// What the buyer pays: its bid (or the price it reserved) when the call was billable.
    #[serde(default)]
    pub revenue_cents: u32,
    /// What the publisher (the carrier) is paid: the revenue less the campaign's
    /// `publisher_margin`, or the payout promised by `POST /v1/bid`.
    pub payout_cents: u32,
    /// What the exchange keeps: revenue − payout.
    #[serde(default)]
    pub margin_cents: u32,
    /// Lasted at least the campaign's `billable_after_s`.
    pub billable: bool,
    /// Compliance verdict: `pass[:checks][;flagged:lookup_error]` or `reject:<RULE>`.
    pub compliance: String,
    /// Every buyer considered.
    pub bids: Vec<BidRecord>,
    /// INVITE received (RFC 3339).
    pub invite_at: String,
    /// Buyer answered.
    pub answer_at: Option<String>,
    /// Call ended.
    pub end_at: String,
    /// Seconds from answer to end.
    pub duration_s: f64,
    /// `carrier`, `buyer` or `dce`.
    pub hangup_by: Option<String>,
    /// Why it ended, in words.
    pub reason: String,
    /// Final SIP code DCE sent the carrier (or 200).
    pub carrier_code: u16,
    /// Final SIP code of the last buyer leg, if any.
    pub buyer_code: Option<u16>,
    /// Media quality per leg and direction (calls with anchored media).
    pub quality: Option<Quality>,
    /// The real-time bid requests (none when no buyer of the call bids in real time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pings: Vec<PingRecord>,
    /// The duplicate rules that fired on this call (`campaign:<action>`,
    /// `buyer:<id>:<action>`, comma-separated); absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<String>,
    /// The fleet-wide caps (Redis) could not be read for a buyer of this call and
    /// `on_cap_error` decided: `lookup_failed:local` or `lookup_failed:skip_buyer`; absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_caps: Option<String>,
    /// Every buyer leg that answered, in order (one for a call answered once; none for a call
    /// nobody answered). The call's revenue and payout are their sums.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegRecord>,
    /// The STIR/SHAKEN verdict on the caller's identity: `A`, `B`, `C` (verified, with the
    /// attestation), `no_identity`, `failed:<reason>`; absent when `[stir]` is not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stir: Option<String>,
    /// The DTMF digits (RFC 4733) each side sent, in order; absent when none was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<Dtmf>,
    /// The call's recording, when its campaign or buyer asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingRecord>,
}

/// A recorded call's file, or why it was not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingRecord {
    /// The WAV file (stereo: caller left, buyer right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its length, seconds.
    pub duration_s: f64,
    /// Not recorded: why (`all_party_consent:<state>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The DTMF digits of a call, each way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dtmf {
    /// What the carrier (the caller) pressed, in order.
    pub from_carrier: Vec<DtmfDigit>,
    /// What the buyer pressed, in order.
    pub from_buyer: Vec<DtmfDigit>,
}

/// One key press.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfDigit {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: String,
    /// How long it was held, ms.
    pub duration_ms: u32,
}

impl Dtmf {
    /// From the relay's report; `None` when neither side sent a digit.
    pub fn from_report(r: &dce_media::MediaReport) -> Option<Dtmf> {
        let list = |d: &[dce_media::dtmf::Digit]| -> Vec<DtmfDigit> {
            d.iter()
                .map(|d| DtmfDigit {
                    digit: d.digit.to_string(),
                    duration_ms: d.duration_ms,
                })
                .collect()
        };
        (!r.dtmf_from_carrier.is_empty() || !r.dtmf_from_buyer.is_empty()).then(|| Dtmf {
            from_carrier: list(&r.dtmf_from_carrier),
            from_buyer: list(&r.dtmf_from_buyer),
        })
    }
}

/// One direction of one leg, as DCE received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Direction {
    /// RTP packets.
    pub packets: u64,
    /// RTP payload bytes.
    pub bytes: u64,
    /// Packets lost (sequence gaps).
    pub lost: u64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// MOS estimate (E-model), 0 when nothing was received.
    pub mos: f64,
    /// RTT from RTCP, ms.
    pub rtt_ms: Option<f64>,
    /// Loss the far end reported in RTCP, percent.
    pub remote_loss_pct: Option<f64>,
    /// Longest silence between packets, seconds.
    pub longest_gap_s: f64,
}

impl From<&dce_media::StreamReport> for Direction {
    fn from(r: &dce_media::StreamReport) -> Self {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Direction {
            packets: r.packets,
            bytes: r.bytes,
            lost: r.lost,
            loss_pct: round(r.loss_pct),
            jitter_ms: round(r.jitter_ms),
            mos: round(r.mos),
            rtt_ms: r.rtt_ms.map(round),
            remote_loss_pct: r.remote_loss_pct.map(round),
            longest_gap_s: round(r.longest_gap_s),
        }
    }
}

/// The media of a call (its first audio stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Codec (first payload of the offer).
    pub codec: Option<String>,
    /// Carrier → DCE (what the buyer heard).
    pub carrier_to_dce: Direction,
    /// Buyer → DCE (what the caller heard).
    pub buyer_to_dce: Direction,
    /// Packets DCE relayed to the carrier.
    pub dce_to_carrier_packets: u64,
    /// Packets DCE relayed to the buyer.
    pub dce_to_buyer_packets: u64,
    /// Packets from unexpected sources dropped (strict source).
    pub foreign_dropped: u64,
    /// One side sent audio and the other (almost) none.
    pub one_way_audio: bool,
    /// A side went silent for 10 s or more.
    pub dead_air: bool,
}

impl Quality {
    /// From the relay's report.
    pub fn from_report(r: &dce_media::MediaReport) -> Quality {
        Quality {
            codec: r.codec.clone(),
            carrier_to_dce: (&r.carrier_in).into(),
            buyer_to_dce: (&r.buyer_in).into(),
            dce_to_carrier_packets: r.to_carrier,
            dce_to_buyer_packets: r.to_buyer,
            foreign_dropped: r.foreign_dropped,
            one_way_audio: r.one_way_audio(),
            dead_air: r.carrier_in.longest_gap_s >= 10.0 || r.buyer_in.longest_gap_s >= 10.0,
        }
    }
}

/// Where CDRs go. Must not block the call path.
pub trait CdrSink: Send {
    /// Take a finished record.
    fn emit(&mut self, cdr: Cdr);
}

/// One sink used by every SIP worker: each worker holds a clone; the sink inside is dropped
/// (flushing what it holds) when the last clone is.
#[derive(Clone)]
pub struct SharedSink(std::sync::Arc<std::sync::Mutex<Box<dyn CdrSink>>>);

impl SharedSink {
    /// Share `sink`.
    pub fn new(sink: Box<dyn CdrSink>) -> SharedSink {
        SharedSink(std::sync::Arc::new(std::sync::Mutex::new(sink)))
    }
}

impl CdrSink for SharedSink {
    fn emit(&mut self, cdr: Cdr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).emit(cdr);
    }
}

/// Hands every CDR to several sinks (the database and an optional JSON-lines file).
pub struct Tee(pub Vec<Box<dyn CdrSink>>);

impl CdrSink for Tee {
    fn emit(&mut self, cdr: Cdr) {
        if let Some((last, rest)) = self.0.split_last_mut() {
            for s in rest {
                s.emit(cdr.clone());
            }
            last.emit(cdr);
        }
    }
}

/// Keeps CDRs in memory (tests).
#[derive(Debug, Default, Clone)]
pub struct MemorySink(pub std::sync::Arc<std::sync::Mutex<Vec<Cdr>>>);

impl CdrSink for MemorySink {
    fn emit(&mut self, cdr: Cdr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(cdr);
    }
}

/// Drops every record (tests that do not look at CDRs).
#[derive(Debug, Default)]
pub struct NullSink;

impl CdrSink for NullSink {
    fn emit(&mut self, _cdr: Cdr) {}
}

impl Cdr {
    /// A made-up answered call with three bids, number `i` (distinct ids), for benchmarks and
    /// tests that need many CDRs.
    #[doc(hidden)]
    pub fn synthetic(i: usize) -> Cdr {
        Cdr {
            id: format!("{:08x}-0000-4000-8000-{:012x}", i as u32, i),
            node_id: "bench".into(),
            disposition: "answered".into(),
            carrier: "carrier-a".into(),
            campaign: "auto".into(),
            caller: format!("1310555{:04}", i % 10_000),
            called: "18005550100".into(),
            carrier_call_id: format!("c{i}"),
            buyer_id: Some("bravo".into()),
            bid_cents: 1200,
            revenue_cents: 1200,
            payout_cents: 960,
            margin_cents: 240,
            billable: true,
            compliance: "pass:dnc,tcpa_hours".into(),
            bids: vec![
                BidRecord {
                    buyer_id: "acme".into(),
                    amount_cents: 1500,
                    outcome: "attempted:486".into(),
                },
                BidRecord {
                    buyer_id: "bravo".into(),
                    amount_cents: 1200,
                    outcome: "won".into(),
                },
                BidRecord {
                    buyer_id: "cobalt".into(),
                    amount_cents: 900,
                    outcome: "excluded:state".into(),
                },
            ],
            invite_at: "2026-07-15T16:00:00.000Z".into(),
            answer_at: Some("2026-07-15T16:00:02.000Z".into()),
            end_at: "2026-07-15T16:02:00.000Z".into(),
            duration_s: 118.0,
            hangup_by: Some("carrier".into()),
            reason: "carrier hung up".into(),
            carrier_code: 200,
            buyer_code: Some(200),
            quality: None,
            pings: Vec::new(),
            duplicate: None,
            fleet_caps: None,
            legs: Vec::new(),
            stir: None,
            dtmf: None,
            recording: None,
        }
    }
}

//! One call as an object: its state, its two kinds of leg with a state each, its timers, its
//! pending lookups. Everything a call holds is here, so ending a call is dropping one value
//! (plus the router's entries that point at it, which `Controller::end` removes).

use super::leg::Dialog;
use super::lookup::Lookups;
use super::vocab::{BidOutcome, ComplianceVerdict};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dce_media::MediaId;
use dce_routing::{BuyerLive, CampaignId, Entry, Snapshot};
use dce_sip::transaction::{Peer, TxId};
use dce_sip::{Message, MessageBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A call's key in the call table.
pub type CallKey = u64;

pub use super::leg::Body;

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegRef {
    /// The carrier's leg.
    A,
    /// Buyer leg `n` (in the order they were rung).
    B(usize),
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Admitted; waiting for lookups (fleet-wide checks) before any buyer is rung.
    Checking,
    /// The next buyer's caps are kept fleet-wide: waiting for Redis to grant its slot
    /// (`Call::lease`) before its INVITE goes out.
    Leasing,
    /// Buyers are being tried; `current` is the leg ringing now.
    Ringing {
        /// The buyer leg being rung.
        current: usize,
    },
    /// A buyer answered; the carrier has our 2xx but has not ACKed it.
    Answered {
        /// The winning buyer leg.
        winner: usize,
    },
    /// Both legs up.
    Connected {
        /// The winning buyer leg.
        winner: usize,
    },
}

impl CallState {
    /// The winning leg once answered.
    pub fn winner(self) -> Option<usize> {
        match self {
            CallState::Answered { winner } | CallState::Connected { winner } => Some(winner),
            _ => None,
        }
    }

    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Checking => "checking",
            CallState::Leasing => "leasing",
            CallState::Ringing { .. } => "ringing",
            CallState::Answered { .. } => "answered",
            CallState::Connected { .. } => "connected",
        }
    }
}

/// The carrier leg, as DCE's UAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AState {
    /// The INVITE is being answered (100, maybe 18x sent).
    Proceeding,
    /// Our 2xx is out, not yet ACKed.
    Accepted,
    /// ACKed: the dialog is confirmed.
    Confirmed,
}

/// A buyer leg, as DCE's UAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BState {
    /// INVITE sent; nothing but `100` back.
    Calling,
    /// A provisional (101–199) arrived.
    Early,
    /// Given up before any provisional: the CANCEL leaves when one arrives (§9.1).
    CancelPending,
    /// Given up and CANCEL sent; a late 2xx is ACKed and hung up.
    Cancelled,
    /// It answered (2xx): this is, or was, the winner.
    Confirmed,
    /// Over: a final non-2xx, a timeout, or hung up after an unusable answer.
    Done,
}

impl BState {
    /// Still waiting for the INVITE's final response.
    pub fn pending(self) -> bool {
        matches!(
            self,
            BState::Calling | BState::Early | BState::CancelPending | BState::Cancelled
        )
    }
}

/// The carrier's leg.
#[derive(Debug)]
pub struct ALeg {
    /// The server INVITE transaction.
    pub tx: TxId,
    /// The carrier's INVITE.
    pub invite: Message,
    /// Its top Via as answered (rport/received filled in).
    pub via: String,
    /// Where it came from.
    pub peer: Peer,
    /// Our To tag.
    pub tag: String,
    /// The dialog as DCE's UAS sees it.
    pub dialog: Dialog,
    /// Where the leg is.
    pub state: AState,
}

/// One buyer leg.
#[derive(Debug)]
pub struct BLeg {
    /// Index of the buyer in the call's auction entries.
    pub entry: usize,
    /// The client INVITE transaction.
    pub tx: TxId,
    /// The INVITE we sent (for CANCEL).
    pub invite: MessageBuf,
    /// Where it goes.
    pub peer: Peer,
    /// Our tag on this leg.
    pub tag: String,
    /// The dialog as DCE's UAC sees it.
    pub dialog: Dialog,
    /// The buyer's concurrency slot while this leg holds it.
    pub slot: Option<Arc<BuyerLive>>,
    /// Its fleet-wide lease (Redis), given back with the slot.
    pub lease: Option<String>,
    /// Where the leg is.
    pub state: BState,
    /// The INVITE was resent once with credentials after a `401`/`407`.
    pub auth_tried: bool,
    /// The nonce this leg last answered and how many requests used it (RFC 7616 §3.4).
    pub nonce_count: dce_sip::digest::NonceCount,
    /// The addresses this attempt may use, in order (one for an IP literal; the DNS answer
    /// ordered by SRV priority and weight for a host name).
    pub targets: Vec<std::net::SocketAddr>,
    /// Index in `targets` of the one `peer` is.
    pub target: usize,
    /// It answered at (what its own billing counts from).
    pub answered_at: Option<Instant>,
}

/// A 2xx we sent to an INVITE, retransmitted until its ACK (§13.3.1.4).
#[derive(Debug)]
pub struct Pending2xx {
    /// The response as sent.
    pub bytes: Bytes,
    /// Where to.
    pub peer: Peer,
    /// The next retransmission interval.
    pub interval: Duration,
}

/// A call's timers, as data (quinn-proto's `TimerTable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The current buyer's ring timeout.
    Ring,
    /// Retransmit our 2xx to the carrier (UDP only).
    Retransmit2xxA,
    /// Retransmit our 2xx to the buyer (a relayed buyer re-INVITE; UDP only).
    Retransmit2xxB,
    /// No ACK for our 2xx to the carrier in 64·T1.
    GiveUp2xxA,
    /// No ACK for our 2xx to the buyer in 64·T1.
    GiveUp2xxB,
    /// The campaign's `max_duration_s` after the answer.
    MaxDuration,
    /// The deadline of the call's outstanding lookups.
    Lookups,
    /// The ringing buyer's current DNS target has sent no response at all in time: try its
    /// next target (armed only while one is left).
    Target,
}

impl Timer {
    /// Every timer, in table order.
    pub const ALL: [Timer; 8] = [
        Timer::Ring,
        Timer::Retransmit2xxA,
        Timer::Retransmit2xxB,
        Timer::GiveUp2xxA,
        Timer::GiveUp2xxB,
        Timer::MaxDuration,
        Timer::Lookups,
        Timer::Target,
    ];
}

/// When each of a call's timers fires (at most one deadline per timer).
#[derive(Debug, Default, Clone)]
pub struct TimerTable([Option<Instant>; Timer::ALL.len()]);

impl TimerTable {
    /// Arm `t` at `at` (replacing an earlier arming).
    pub fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }

    /// Disarm `t`.
    pub fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }

    /// When `t` fires.
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Timers due at `now`, disarmed as they are returned.
    pub fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        for t in Timer::ALL {
            if self.0[t as usize].is_some_and(|at| at <= now) {
                self.0[t as usize] = None;
                due.push(t);
            }
        }
        due
    }

    /// Armed timers.
    pub fn armed(&self) -> usize {
        self.0.iter().flatten().count()
    }
}

/// One call.
pub struct Call {
    /// DCE's id (CDRs, logs, `X-DCE-Call-ID`).
    pub id: String,
    /// The routing snapshot it started with (a reload does not change a call in progress).
    pub snapshot: Arc<Snapshot>,
    /// Carrier id.
    pub carrier: String,
    /// Campaign.
    pub campaign: CampaignId,
    /// Caller, E.164 digits (as received, bounded, when not a number).
    pub caller: String,
    /// Called, E.164 digits.
    pub called: String,
    /// The carrier leg.
    pub a: ALeg,
    /// Buyer legs, in the order they were rung.
    pub legs: Vec<BLeg>,
    /// The auction's entries.
    pub entries: Vec<Entry>,
    /// What happened to each entry so far (`None`: its auction outcome stands).
    pub outcomes: Vec<Option<BidOutcome>>,
    /// Next entry to try.
    pub next: usize,
    /// Buyers rung so far.
    pub attempts: u32,
    /// Where the call is.
    pub state: CallState,
    /// INVITE received (monotonic).
    pub t0: Instant,
    /// When the carrier's INVITE reached DCE's socket (the kernel's receive time where the
    /// driver has it; else `t0`), for the INVITE-in → buyer-INVITE-out delay.
    pub rx_at: Instant,
    /// INVITE received (wall clock).
    pub wall0: DateTime<Utc>,
    /// Answered at.
    pub answered_at: Option<Instant>,
    /// Last final code sent to the carrier (100 until then).
    pub carrier_code: u16,
    /// Final code of the last buyer leg.
    pub buyer_code: Option<u16>,
    /// Our 2xx to the carrier (`[0]`) and to the buyer (`[1]`), until ACKed.
    pub pending: [Option<Pending2xx>; 2],
    /// The call's media in the relay.
    pub media: Option<MediaId>,
    /// The carrier's offer rewritten for buyers (every attempt gets it).
    pub offer_b: Body,
    /// Late offer: the ACK for the buyer's 2xx waits for the carrier's ACK with the answer.
    pub held_b_ack: Option<(Dialog, Peer)>,
    /// The compliance verdict.
    pub compliance: ComplianceVerdict,
    /// Its timers.
    pub timers: TimerTable,
    /// What `Controller`'s timer index holds for this call (its earliest deadline).
    pub indexed: Option<Instant>,
    /// Lookups it waits for (state `Checking`).
    pub lookups: Lookups,
    /// Its real-time bids, when any buyer was asked.
    pub bids: Option<Box<CallBids>>,
    /// What the duplicate rules did to it, when one fired.
    pub dup: Option<Box<super::callers::Judgement>>,
    /// The fleet-wide lease asked (or decided) for the entry about to be rung.
    pub lease: Option<Lease>,
    /// The fleet's caps could not be read for one of its buyers: `lookup_failed:<policy>`.
    pub cap_note: Option<&'static str>,
    /// Times a buyer hung up soon after answering and the call went on to the next one.
    pub reroutes: u32,
    /// The buyer legs that answered and are over (the call was rerouted after each).
    pub legs_done: Vec<super::cdr::LegRecord>,
    /// The codec the carrier talks (the first buyer's answer), when the campaign reroutes: a
    /// rerouted call is offered only it, since the carrier hears no re-INVITE.
    pub talk_codec: Option<String>,
    /// STIR/SHAKEN: the caller identity's verdict (`None`: `[stir]` is not configured).
    pub stir: Option<Box<CallStir>>,
    /// Recording was asked for and not done: why (`all_party_consent:<state>`).
    pub recording_skipped: Option<String>,
}

/// A call's STIR/SHAKEN verification.
#[derive(Debug)]
pub struct CallStir {
    /// The verdict; `None` while the signer's certificate is fetched.
    pub verdict: Option<crate::stir::Verdict>,
    /// The PASSporT waiting for its certificate.
    pub waiting: Option<Box<crate::stir::passport::Passport>>,
    /// The static bids were moved by the verdict at admission.
    pub priced: bool,
    /// The campaign's policy flagged the call: the buyer INVITE's `Reason` (code, text).
    pub flag: Option<(u16, String)>,
}

impl CallStir {
    /// The verdict as the CDR says it (`pending` while fetching).
    pub fn text(&self) -> String {
        self.verdict
            .map(|v| v.to_string())
            .unwrap_or_else(|| "pending".into())
    }
}

/// A fleet-wide lease for entry `entry` of a call: asked (`decided` false; the call is
/// `Leasing`), or decided and about to ring. The entry's local slot is held meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The auction entry (where its buyer is now: the entries may be reordered before an
    /// early lease is settled).
    pub entry: usize,
    /// The buyer, in the call's snapshot (what the lease and the local slot belong to).
    pub buyer: dce_routing::BuyerId,
    /// Its id.
    pub buyer_id: String,
    /// It has a concurrency cap: the lease is a slot in Redis (else it only read the counts,
    /// and there is nothing to give back there).
    pub slots: bool,
    /// The lease's name (`<call id>:<buyer id>`).
    pub member: String,
    /// The answer came (granted, or the local policy let the attempt go on).
    pub decided: bool,
    /// Asked beside the admission lookups (the first ranked buyer is capped): the answer,
    /// kept until the call is checked and rings.
    pub early: Option<super::lookup::LeaseAnswer>,
}

impl Call {
    /// The wall-clock time at monotonic `t`.
    pub fn wall(&self, t: Instant) -> DateTime<Utc> {
        self.wall0
            + chrono::Duration::from_std(t.saturating_duration_since(self.t0)).unwrap_or_default()
    }

    /// The buyer leg ringing now, if any.
    pub fn current(&self) -> Option<usize> {
        match self.state {
            CallState::Ringing { current } => Some(current),
            _ => None,
        }
    }

    /// A buyer hung up soon after answering and the call is looking for the next one: the
    /// carrier's leg is up (its INVITE answered), no buyer's is.
    pub fn rerouting(&self) -> bool {
        self.answered_at.is_some()
            && matches!(self.state, CallState::Ringing { .. } | CallState::Leasing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_table_keeps_one_deadline_per_timer() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Ring, t0 + Duration::from_secs(20));
        t.set(Timer::MaxDuration, t0 + Duration::from_secs(7200));
        t.set(Timer::Ring, t0 + Duration::from_secs(5));
        assert_eq!(t.armed(), 2);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(5)));
        assert!(t.take_due(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(t.take_due(t0 + Duration::from_secs(5)), vec![Timer::Ring]);
        assert_eq!(t.armed(), 1);
        t.stop(Timer::MaxDuration);
        assert_eq!((t.armed(), t.next()), (0, None));
    }
}

/// What a winning bid binds its buyer's attempt to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Where the INVITE goes instead of the buyer's trunk as configured.
    pub destination: Option<crate::rtb::Destination>,
    /// After this, the bid is gone (`excluded:expired` when its turn comes).
    pub expires_at: Option<Instant>,
    /// Billable to this buyer after this long (instead of the campaign's `billable_after_s`).
    pub min_duration_s: Option<u32>,
}

/// A call's real-time bidding: every ping's record and the terms of the bids that came.
#[derive(Debug, Default)]
pub struct CallBids {
    /// One per ping, in the order the answers came.
    pub pings: Vec<super::cdr::PingRecord>,
    /// The terms of each buyer's bid.
    pub terms: Vec<(dce_routing::BuyerId, Terms)>,
    /// The call was routed on a reservation (`POST /v1/bid`): its buyer and promised payout.
    pub reserved: Option<super::reservation::Reserved>,
    /// The longest of its bid requests (an answer's exchange, or the wait for a missed one),
    /// microseconds: what the call waited for its bidders.
    pub waited_us: u32,
}

impl CallBids {
    /// The terms of `buyer`'s bid, if it bid.
    pub fn terms(&self, buyer: dce_routing::BuyerId) -> Option<&Terms> {
        self.terms.iter().find(|(b, _)| *b == buyer).map(|(_, t)| t)
    }

    /// Mark `buyer`'s ping `expired` (its bid ran out before its turn).
    pub fn expired(&mut self, snap: &dce_routing::Snapshot, buyer: dce_routing::BuyerId) {
        let id = &snap.buyer(buyer).id;
        if let Some(p) = self.pings.iter_mut().find(|p| &p.buyer_id == id) {
            p.outcome = "expired".into();
        }
    }
}

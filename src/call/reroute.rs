//! Revenue recovery: a buyer that hangs up within the campaign's
//! `reroute_if_buyer_hangs_up_within_s` of its answer does not end the call. Its BYE is
//! answered, its leg is closed and billed on its own, and the call rings the next ranked buyer
//! while the carrier stays connected. DCE anchors the media, so the carrier hears no
//! re-INVITE: the next buyer is offered DCE's same ports and only the codec the carrier already
//! talks, and its answer moves the relay's buyer side to it. At most `max_reroutes` per call.
//!
//! While a call reroutes its state is `Ringing` (or `Leasing`) with the carrier's INVITE
//! already answered ([`Call::rerouting`]): nothing of the ringing goes to the carrier (no
//! 18x, no final response), the carrier's CANCEL changes nothing, its BYE cancels the buyer
//! ringing, its re-INVITE or UPDATE gets `491` (try again), and when nobody is left the
//! carrier gets a BYE.

use super::cdr::LegRecord;
use super::controller::Controller;
use super::state::{Call, CallKey, CallState};
use super::vocab::{EndReason, HangupBy};
use crate::counters::Counter;
use dce_routing::{local_keys, Outcome};
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{TransactionLayer, TxId};
use dce_sip::{Message, Method};
use std::time::{Duration, Instant};

/// What buyer leg `li` of `call` is billed, had it ended at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Billing {
    /// Its bid, in cents.
    pub bid_cents: u32,
    /// It lasted its billable time and no duplicate rule made it unbillable.
    pub billable: bool,
    /// What the buyer pays.
    pub revenue_cents: u32,
    /// What the publisher is paid.
    pub payout_cents: u32,
}

/// How buyer leg `li` of `call` is billed when it ends at `now`: its bid when it lasted the
/// campaign's `billable_after_s` (or its real-time bid's own minimum) from its own answer and
/// no duplicate rule made it unbillable; the publisher's part by the campaign's margin, or the
/// payout its reservation promised.
pub(super) fn bill_leg(call: &Call, li: usize, now: Instant) -> Billing {
    let campaign = call.snapshot.campaign(call.campaign);
    let e = call.entries[call.legs[li].entry];
    let billable_after = call
        .bids
        .as_ref()
        .and_then(|b| b.terms(e.buyer)?.min_duration_s)
        .unwrap_or(campaign.billable_after_s);
    let duplicate = call
        .dup
        .as_ref()
        .is_some_and(|d| d.not_billable.contains(&e.buyer));
    let billable = call.legs[li]
        .answered_at
        .is_some_and(|at| now.saturating_duration_since(at).as_secs() >= u64::from(billable_after))
        && !duplicate;
    let revenue = if billable { e.bid_cents } else { 0 };
    let promised = call
        .bids
        .as_ref()
        .and_then(|b| b.reserved.as_ref())
        .filter(|r| r.buyer == e.buyer && billable)
        .map(|r| r.payout_cents.min(revenue));
    Billing {
        bid_cents: e.bid_cents,
        billable,
        revenue_cents: revenue,
        payout_cents: promised.unwrap_or_else(|| campaign.payout_of(revenue)),
    }
}

/// The CDR's entry for buyer leg `li`, ending at `now`.
pub(super) fn leg_record(
    call: &Call,
    li: usize,
    bill: &Billing,
    hangup_by: Option<HangupBy>,
    rerouted: bool,
    now: Instant,
) -> LegRecord {
    let leg = &call.legs[li];
    let answered = leg.answered_at.unwrap_or(now);
    LegRecord {
        buyer_id: call
            .snapshot
            .buyer(call.entries[leg.entry].buyer)
            .id
            .clone(),
        bid_cents: bill.bid_cents,
        answer_at: call.wall(answered).to_rfc3339(),
        end_at: call.wall(now).to_rfc3339(),
        duration_s: now.saturating_duration_since(answered).as_secs_f64(),
        billable: bill.billable,
        revenue_cents: bill.revenue_cents,
        payout_cents: bill.payout_cents,
        hangup_by: hangup_by.map(|h| h.as_str().to_owned()),
        rerouted,
    }
}

/// The first audio codec of an SDP body (what the other side will send and expect).
pub(super) fn first_audio_codec(body: &[u8]) -> Option<String> {
    dce_media::sdp::inspect(body)
        .ok()?
        .into_iter()
        .find(|s| s.kind == "audio" && s.rtp.is_some())?
        .codec
}

impl Controller {
    /// The buyer of leg `w` hung up (its BYE is answered). When the campaign reroutes and
    /// the leg answered less than `reroute_if_buyer_hangs_up_within_s` ago, close the leg and
    /// ring the next buyer with the carrier kept connected. False when the call is not
    /// rerouted (it ends as usual).
    pub(super) fn try_reroute(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        w: usize,
        now: Instant,
    ) -> bool {
        let max_attempts = self.settings.max_attempts;
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let campaign = call.snapshot.campaign(call.campaign);
        let (within, max) = (campaign.reroute_within_s, campaign.max_reroutes);
        let soon = call.legs[w].answered_at.is_some_and(|at| {
            now.saturating_duration_since(at) < Duration::from_secs(within.into())
        });
        let connected = call.state == (CallState::Connected { winner: w });
        // Someone is left to ring (whether they can be is for `try_next` to find out).
        let left = call.attempts < max_attempts
            && call.entries[call.next..]
                .iter()
                .any(|e| matches!(e.outcome, Outcome::Ranked(_)));
        // The carrier must be able to go on as it is: media through DCE, a codec known.
        let anchored = call.media.is_some() && call.offer_b.is_some() && call.talk_codec.is_some();
        if within == 0 || call.reroutes >= max || !soon || !connected || !left || !anchored {
            return false;
        }
        let bill = bill_leg(call, w, now);
        let record = leg_record(call, w, &bill, Some(HangupBy::Buyer), true, now);
        // Its slot and counts, as an ended call's winner gives them back.
        let e = call.entries[call.legs[w].entry];
        let snap = call.snapshot.clone();
        let buyer = snap.buyer(e.buyer);
        if !bill.billable {
            let day = local_keys(
                buyer.tz(),
                call.wall(call.legs[w].answered_at.unwrap_or(now)),
            );
            snap.live(e.buyer).refund(day, e.bid_cents);
            let fleet = self.shared.is_some();
            super::fleet::count(&mut self.out, fleet, buyer, day, 0, -i64::from(e.bid_cents));
        }
        super::ring::release_leg(&mut self.out, call, w);
        call.legs[w].state = super::state::BState::Done;
        tracing::info!(call = %call.id, buyer = %record.buyer_id, after_s = record.duration_s, billable = bill.billable, reroute = call.reroutes + 1, "buyer hung up within the campaign's reroute time; the carrier stays up and the call goes to the next buyer");
        call.legs_done.push(record);
        call.reroutes += 1;
        call.state = CallState::Ringing { current: w };
        self.counters.inc(Counter::CallRerouted);
        if !self.try_next(layer, key, now) {
            self.nobody_left(layer, key, EndReason::EveryAttemptFailed, now);
        }
        true
    }

    /// No buyer is left to ring call `key`: a call still ringing gets `480`; a rerouted one
    /// (its carrier connected) gets BYE.
    pub(super) fn nobody_left(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        reason: EndReason,
        now: Instant,
    ) {
        if self.calls.get(&key).is_some_and(|c| c.rerouting()) {
            tracing::info!(call = %self.call_id(key), "no other buyer took the rerouted call; hanging up the carrier");
            self.counters.inc(Counter::RerouteFailed);
            self.hang_up_both(layer, key, EndReason::RerouteFailed, now);
            return;
        }
        self.counters.inc(Counter::AllFailed480);
        self.respond_a(layer, key, 480, None, now);
        self.end(key, None, reason, now);
    }

    /// A request from the carrier, other than BYE, while its call reroutes: there is no
    /// buyer to mirror it to. A re-INVITE or UPDATE gets `491` (RFC 3261 §14.2: try again
    /// later; the dialog stays), OPTIONS `200`, anything else `480` (RFC 5057: only that
    /// transaction fails).
    pub(super) fn carrier_request_while_rerouting(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: &Message,
        via: &str,
        now: Instant,
    ) {
        let code = match msg.method() {
            Some(Method::Invite) | Some(Method::Update) => 491,
            Some(Method::Options) => 200,
            _ => 480,
        };
        let resp = msg.response(code, reason_phrase(code), "", Some(via));
        let _ = layer.respond(tx, &resp, now);
    }
}

//! The end of a call: every path leads to [`Controller::end`], which releases what the call
//! holds (slots, router entries, timers, media) and writes its one CDR — at once, or when the
//! relay reports the call's media.

use super::admit::bid_records;
use super::cdr::{Cdr, Quality};
use super::controller::{Controller, Output, PendingCdr};
use super::lookup::CapWrite;
use super::router::TxRole;
use super::state::{BState, Call, CallKey, CallState};
use super::vocab::{Disposition, EndReason, HangupBy};
use crate::counters::Counter;
use dce_media::MediaEvent;
use dce_routing::local_keys;
use dce_sip::transaction::TransactionLayer;
use dce_sip::Method;
use std::time::Instant;

impl Controller {
    /// Remove every router entry that points at `call` (its legs still pending become
    /// orphans).
    pub(super) fn forget_call_routes(&mut self, call: &Call) {
        self.router.remove_server_invite(call.a.tx);
        self.router
            .remove_dialog(&call.a.dialog.call_id, &call.a.tag);
        for (id, _) in &call.lookups.outstanding {
            self.router.remove_lookup(*id);
        }
        for leg in &call.legs {
            self.router.remove_dialog(&leg.dialog.call_id, &leg.tag);
            let invite_pending = matches!(
                self.router.remove_client(leg.tx),
                Some((_, TxRole::Invite(_)))
            );
            if invite_pending && leg.state.pending() {
                // Cancelled or abandoned and not finished: keep the leg so a late 2xx is
                // ACKed and hung up.
                self.orphan(leg);
            }
        }
    }

    /// The call is over: release everything it holds and write its CDR.
    pub(super) fn end(
        &mut self,
        key: CallKey,
        hangup_by: Option<HangupBy>,
        reason: EndReason,
        now: Instant,
    ) {
        let Some(mut call) = self.remove_call(key) else {
            return;
        };
        self.forget_call_routes(&call);
        let campaign = call.snapshot.campaign(call.campaign).clone();
        let duration = call
            .answered_at
            .map(|a| now.saturating_duration_since(a))
            .unwrap_or_default();
        let winner = call.state.winner();
        // The winner's leg is billed on its own, from its own answer (a rerouted call's
        // earlier legs were billed as they ended).
        let bill = winner.map(|w| super::reroute::bill_leg(&call, w, now));
        let billable_w = bill.is_some_and(|b| b.billable);
        if let (Some(w), Some(b)) = (winner, bill) {
            let record = super::reroute::leg_record(&call, w, &b, hangup_by, false, now);
            call.legs_done.push(record);
        }
        let mut refund = None;
        let answer_wall = call.wall(
            winner
                .and_then(|w| call.legs[w].answered_at)
                .or(call.answered_at)
                .unwrap_or(now),
        );
        if let Some(l) = call.lease.take() {
            // it ended waiting for (or just granted) a fleet-wide slot
            super::fleet::drop_lease(&mut self.out, &call.snapshot, l);
        }
        for (li, leg) in call.legs.iter_mut().enumerate() {
            let e = call.entries[leg.entry];
            if let Some(member) = leg.lease.take() {
                self.out.push_back(Output::Caps(CapWrite::Release {
                    member,
                    buyer: call.snapshot.buyer(e.buyer).id.clone(),
                }));
            }
            if let Some(slot) = leg.slot.take() {
                if winner == Some(li) {
                    let buyer = call.snapshot.buyer(e.buyer);
                    let day = local_keys(buyer.tz(), answer_wall);
                    let fleet = self.shared.is_some();
                    if billable_w {
                        // kept for a refund should the media report make it non-billable
                        let fleet_id = (fleet && buyer.capped()).then(|| buyer.id.clone());
                        refund = Some((slot.clone(), day, fleet_id));
                    } else {
                        slot.refund(day, e.bid_cents);
                        let cents = -i64::from(e.bid_cents);
                        super::fleet::count(&mut self.out, fleet, buyer, day, 0, cents);
                    }
                }
                slot.release();
            }
        }
        let legs = std::mem::take(&mut call.legs_done);
        let (revenue, payout, billable) = totals(&legs);
        // The call's buyer is the last that took it.
        let winner_id = legs.last().map(|l| l.buyer_id.clone());
        let winner_bid = legs.last().map_or(0, |l| l.bid_cents);
        let disposition = if call.answered_at.is_some() {
            Disposition::Answered
        } else if reason.cancels() {
            Disposition::Cancelled
        } else {
            Disposition::Failed
        };
        if call.answered_at.is_some() {
            self.counters.inc(Counter::CallCompleted);
        }
        let bids = bid_records(&call.snapshot, &call.entries, &call.outcomes);
        let reason_text = reason.to_string();
        // The call's one line at the default level: what happened to it and why (the steps are at
        // debug).
        tracing::info!(call = %call.id, carrier = %call.carrier, campaign = %campaign.id, caller = %crate::logging::num(&call.caller), buyer = winner_id.as_deref().unwrap_or("-"), attempts = call.attempts, reroutes = call.reroutes, disposition = disposition.as_str(), reason = %reason_text, duration_s = duration.as_secs_f64(), billable, duplicate = call.dup.as_ref().map_or(String::new(), |d| d.fired.join(",")), "call ended");
        self.counters.m.call_outcome(disposition.as_str());
        self.events.emit(
            "call.completed",
            &campaign.id,
            || winner_id.iter().cloned().collect(),
            || {
                serde_json::json!({
                    "call_id": call.id,
                    "disposition": disposition.as_str(),
                    "reason": reason_text,
                    "buyer": winner_id,
                    "duration_s": (duration.as_secs_f64() * 1000.0).round() / 1000.0,
                    "billable": billable,
                    "revenue_cents": revenue,
                    "payout_cents": payout,
                    "margin_cents": revenue - payout,
                    "hangup_by": hangup_by.map(HangupBy::as_str),
                })
            },
        );
        let cdr = Cdr {
            id: call.id.clone(),
            node_id: self.settings.node_id.clone(),
            disposition: disposition.as_str().into(),
            carrier: call.carrier.clone(),
            campaign: campaign.id.clone(),
            caller: call.caller.clone(),
            called: call.called.clone(),
            carrier_call_id: call.a.dialog.call_id.clone(),
            buyer_id: winner_id,
            bid_cents: winner_bid,
            revenue_cents: revenue,
            payout_cents: payout,
            margin_cents: revenue - payout,
            billable,
            compliance: call.compliance.to_string(),
            bids,
            invite_at: call.wall0.to_rfc3339(),
            answer_at: call.answered_at.map(|t| call.wall(t).to_rfc3339()),
            end_at: call.wall(now).to_rfc3339(),
            duration_s: duration.as_secs_f64(),
            hangup_by: hangup_by.map(|h| h.as_str().to_owned()),
            reason: reason_text,
            carrier_code: call.carrier_code,
            buyer_code: call.buyer_code,
            quality: None,
            pings: call.bids.take().map(|b| b.pings).unwrap_or_default(),
            duplicate: call.dup.as_ref().and_then(|d| d.cdr_text()),
            fleet_caps: call.cap_note.map(str::to_owned),
            legs,
            stir: call.stir.as_ref().map(|s| s.text()),
            dtmf: None,
            recording: call
                .recording_skipped
                .clone()
                .map(|s| super::cdr::RecordingRecord {
                    path: None,
                    duration_s: 0.0,
                    skipped: Some(s),
                }),
        };
        match call.media {
            Some(id) => {
                // The CDR is written when the relay reports the call's media.
                self.by_media.remove(&id);
                self.awaiting_media.insert(
                    id,
                    Box::new(PendingCdr {
                        cdr,
                        bill_one_way_audio: campaign.bill_one_way_audio,
                        refund,
                    }),
                );
                self.media.close(id);
            }
            None => {
                self.remember_billable(&cdr);
                self.out.push_back(Output::Cdr(Box::new(cdr)))
            }
        }
    }

    /// BYE both legs of an answered call and end it.
    pub(super) fn hang_up_both(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        reason: EndReason,
        now: Instant,
    ) {
        let me = self.settings.me.clone();
        let (b1, b2) = (self.ids.branch(), self.ids.branch());
        // a rerouted call rings its next buyer: CANCEL it
        if let Some(li) = self.calls.get(&key).and_then(|c| c.current()) {
            self.abandon(layer, key, li, now);
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let a_bye = (call.a.dialog.request(&me, Method::Bye, &b1), call.a.peer);
        let b_bye = call.state.winner().map(|w| {
            let auth = call
                .snapshot
                .buyer(call.entries[call.legs[w].entry].buyer)
                .auth
                .clone();
            let leg = &mut call.legs[w];
            let auth = auth.map(|a| (a, leg.nonce_count.clone()));
            (leg.dialog.request(&me, Method::Bye, &b2), leg.peer, auth)
        });
        if let Ok(btx) = layer.send_request(a_bye.0, a_bye.1, now) {
            self.router.add_client(btx, key, TxRole::Fire);
        }
        if let Some((bye, peer, auth)) = b_bye {
            self.send_buyer_bye(layer, key, bye, peer, auth, now);
        }
        self.end(key, Some(HangupBy::Dce), reason, now);
    }

    pub(super) fn max_duration(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        now: Instant,
    ) {
        tracing::info!(call = %self.call_id(key), "max duration reached");
        self.hang_up_both(layer, key, EndReason::MaxDuration, now);
    }

    /// End every call (shutdown): BYE answered calls, 503 the ringing ones.
    pub fn end_all(&mut self, layer: &mut TransactionLayer, now: Instant) {
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            self.end_one(layer, key, 503, EndReason::Shutdown, now);
        }
    }

    /// End one call: BYE both legs when answered, else `code` to the carrier and CANCEL the
    /// buyer being rung.
    fn end_one(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        code: u16,
        reason: EndReason,
        now: Instant,
    ) {
        let Some((state, rerouting)) = self.calls.get(&key).map(|c| (c.state, c.rerouting()))
        else {
            return;
        };
        if rerouting {
            // the carrier is connected: BYE it (and CANCEL the buyer ringing)
            self.hang_up_both(layer, key, reason, now);
            return;
        }
        match state {
            CallState::Checking | CallState::Leasing | CallState::Ringing { .. } => {
                if let CallState::Ringing { current } = state {
                    self.abandon(layer, key, current, now);
                }
                self.respond_a(layer, key, code, None, now);
                self.end(key, Some(HangupBy::Dce), reason, now);
            }
            CallState::Answered { .. } | CallState::Connected { .. } => {
                self.hang_up_both(layer, key, reason, now)
            }
        }
    }

    /// An operator ends call `id` (`POST /v1/calls/{id}/hangup`). False when no such call.
    pub fn hang_up(&mut self, layer: &mut TransactionLayer, id: &str, now: Instant) -> bool {
        let Some(key) = self.calls.iter().find(|(_, c)| c.id == id).map(|(k, _)| *k) else {
            return false;
        };
        tracing::info!(call = %id, "hangup requested through the API");
        self.end_one(layer, key, 480, EndReason::ApiHangup, now);
        true
    }

    /// Something the media relay reports.
    pub fn on_media_event(&mut self, layer: &mut TransactionLayer, ev: MediaEvent, now: Instant) {
        match ev {
            MediaEvent::Timeout { id } => {
                if let Some(&key) = self.by_media.get(&id) {
                    self.counters.inc(Counter::RtpTimeout);
                    tracing::info!(call = %self.call_id(key), "no RTP either way; hanging up");
                    self.hang_up_both(layer, key, EndReason::RtpTimeout, now);
                }
            }
            MediaEvent::Closed { id, report } => {
                let Some(PendingCdr {
                    mut cdr,
                    bill_one_way_audio,
                    refund,
                }) = self.awaiting_media.remove(&id).map(|p| *p)
                else {
                    return;
                };
                let q = Quality::from_report(&report);
                cdr.dtmf = crate::call::cdr::Dtmf::from_report(&report);
                if let Some((path, secs)) = &report.recording {
                    cdr.recording = Some(super::cdr::RecordingRecord {
                        path: Some(path.display().to_string()),
                        duration_s: (secs * 100.0).round() / 100.0,
                        skipped: None,
                    });
                }
                if report.recording_dropped > 0 {
                    tracing::warn!(call = %cdr.id, packets = report.recording_dropped, "the recorder fell behind: packets left out of recordings");
                }
                if let Some(d) = &cdr.dtmf {
                    // how many, never which: callers key card numbers into IVRs
                    tracing::debug!(call = %cdr.id, from_carrier = d.from_carrier.len(), from_buyer = d.from_buyer.len(), "DTMF digits relayed");
                }
                self.counters.m.rtp(
                    q.carrier_to_dce.packets + q.buyer_to_dce.packets,
                    q.carrier_to_dce.lost + q.buyer_to_dce.lost,
                );
                // The report is the whole call's: it unbills the leg of the buyer that had the
                // call at its end (a rerouted call's earlier legs stand as they were billed).
                let last = cdr.legs.last_mut().filter(|l| !l.rerouted && l.billable);
                if let (true, false, Some(last)) = (q.one_way_audio, bill_one_way_audio, last) {
                    last.billable = false;
                    last.revenue_cents = 0;
                    last.payout_cents = 0;
                    let (revenue, payout, billable) = totals(&cdr.legs);
                    cdr.billable = billable;
                    cdr.revenue_cents = revenue;
                    cdr.payout_cents = payout;
                    cdr.margin_cents = revenue - payout;
                    if let Some((slot, day, fleet)) = refund {
                        slot.refund(day, cdr.bid_cents);
                        if let Some(buyer) = fleet {
                            self.out.push_back(Output::Caps(CapWrite::Count {
                                buyer,
                                keys: day,
                                calls: 0,
                                cents: -i64::from(cdr.bid_cents),
                            }));
                        }
                    }
                    tracing::info!(call = %cdr.id, "one-way audio: not billable for this campaign");
                }
                cdr.quality = Some(q);
                self.remember_billable(&cdr);
                self.out.push_back(Output::Cdr(Box::new(cdr)));
            }
        }
    }

    /// Calls in progress, oldest first.
    pub fn calls_view(&self, now: Instant) -> Vec<super::view::CallView> {
        let mut v: Vec<&Call> = self.calls.values().map(|c| &**c).collect();
        v.sort_by_key(|c| c.t0);
        v.into_iter().map(|c| call_view(c, now)).collect()
    }

    /// One call in progress.
    pub fn call_view(&self, id: &str, now: Instant) -> Option<super::view::CallView> {
        self.calls
            .values()
            .find(|c| c.id == id)
            .map(|c| call_view(c, now))
    }

    /// Every buyer of the running config with its live state.
    pub fn buyers_view(&self) -> Vec<super::view::BuyerView> {
        let now = self.clock.now_utc();
        (0..self.snapshot.buyers().len())
            .map(|i| super::view::buyer_view(&self.snapshot, i, now, self.dns.as_deref()))
            .collect()
    }

    /// Pause, resume or override the bid of buyer `id`; `None` when there is no such buyer.
    pub fn patch_buyer(
        &mut self,
        id: &str,
        patch: &super::view::BuyerPatch,
    ) -> Option<super::view::BuyerView> {
        let i = self.snapshot.buyers().iter().position(|b| b.id == id)?;
        let live = self.snapshot.live(i as dce_routing::BuyerId);
        if let Some(p) = patch.paused {
            let was = live.pause();
            if p {
                live.pause_by_operator(self.clock.now_utc().timestamp_millis().max(0) as u64);
            } else {
                live.resume();
            }
            tracing::info!(buyer = %id, paused = p, was = was.map_or("running", |w| w.by.as_str()), "buyer {} through the API", if p { "paused" } else { "resumed" });
        }
        if let Some(bid) = patch.bid_cents {
            live.set_bid_override(bid);
            tracing::info!(buyer = %id, bid_cents = ?bid, "bid override set through the API (until the next reload)");
        }
        Some(super::view::buyer_view(
            &self.snapshot,
            i,
            self.clock.now_utc(),
            self.dns.as_deref(),
        ))
    }
}

fn call_view(c: &Call, now: Instant) -> super::view::CallView {
    let secs = |d: std::time::Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
    let legs = c
        .legs
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let e = c.entries[l.entry];
            let outcome = c.outcomes[l.entry];
            let answered = l.state == BState::Confirmed && c.state.winner() == Some(li);
            let state = if answered {
                "answered"
            } else if c.current() == Some(li) && matches!(l.state, BState::Calling | BState::Early)
            {
                "ringing"
            } else {
                "ended"
            };
            super::view::LegView {
                buyer: c.snapshot.buyer(e.buyer).id.clone(),
                bid_cents: e.bid_cents,
                state: state.into(),
                code: outcome
                    .and_then(|o| o.code())
                    .or(if answered { Some(200) } else { None }),
            }
        })
        .collect::<Vec<_>>();
    let buyer = c.state.winner().or(c.current()).map(|li| {
        c.snapshot
            .buyer(c.entries[c.legs[li].entry].buyer)
            .id
            .clone()
    });
    super::view::CallView {
        id: c.id.clone(),
        carrier_call_id: c.a.dialog.call_id.clone(),
        carrier: c.carrier.clone(),
        campaign: c.snapshot.campaign(c.campaign).id.clone(),
        caller: c.caller.clone(),
        called: c.called.clone(),
        state: c.state.as_str().into(),
        age_s: secs(now.saturating_duration_since(c.t0)),
        talk_s: c
            .answered_at
            .map(|a| secs(now.saturating_duration_since(a))),
        buyer,
        attempts: c.attempts,
        compliance: c.compliance.to_string(),
        stir: c.stir.as_ref().map(|s| s.text()),
        legs,
    }
}

/// A call's revenue, payout and billability: the sums over its buyer legs.
fn totals(legs: &[super::cdr::LegRecord]) -> (u32, u32, bool) {
    (
        legs.iter().map(|l| l.revenue_cents).sum(),
        legs.iter().map(|l| l.payout_cents).sum(),
        legs.iter().any(|l| l.billable),
    )
}

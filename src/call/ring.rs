//! Ringing buyers: the ring tree. One buyer leg at a time, in auction order; a failure, a
//! timeout or a ring timeout moves on to the next; the carrier's CANCEL (or BYE on the early
//! dialog) ends it all; a buyer's answer makes it the winner.

use super::controller::InviteMark;
use super::controller::{Controller, Output};
use super::leg::{
    ack_for_2xx, cancel_for, contact_uri, push_body, route_set, sip_user, with_branch, Dialog,
};
use super::lookup::{CapLimits, CapWrite, LeaseAsk, Query};
use super::router::{Orphan, TxRole};
use super::state::Call;
use super::state::{AState, BLeg, BState, CallKey, CallState, LegRef, Timer};
use super::vocab::{AttemptEnd, BidOutcome, EndReason, HangupBy};
use crate::config::routing::target_of;
use crate::counters::Counter;
use dce_routing::{local_keys, DupStage, Outcome};
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Peer, State as TxState, TransactionLayer, Transmit, Transport, TxId};
use dce_sip::{HeaderName, Message, Method};
use std::time::{Duration, Instant};

/// Give back what an attempt on `buyer` that will not ring holds: its local slot and its
/// fleet-wide lease, if it has one.
pub(super) fn give_back(
    out: &mut std::collections::VecDeque<Output>,
    call: &mut Call,
    live: &dce_routing::BuyerLive,
    buyer: dce_routing::BuyerId,
) {
    live.release();
    if let Some(l) = call.lease.take() {
        if l.buyer == buyer {
            super::fleet::release_in_redis(out, l);
        } else {
            // another buyer's (never expected here): all of it
            super::fleet::drop_lease(out, &call.snapshot, l);
        }
    }
}

/// Give back what buyer leg `li` holds: its local slot and its fleet-wide lease.
pub(super) fn release_leg(
    out: &mut std::collections::VecDeque<Output>,
    call: &mut Call,
    li: usize,
) {
    let leg = &mut call.legs[li];
    if let Some(slot) = leg.slot.take() {
        slot.release();
    }
    if let Some(member) = leg.lease.take() {
        let buyer = call
            .snapshot
            .buyer(call.entries[leg.entry].buyer)
            .id
            .clone();
        out.push_back(Output::Caps(CapWrite::Release { member, buyer }));
    }
}

impl Controller {
    /// Answer the carrier's INVITE of call `key` with `code` (and `body`). A 2xx is kept and
    /// retransmitted until its ACK (§13.3.1.4).
    pub(super) fn respond_a(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        code: u16,
        body: super::state::Body,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let contact = self.settings.me.contact_on(call.a.peer.transport);
        let mut resp =
            call.a
                .invite
                .response(code, reason_phrase(code), &call.a.tag, Some(&call.a.via));
        if (101..300).contains(&code) {
            // RFC 3261 §12.1.1: a UAS copies the Record-Route of the request into responses
            // that make a dialog, so a proxy in front (Kamailio, an SBC) stays in its path.
            let rr: Vec<String> = call
                .a
                .invite
                .headers()
                .filter(|(n, _)| **n == HeaderName::RecordRoute)
                .map(|(_, v)| v.to_owned())
                .collect();
            for v in rr {
                resp.push(HeaderName::RecordRoute, v);
            }
            resp.push(HeaderName::Contact, contact);
        }
        push_body(&mut resp, body);
        call.carrier_code = code;
        if let Err(e) = layer.respond(call.a.tx, &resp, now) {
            tracing::warn!(call = %call.id, error = %e, code, "response to carrier not sent");
        }
        if (200..300).contains(&code) {
            call.a.state = AState::Accepted;
            let peer = call.a.peer;
            self.keep_2xx(key, 0, resp.print(), peer, now);
        }
    }

    /// Start an attempt on the next ranked buyer. False when none is left.
    pub(super) fn try_next(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        now: Instant,
    ) -> bool {
        let me = self.settings.me.clone();
        let max_attempts = self.settings.max_attempts;
        let max_udp = self.settings.max_udp_request;
        let udp_socket = self.settings.udp_socket;
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let mut asked = None;
        while call.attempts < max_attempts && call.next < call.entries.len() {
            let idx = call.next;
            call.next += 1;
            let entry = call.entries[idx];
            if !matches!(entry.outcome, Outcome::Ranked(_)) {
                continue;
            }
            let snap = call.snapshot.clone();
            let buyer = snap.buyer(entry.buyer);
            let live = snap.live(entry.buyer).clone();
            // Its fleet-wide lease came (granted, or the local policy allowed it): its local
            // slot is already held.
            let leased = call
                .lease
                .as_ref()
                .is_some_and(|l| l.buyer == entry.buyer && l.decided);
            // A real-time bid holds only until its expiry.
            let terms = call
                .bids
                .as_ref()
                .and_then(|b| b.terms(entry.buyer))
                .cloned();
            if terms
                .as_ref()
                .and_then(|t| t.expires_at)
                .is_some_and(|at| at <= now)
            {
                tracing::info!(call = %call.id, buyer = %buyer.id, "buyer skipped: its bid expired before its turn (excluded:expired)");
                call.outcomes[idx] = Some(BidOutcome::Excluded(dce_routing::Exclusion::Expired));
                if let Some(b) = call.bids.as_mut() {
                    b.expired(&snap, entry.buyer);
                }
                if leased {
                    give_back(&mut self.out, call, &live, entry.buyer);
                }
                continue;
            }
            // The ranking may be a few milliseconds old: the slot is the authority.
            if !leased && !live.try_reserve(buyer.max_concurrent) {
                call.outcomes[idx] =
                    Some(BidOutcome::Excluded(dce_routing::Exclusion::Concurrency));
                continue;
            }
            // A capped buyer's caps are the fleet's with Redis: its slot there is asked first
            // (one round trip; the call waits in `Leasing`).
            if !leased && buyer.capped() {
                if let Some(shared) = self.shared {
                    let lease = super::fleet::lease_for(&call.id, idx, entry.buyer, buyer);
                    let ask = LeaseAsk {
                        member: lease.member.clone(),
                        buyer: buyer.id.clone(),
                        limits: CapLimits::of(buyer),
                        keys: local_keys(buyer.tz(), call.wall(now)),
                        bid_cents: entry.bid_cents,
                    };
                    if let Some(stale) = call.lease.replace(lease) {
                        // an early lease for another buyer (never expected here)
                        super::fleet::drop_lease(&mut self.out, &snap, stale);
                    }
                    call.next = idx;
                    call.state = CallState::Leasing;
                    asked = Some((ask, now + shared.deadline));
                    break;
                }
            }
            // Nothing of the carrier's crosses unescaped: the caller goes into the buyer's
            // URI and From as a SIP user part, bounded (admission cut it to 64 characters).
            let caller = match sip_user(&call.caller) {
                // `sip:@host` is no URI: a caller DCE could not read (a tel: or odd From) goes
                // out as `anonymous` (found by fuzzing).
                c if c.is_empty() => "anonymous".to_owned(),
                c => c,
            };
            // A bid's destination: its SIP URI, or its number through the buyer's trunk.
            let target = match terms.as_ref().and_then(|t| t.destination.as_ref()) {
                Some(crate::rtb::Destination::Sip(u)) => target_of(u, "", &caller),
                Some(crate::rtb::Destination::Number(n)) => target_of(&buyer.uri, n, &caller),
                None => target_of(&buyer.uri, &sip_user(&call.called), &caller),
            };
            let (uri, host) = match target {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(call = %call.id, buyer = %buyer.id, error = %e, "buyer target unusable");
                    give_back(&mut self.out, call, &live, entry.buyer);
                    call.outcomes[idx] = Some(BidOutcome::Attempted(AttemptEnd::BadUri));
                    continue;
                }
            };
            let targets = super::targets::addresses(self.dns.as_deref(), &host, &mut self.ids);
            let Some(&(addr, transport)) = targets.first() else {
                tracing::info!(call = %call.id, buyer = %buyer.id, host = %super::targets::host_key(&host), "buyer skipped: its host has not resolved (excluded:dns)");
                give_back(&mut self.out, call, &live, entry.buyer);
                call.outcomes[idx] = Some(BidOutcome::Excluded(dce_routing::Exclusion::Dns));
                continue;
            };
            // A rerouted call goes on in the codec the carrier talks: only it is offered.
            let talk = call.answered_at.and(call.talk_codec.clone());
            let allow: Vec<String> = match talk {
                None => buyer.codecs.clone(),
                Some(c)
                    if buyer.codecs.is_empty()
                        || buyer.codecs.iter().any(|x| x.eq_ignore_ascii_case(&c)) =>
                {
                    vec![c]
                }
                Some(c) => {
                    tracing::info!(call = %call.id, buyer = %buyer.id, codec = %c, "buyer skipped: the rerouted carrier talks a codec not on its list (excluded:codec)");
                    give_back(&mut self.out, call, &live, entry.buyer);
                    call.outcomes[idx] = Some(BidOutcome::Excluded(dce_routing::Exclusion::Codec));
                    continue;
                }
            };
            let offer = match (&allow[..], &call.offer_b) {
                ([], o) | (_, o @ None) => o.clone(),
                (allow, Some((ct, sdp))) => match dce_media::sdp::keep_codecs(sdp, allow) {
                    Ok(Some(cut)) => Some((ct.clone(), cut)),
                    Ok(None) => {
                        tracing::info!(call = %call.id, buyer = %buyer.id, codecs = ?allow, "buyer skipped: none of the offered codecs is on its list (excluded:codec)");
                        give_back(&mut self.out, call, &live, entry.buyer);
                        call.outcomes[idx] =
                            Some(BidOutcome::Excluded(dce_routing::Exclusion::Codec));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(call = %call.id, buyer = %buyer.id, error = %e, "offer could not be cut to the buyer's codecs; sent as it is");
                        call.offer_b.clone()
                    }
                },
            };
            let called = sip_user(&call.called);
            let fields = crate::config::template::Fields {
                caller: &caller,
                called: &called,
                carrier: &call.carrier,
                campaign: &snap.campaign(call.campaign).id,
                buyer: &buyer.id,
                call_id: &call.id,
            };
            let from_user = match &buyer.from_user {
                Some(t) => match crate::config::template::expand(t, &fields) {
                    u if u.is_empty() => "anonymous".to_owned(),
                    u => u,
                },
                None => caller.clone(),
            };
            let extra: Vec<(String, String)> = buyer
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), crate::config::template::expand(v, &fields)))
                .collect();
            let tag = self.ids.tag();
            let b_call_id = self.ids.call_id(&me.host);
            let local = format!("<sip:{from_user}@{}>;tag={tag}", me.host);
            let mf = call
                .a
                .invite
                .max_forwards()
                .unwrap_or(70)
                .saturating_sub(1)
                .min(70);
            let udp = transport == Transport::Udp;
            let targets: Vec<std::net::SocketAddr> = targets
                .iter()
                .filter(|t| t.1 == transport)
                .map(|t| t.0)
                .collect();
            let mut invite = me.request_on(Method::Invite, &uri, mf, &self.ids.branch(), transport);
            invite
                .push(HeaderName::From, local.clone())
                .push(HeaderName::To, format!("<{uri}>"))
                .push(HeaderName::CallId, b_call_id.clone())
                .push(HeaderName::CSeq, "1 INVITE")
                .push(HeaderName::Contact, me.contact_on(transport))
                .push(HeaderName::Allow, crate::edge::ALLOW)
                .push(HeaderName::Other("X-DCE-Call-ID".into()), call.id.clone());
            for (n, v) in extra {
                invite.push(HeaderName::Other(n), v);
            }
            if let Some(st) = call.stir.as_deref() {
                // STIR/SHAKEN: the carrier's Identity goes on unchanged, with DCE's own `div`
                // PASSporT when it signs and the buyer's number is not the dialled one, and the
                // policy's `Reason`
                // when the call goes on flagged (RFC 9410)
                let mut carried = false;
                for v in call.a.invite.headers_named(&HeaderName::Identity) {
                    if v.len() <= crate::stir::passport::MAX_IDENTITY {
                        invite.push(HeaderName::Identity, v);
                        carried = true;
                    }
                }
                if let Some(div) = self.stir.as_ref().and_then(|s| s.div.as_ref()) {
                    let dest = uri
                        .split_once(':')
                        .and_then(|(_, r)| r.split_once('@'))
                        .map(|(u, _)| u)
                        .unwrap_or(&call.called);
                    // A buyer reached at the dialled number needs no `div`: the original
                    // PASSporT's `dest` still names it (RFC 8946 §1: `div` is for retargeting).
                    let retargeted = crate::stir::passport::tn_digits(dest)
                        != crate::stir::passport::tn_digits(&call.called);
                    let signed = (carried && retargeted)
                        .then(|| {
                            div.sign(
                                &call.caller,
                                &call.called,
                                dest,
                                self.clock.now_utc().timestamp(),
                            )
                        })
                        .flatten();
                    if let Some(v) = signed {
                        invite.push(HeaderName::Identity, v);
                    }
                }
                if let Some((code, text)) = &st.flag {
                    invite.push(HeaderName::Reason, crate::stir::reason_header(*code, text));
                }
            }
            push_body(&mut invite, offer);
            let peer = Peer {
                transport,
                addr,
                // UDP: the listener it leaves from; TCP/TLS: DCE's own connection to the
                // target (the driver opens or reuses it).
                conn: udp.then_some(udp_socket),
            };
            let size = invite.print().len();
            if udp && size > max_udp {
                // RFC 3261 §18.1.1: a request over 1300 bytes (path MTU unknown) must not go
                // over UDP; buyer trunks are UDP, so this attempt cannot be made.
                tracing::warn!(call = %call.id, buyer = %buyer.id, bytes = size, max = max_udp, "buyer INVITE too large for UDP; trying the next buyer");
                self.counters.inc(Counter::TooLargeForUdp);
                give_back(&mut self.out, call, &live, entry.buyer);
                call.outcomes[idx] = Some(BidOutcome::Attempted(AttemptEnd::TooLarge));
                continue;
            }
            let tx = match layer.send_request(invite.clone(), peer, now) {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::warn!(call = %call.id, error = %e, "buyer INVITE not sent");
                    give_back(&mut self.out, call, &live, entry.buyer);
                    call.outcomes[idx] = Some(BidOutcome::Attempted(AttemptEnd::SendFailed));
                    continue;
                }
            };
            tracing::debug!(call = %call.id, buyer = %buyer.id, bid = entry.bid_cents, attempt = call.attempts + 1, target = %uri, "ringing buyer");
            self.invite_marks.push(InviteMark {
                received: call.rx_at,
                failover: call.attempts > 0,
                bidders_us: call.bids.as_ref().map(|b| b.waited_us).filter(|&us| us > 0),
            });
            call.legs.push(BLeg {
                entry: idx,
                tx,
                invite,
                peer,
                tag: tag.clone(),
                dialog: Dialog {
                    call_id: b_call_id.clone(),
                    local,
                    remote: format!("<{uri}>"),
                    remote_target: uri,
                    route: Vec::new(),
                    cseq: 1,
                    transport,
                },
                slot: Some(live),
                lease: call.lease.take().filter(|l| l.slots).map(|l| l.member),
                state: BState::Calling,
                auth_tried: false,
                nonce_count: Default::default(),
                target: 0,
                targets,
                answered_at: None,
            });
            let li = call.legs.len() - 1;
            let more = call.legs[li].targets.len() > 1;
            call.state = CallState::Ringing { current: li };
            call.attempts += 1;
            let buyer = call.entries[call.legs[li].entry].buyer;
            self.remember(key, DupStage::Routed, buyer);
            self.router.add_client(tx, key, TxRole::Invite(li));
            self.router.add_dialog(&b_call_id, &tag, key, LegRef::B(li));
            let deadline = now + self.settings.ring_timeout;
            self.arm(key, Timer::Ring, deadline);
            if more {
                self.arm(key, Timer::Target, now + self.settings.target_timeout);
            }
            return true;
        }
        let Some((ask, deadline)) = asked else {
            return false;
        };
        let mut lookups = super::lookup::Lookups::default();
        let mut requests = Vec::new();
        self.add_lookup(
            key,
            Query::Lease(ask),
            deadline,
            &mut lookups,
            &mut requests,
        );
        if let Some(call) = self.calls.get_mut(&key) {
            call.lookups.outstanding.extend(lookups.outstanding);
        }
        for r in requests {
            self.out.push_back(Output::Lookup(r));
        }
        self.arm(key, Timer::Lookups, deadline);
        true
    }

    /// Buyer leg `li` has failed (a failure, a timeout, an unusable answer, or it was given up
    /// on): release what it holds and, when it was the one ringing, move on — or fail the call
    /// when nobody is left. `invite_over`: its INVITE has finished (a final response or Timer
    /// B); a leg given up on before that stays pending until it does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn leg_failed(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        outcome: BidOutcome,
        code: Option<u16>,
        invite_over: bool,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        release_leg(&mut self.out, call, li);
        let leg = &mut call.legs[li];
        let given_up = matches!(leg.state, BState::CancelPending | BState::Cancelled);
        let buyer = call.entries[leg.entry].buyer;
        let snap = call.snapshot.clone();
        // An abandoned leg keeps the reason it was abandoned for (ring timeout, cancel).
        if !given_up || call.outcomes[leg.entry].is_none() {
            call.outcomes[leg.entry] = Some(outcome);
        }
        // A leg given up on stays pending until its INVITE has a final response.
        if invite_over {
            leg.state = BState::Done;
        }
        if code.is_some() {
            call.buyer_code = code;
        }
        let ringing = call.state == (CallState::Ringing { current: li });
        if !given_up || invite_over {
            self.breaker_note(&snap, buyer, outcome);
        }
        // DCE's ring timeout gives the leg up before its INVITE ends: counted once, here.
        if !given_up || outcome == BidOutcome::Attempted(AttemptEnd::RingTimeout) {
            self.unanswered_note(&snap, buyer, outcome);
        }
        if !ringing {
            return;
        }
        self.disarm(key, Timer::Ring);
        self.disarm(key, Timer::Target);
        if !self.try_next(layer, key, now) {
            self.nobody_left(layer, key, EndReason::EveryAttemptFailed, now);
        }
    }

    /// Give up buyer leg `li` while it rings: CANCEL it now if it has sent a provisional,
    /// else as soon as it does (§9.1: no CANCEL before a provisional).
    pub(super) fn abandon(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        now: Instant,
    ) {
        let Some(leg) = self.calls.get_mut(&key).map(|c| &mut c.legs[li]) else {
            return;
        };
        match leg.state {
            BState::Early => {
                leg.state = BState::Cancelled;
                if let Ok(ctx) = layer.send_request(cancel_for(&leg.invite), leg.peer, now) {
                    self.router.add_client(ctx, key, TxRole::Fire);
                }
            }
            BState::Calling => leg.state = BState::CancelPending,
            _ => {}
        }
    }

    /// The current buyer did not answer in time.
    pub(super) fn ring_timeout(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        now: Instant,
    ) {
        let Some(li) = self.calls.get(&key).and_then(|c| c.current()) else {
            return;
        };
        tracing::debug!(call = %self.call_id(key), "buyer did not answer in time");
        self.abandon(layer, key, li, now);
        self.leg_failed(
            layer,
            key,
            li,
            BidOutcome::Attempted(AttemptEnd::RingTimeout),
            None,
            false,
            now,
        );
    }

    /// The carrier gave up on a ringing call (CANCEL, or BYE on the early dialog): 487 to its
    /// INVITE, CANCEL to the buyer ringing, and the call ends `cancelled`.
    pub(super) fn cancel_ringing(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        tracing::debug!(call = %call.id, "carrier cancelled while ringing");
        self.counters.inc(Counter::CallCancelled);
        let a_tx = call.a.tx;
        if let Some(li) = call.current() {
            let entry = call.legs[li].entry;
            call.outcomes[entry] = Some(BidOutcome::Attempted(AttemptEnd::Cancelled));
            self.abandon(layer, key, li, now);
        }
        if layer.state(a_tx) == Some(TxState::Proceeding) {
            self.respond_a(layer, key, 487, None, now);
        }
        self.end(
            key,
            Some(HangupBy::Carrier),
            EndReason::CancelledByCarrier,
            now,
        );
    }

    /// CANCEL matched the INVITE of server transaction `invite_tx`. Returns false when that
    /// INVITE is not a call of ours.
    pub fn on_cancel(
        &mut self,
        layer: &mut TransactionLayer,
        invite_tx: TxId,
        now: Instant,
    ) -> bool {
        let Some(key) = self.router.server_invite(invite_tx) else {
            return false;
        };
        let Some(call) = self.calls.get(&key) else {
            return false;
        };
        // A CANCEL after the INVITE's 2xx changes nothing (§9.2), rerouting or not.
        if call.answered_at.is_none() {
            let state = call.state;
            self.carrier_gave_up(layer, key, state, now);
        }
        true
    }

    /// The carrier gave up before the answer (CANCEL, or BYE on the early dialog): a call
    /// still checking is refused with 487 and never rings; a ringing one is cancelled. An
    /// answered call is not changed.
    pub(super) fn carrier_gave_up(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        state: CallState,
        now: Instant,
    ) {
        match state {
            CallState::Checking => {
                let r = super::admit::Rejection::new(
                    487,
                    Counter::CallCancelled,
                    EndReason::CancelledByCarrier,
                );
                self.refuse_call(layer, key, r, now);
            }
            CallState::Leasing | CallState::Ringing { .. } => self.cancel_ringing(layer, key, now),
            CallState::Answered { .. } | CallState::Connected { .. } => {}
        }
    }

    /// A response on one of our client transactions.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        if self.ping_response(layer, tx, code, now) {
            return;
        }
        if self.router.orphan_mut(tx).is_some() {
            self.on_orphan_response(layer, tx, &msg, now);
            return;
        }
        let (key, invite) = match self.router.client(tx) {
            None => return,
            Some((k, TxRole::Invite(li))) => (*k, Some(*li)),
            Some((k, _)) => (*k, None),
        };
        match invite {
            Some(li) => {
                if code >= 300 {
                    self.router.remove_client(tx);
                }
                self.on_invite_response(layer, key, li, msg, now);
            }
            None if code >= 200 => match self.router.remove_client(tx) {
                Some((_, TxRole::Relay(r))) if matches!(code, 401 | 407) && r.retry.is_some() => {
                    if let Err(r) = self.answer_relay_challenge(layer, key, r, &msg, now) {
                        self.relay_response(layer, key, &r, &msg, now);
                    }
                }
                Some((_, TxRole::Relay(r))) => self.relay_response(layer, key, &r, &msg, now),
                Some((_, TxRole::Authed(a))) if matches!(code, 401 | 407) => {
                    self.answer_in_dialog_challenge(layer, key, *a, &msg, now)
                }
                _ => {}
            },
            None if code > 100 => self.relay_provisional(layer, key, tx, &msg, now),
            None => {}
        }
    }

    /// A response for the INVITE of a call that has ended: CANCEL it once it rings, ACK and
    /// hang up a late 2xx.
    fn on_orphan_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: &Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        let me = self.settings.me.clone();
        if code < 200 {
            if let Some(o) = self.router.orphan_mut(tx) {
                if code > 100 && o.cancel_pending {
                    o.cancel_pending = false;
                    let _ = layer.send_request(cancel_for(&o.invite), o.peer, now);
                }
            }
            return;
        }
        let Some(mut o) = self.router.remove_orphan(tx) else {
            return;
        };
        if code < 300 {
            o.dialog.remote = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
            if let Some(c) = contact_uri(msg) {
                o.dialog.remote_target = c;
            }
            o.dialog.route = route_set(msg, true);
            let ack = ack_for_2xx(&me, &o.dialog, msg.cseq(), &self.ids.branch());
            self.transmit(Transmit {
                to: o.peer,
                bytes: ack.print(),
            });
            let bye = o.dialog.request(&me, Method::Bye, &self.ids.branch());
            let _ = layer.send_request(bye, o.peer, now);
        }
    }

    fn on_invite_response(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        msg: Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let ringing = call.state == (CallState::Ringing { current: li });
        if ringing {
            // The current target answers: no moving on for want of a response.
            call.timers.stop(Timer::Target);
        }
        // Late offer: the carrier's INVITE had no SDP, the buyer's 2xx carries the offer, and
        // the answer comes in the carrier's ACK — so our ACK to the buyer waits for it.
        let late_offer = call.offer_b.is_none() && !msg.body().is_empty();
        let held = call.held_b_ack.is_some();
        let leg = &mut call.legs[li];
        match code {
            100 => {}
            101..=199 => match leg.state {
                BState::CancelPending => {
                    leg.state = BState::Cancelled;
                    if let Ok(ctx) = layer.send_request(cancel_for(&leg.invite), leg.peer, now) {
                        self.router.add_client(ctx, key, TxRole::Fire);
                    }
                }
                BState::Calling | BState::Early => {
                    leg.state = BState::Early;
                    // a rerouted call's carrier has its answer already: nothing to tell it
                    if ringing && call.answered_at.is_none() {
                        let code = if code == 183 { 183 } else { 180 };
                        let body = self
                            .body_for_other_side(key, LegRef::B(li), &msg)
                            .unwrap_or(None);
                        self.respond_a(layer, key, code, body, now);
                    }
                }
                _ => {}
            },
            200..=299 => {
                if leg.state == BState::Confirmed {
                    // A retransmitted 2xx: our ACK was lost (unless it is still held).
                    if !held {
                        let ack = ack_for_2xx(&me, &leg.dialog, msg.cseq(), &self.ids.branch());
                        let to = leg.peer;
                        self.transmit(Transmit {
                            to,
                            bytes: ack.print(),
                        });
                    }
                    return;
                }
                leg.dialog.remote = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
                if let Some(c) = contact_uri(&msg) {
                    leg.dialog.remote_target = c;
                }
                leg.dialog.route = route_set(&msg, true);
                let (dialog, peer) = (leg.dialog.clone(), leg.peer);
                if !ringing {
                    // Too late: this buyer was abandoned (or another won). ACK, then BYE.
                    leg.state = BState::Done;
                    release_leg(&mut self.out, call, li);
                    let mut d = dialog;
                    let ack = ack_for_2xx(&me, &d, msg.cseq(), &self.ids.branch());
                    let bye = d.request(&me, Method::Bye, &self.ids.branch());
                    self.transmit(Transmit {
                        to: peer,
                        bytes: ack.print(),
                    });
                    if let Ok(btx) = layer.send_request(bye, peer, now) {
                        self.router.add_client(btx, key, TxRole::Fire);
                    }
                    return;
                }
                leg.state = BState::Confirmed;
                let entry = leg.entry;
                if late_offer {
                    call.held_b_ack = Some((dialog, peer));
                } else {
                    let ack = ack_for_2xx(&me, &dialog, msg.cseq(), &self.ids.branch());
                    self.transmit(Transmit {
                        to: peer,
                        bytes: ack.print(),
                    });
                }
                self.answered(layer, key, li, entry, code, &msg, now);
            }
            _ => {
                if matches!(code, 401 | 407) && self.answer_challenge(layer, key, li, &msg, now) {
                    return;
                }
                // RFC 3263 §4.3: a 503 moves on to the buyer's next target, same attempt.
                if code == 503 && self.next_target(layer, key, li, "503", now) {
                    return;
                }
                let id = self
                    .calls
                    .get(&key)
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                tracing::debug!(call = %id, code, "buyer declined");
                self.leg_failed(
                    layer,
                    key,
                    li,
                    BidOutcome::Attempted(AttemptEnd::Code(code)),
                    Some(code),
                    true,
                    now,
                );
            }
        }
    }

    /// A `401`/`407` from the buyer ringing on leg `li`: resend its INVITE once, with the
    /// answer to the strongest challenge DCE can answer (RFC 3261 §22.2, RFC 8760), when the
    /// buyer has credentials. The same dialog (Call-ID, From tag), the next CSeq, a new branch;
    /// the ring timer runs on. False when there is nothing to answer with (then the leg fails
    /// with the code, `attempted:401`/`attempted:407`).
    fn answer_challenge(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        msg: &Message,
        now: Instant,
    ) -> bool {
        let code = msg.code().unwrap_or(0);
        let branch = self.ids.branch();
        let cnonce = self.ids.tag();
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        if call.state != (CallState::Ringing { current: li }) {
            return false;
        }
        let leg = &mut call.legs[li];
        if leg.auth_tried || !matches!(leg.state, BState::Calling | BState::Early) {
            return false;
        }
        let snap = call.snapshot.clone();
        let buyer = snap.buyer(call.entries[leg.entry].buyer);
        let Some(auth) = &buyer.auth else {
            return false;
        };
        let (challenge, answer_name) = match super::challenge::challenge_in(msg) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(call = %call.id, buyer = %buyer.id, code, error = %e, "buyer challenge not answerable");
                return false;
            }
        };
        let uri = match &leg.invite.start {
            dce_sip::StartLineBuf::Request { uri, .. } => uri.clone(),
            dce_sip::StartLineBuf::Response { .. } => return false,
        };
        let creds = dce_sip::digest::Credentials {
            user: auth.user.clone(),
        };
        let nc = leg.nonce_count.next(&challenge.nonce);
        let value = challenge.answer(&creds, auth.password(), "INVITE", &uri, &cnonce, nc);
        let mut invite = with_branch(&leg.invite, &branch);
        for (n, v) in invite.headers.iter_mut() {
            if *n == HeaderName::CSeq {
                *v = "2 INVITE".into();
            }
        }
        super::challenge::put_answer(&mut invite, answer_name, value);
        let peer = leg.peer;
        let tx = match layer.send_request(invite.clone(), peer, now) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(call = %call.id, error = %e, "authenticated buyer INVITE not sent");
                return false;
            }
        };
        tracing::debug!(call = %call.id, buyer = %buyer.id, code, algorithm = challenge.algorithm.name(), "buyer challenged; INVITE resent with credentials");
        leg.tx = tx;
        leg.invite = invite;
        leg.dialog.cseq = 2;
        leg.auth_tried = true;
        self.router.add_client(tx, key, TxRole::Invite(li));
        true
    }

    /// Buyer leg `li` answered the ringing call: it wins.
    #[allow(clippy::too_many_arguments)]
    fn answered(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        entry: usize,
        code: u16,
        msg: &Message,
        now: Instant,
    ) {
        if let Some((snap, b)) = self
            .calls
            .get(&key)
            .map(|c| (c.snapshot.clone(), c.entries[entry].buyer))
        {
            self.breaker_note(&snap, b, BidOutcome::Won);
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // A rerouted call's carrier is connected already: this buyer takes over its media.
        let rerouted = call.answered_at.is_some();
        call.outcomes[entry] = Some(BidOutcome::Won);
        call.legs[li].answered_at = Some(now);
        if rerouted {
            call.state = CallState::Connected { winner: li };
        } else {
            call.state = CallState::Answered { winner: li };
            call.answered_at = Some(now);
        }
        call.buyer_code = Some(code);
        let e = call.entries[entry];
        let snap = call.snapshot.clone();
        let buyer = snap.buyer(e.buyer);
        let at = local_keys(buyer.tz(), call.wall(now));
        snap.live(e.buyer).answered(at, e.bid_cents);
        let fleet = self.shared.is_some();
        super::fleet::count(&mut self.out, fleet, buyer, at, 1, i64::from(e.bid_cents));
        let max = Duration::from_secs(u64::from(snap.campaign(call.campaign).max_duration_s));
        tracing::debug!(call = %call.id, buyer = %buyer.id, rerouted, "call answered");
        if !rerouted {
            self.counters.inc(Counter::CallAnswered);
        }
        // What the carrier will talk: a rerouted call may go only to a buyer that speaks it.
        let reroutes = snap.campaign(call.campaign).reroute_within_s > 0;
        let codec = (reroutes && !rerouted)
            .then(|| super::reroute::first_audio_codec(msg.body()))
            .flatten();
        let speaks = !rerouted
            || super::reroute::first_audio_codec(msg.body())
                .zip(call.talk_codec.as_ref())
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b));
        if codec.is_some() {
            call.talk_codec = codec;
        }
        let campaign = &snap.campaign(call.campaign).id;
        self.events.emit(
            "call.answered",
            campaign,
            || vec![buyer.id.clone()],
            || {
                serde_json::json!({
                    "call_id": call.id,
                    "buyer": buyer.id,
                    "bid_cents": e.bid_cents,
                    "ring_ms": now.saturating_duration_since(call.t0).as_millis() as u64,
                    "reroute": call.reroutes,
                })
            },
        );
        self.disarm(key, Timer::Ring);
        if !rerouted {
            self.arm(key, Timer::MaxDuration, now + max);
        }
        if !speaks {
            tracing::warn!(call = %self.call_id(key), "rerouted buyer answered with another codec than the carrier talks");
            self.unanswer(layer, key, li, now);
            return;
        }
        match self.body_for_other_side(key, LegRef::B(li), msg) {
            Ok(_) if rerouted => {
                // The relay's buyer side now goes to this buyer; the carrier hears it, no
                // re-INVITE (DCE's ports towards it are the same).
                if let Some(id) = self.calls.get(&key).and_then(|c| c.media) {
                    self.media.answered(id);
                }
                self.remember(key, DupStage::Connected, e.buyer);
            }
            Ok(body) => {
                if let Some(id) = self.calls.get(&key).and_then(|c| c.media) {
                    self.media.answered(id);
                }
                self.start_recording(key, e.buyer);
                // connected only once the answer is usable (an SDP DCE cannot anchor is not)
                self.remember(key, DupStage::Connected, e.buyer);
                self.respond_a(layer, key, 200, body, now);
            }
            Err(e) => {
                // The buyer's SDP cannot be anchored: hang it up and try the next one.
                tracing::warn!(call = %self.call_id(key), error = %e, "buyer answered with SDP DCE cannot anchor");
                self.unanswer(layer, key, li, now);
            }
        }
    }

    /// Undo an answer that cannot be used (buyer SDP unusable): BYE the buyer, give back what
    /// the answer took, and move on to the next buyer.
    fn unanswer(&mut self, layer: &mut TransactionLayer, key: CallKey, li: usize, now: Instant) {
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.state = CallState::Ringing { current: li };
        // a rerouted call's carrier stays answered (and its max duration runs on)
        let rerouted = !call.legs_done.is_empty();
        if !rerouted {
            call.answered_at = None;
        }
        call.held_b_ack = None;
        let branch = self.ids.branch();
        let leg = &mut call.legs[li];
        leg.answered_at = None;
        let e = call.entries[leg.entry];
        let bye = leg.dialog.request(&me, Method::Bye, &branch);
        if let Ok(btx) = layer.send_request(bye, leg.peer, now) {
            self.router.add_client(btx, key, TxRole::Fire);
        }
        let buyer = call.snapshot.buyer(e.buyer);
        let at = local_keys(buyer.tz(), call.wall(now));
        call.snapshot.live(e.buyer).refund(at, e.bid_cents);
        let fleet = self.shared.is_some();
        super::fleet::count(&mut self.out, fleet, buyer, at, 0, -i64::from(e.bid_cents));
        if !rerouted {
            self.disarm(key, Timer::MaxDuration);
        }
        self.leg_failed(
            layer,
            key,
            li,
            BidOutcome::Attempted(AttemptEnd::BadSdp),
            None,
            true,
            now,
        );
    }

    /// A client transaction timed out (Timer B or F).
    pub fn on_tx_timeout(&mut self, layer: &mut TransactionLayer, tx: TxId, now: Instant) {
        if self.ping_timed_out(layer, tx, now) {
            return;
        }
        self.router.remove_orphan(tx);
        let Some((key, role)) = self.router.remove_client(tx) else {
            return;
        };
        match role {
            TxRole::Invite(li) => self.next_target_or_fail(layer, key, li, "timeout", 408, now),
            TxRole::Relay(r) => {
                let resp = r.req.response(408, reason_phrase(408), "", Some(&r.via));
                let _ = layer.respond(r.server_tx, &resp, now);
            }
            TxRole::Fire | TxRole::Authed(_) => {}
        }
    }

    /// Keep buyer leg `leg`, still pending, after its call is gone.
    pub(super) fn orphan(&mut self, leg: &BLeg) {
        self.router.add_orphan(
            leg.tx,
            Orphan {
                invite: leg.invite.clone(),
                peer: leg.peer,
                dialog: leg.dialog.clone(),
                cancel_pending: leg.state == BState::CancelPending,
            },
        );
    }
}

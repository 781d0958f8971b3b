//! Duplicate-call rules in the call path (decision 0015): what a call remembers as it goes
//! (`routed` at each buyer INVITE, `connected` at the answer, `billable` with the final CDR),
//! in this node's memory and, with Redis, in the fleet's (`Output::Remember`); the question a
//! new call asks the fleet, and the judgement on its answer. The memory and the rules
//! themselves are in `callers.rs`.

use super::callers::{judge, rememberable, Judgement, Mark, Memory};
use super::cdr::Cdr;
use super::controller::{Controller, Output};
use super::lookup::{DupCheck, DupSeen, DupWrite};
use super::state::{Call, CallKey};
use dce_routing::{BuyerId, CampaignId, DupStage, Entry, Outcome, Snapshot};

impl Controller {
    /// Remember that call `key` reached `stage` with buyer `b`, in the records its rules
    /// read: the campaign's (when it has a rule) and the buyer's (when it has its own).
    pub(super) fn remember(&mut self, key: CallKey, stage: DupStage, b: BuyerId) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.snapshot.dup_window_s() == 0 {
            return;
        }
        let snap = call.snapshot.clone();
        let c = snap.campaign(call.campaign);
        let buyer = snap.buyer(b);
        let m = Mark {
            stage,
            campaign: c.duplicates.map(|_| c.id.as_str()),
            buyer: &buyer.id,
            buyer_record: buyer.duplicates.is_some(),
            caller: &call.caller.clone(),
            at_s: self.clock.now_utc().timestamp(),
        };
        self.note(&m, snap.dup_window_s());
    }

    /// A finished CDR: remember a billable call (the last stage a call reaches) for each
    /// buyer whose leg was billable, by the running config's rules.
    pub(super) fn remember_billable(&mut self, cdr: &Cdr) {
        if !cdr.billable || self.snapshot.dup_window_s() == 0 {
            return;
        }
        for leg in cdr.legs.iter().filter(|l| l.billable) {
            self.remember_billable_for(cdr, &leg.buyer_id);
        }
    }

    fn remember_billable_for(&mut self, cdr: &Cdr, b: &String) {
        let snap = self.snapshot.clone();
        let ruled = snap
            .campaigns()
            .iter()
            .any(|c| c.id == cdr.campaign && c.duplicates.is_some());
        let own = snap
            .buyers()
            .iter()
            .any(|x| x.id == *b && x.duplicates.is_some());
        let m = Mark {
            stage: DupStage::Billable,
            campaign: ruled.then_some(cdr.campaign.as_str()),
            buyer: b,
            buyer_record: own,
            caller: &cdr.caller,
            at_s: self.clock.now_utc().timestamp(),
        };
        self.note(&m, snap.dup_window_s());
    }

    /// Remember `m` in this node's memory and, with Redis, in the fleet's.
    fn note(&mut self, m: &Mark<'_>, keep_s: i64) {
        if keep_s == 0 || (m.campaign.is_none() && !m.buyer_record) || !rememberable(m.caller) {
            return;
        }
        self.duplicates.record(m, keep_s);
        if self.shared.is_some() {
            self.out.push_back(Output::Remember(DupWrite {
                stage: m.stage,
                campaign: m.campaign.map(str::to_owned),
                buyer: m.buyer.to_owned(),
                buyer_record: m.buyer_record,
                caller: m.caller.to_owned(),
                at_s: m.at_s,
                keep_s,
            }));
        }
    }
}

/// The fleet-wide question a new call asks Redis, when the snapshot's rules need one.
pub(super) fn fleet_check(
    snap: &Snapshot,
    campaign: CampaignId,
    caller: &str,
    entries: &[Entry],
) -> Option<DupCheck> {
    if snap.dup_window_s() == 0 || !rememberable(caller) {
        return None;
    }
    let c = snap.campaign(campaign);
    let buyers: Vec<(BuyerId, String)> = entries
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ranked(_)))
        .filter(|e| snap.buyer(e.buyer).duplicates.is_some())
        .map(|e| (e.buyer, snap.buyer(e.buyer).id.clone()))
        .collect();
    if c.duplicates.is_none() && buyers.is_empty() {
        return None;
    }
    Some(DupCheck {
        caller: caller.to_owned(),
        campaign: c.duplicates.map(|_| c.id.clone()),
        buyers,
    })
}

/// Judge `call` on what Redis answered; when Redis failed, on this node's memory (the CDR's
/// `duplicate` then starts with `fleet_lookup_failed`).
pub(super) fn fleet_judgement(
    memory: &Memory,
    counters: &crate::counters::Counters,
    call: &Call,
    seen: Result<DupSeen, String>,
    now_s: i64,
) -> Judgement {
    match seen {
        Ok(seen) => judge(
            &call.snapshot,
            call.campaign,
            &call.entries,
            now_s,
            seen.campaign.as_ref(),
            |b| seen.buyers.iter().find(|(x, _)| *x == b).map(|(_, s)| s),
        ),
        Err(e) => {
            counters.inc(crate::counters::Counter::DuplicateLookupError);
            tracing::warn!(call = %call.id, error = %e, "fleet-wide duplicate lookup failed; this node's memory decides");
            let mut j = memory.judge(
                &call.snapshot,
                call.campaign,
                &call.caller,
                &call.entries,
                now_s,
            );
            j.fired.insert(0, "fleet_lookup_failed".into());
            j
        }
    }
}

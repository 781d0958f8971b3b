//! Duplicate-call rules (issue #15): what a repeat caller gets.
//!
//! A campaign's `duplicates = { window_days, after, action }` is judged on the caller's
//! earlier calls to the campaign; a buyer's own rule on the caller's earlier calls to that
//! buyer (any campaign), and replaces the campaign's for that buyer. An earlier call counts
//! when it reached `after` (`routed`: a buyer was rung; `connected`: a buyer answered;
//! `billable`) less than `window_days` ago.
//!
//! | action | a campaign's rule | a buyer's rule |
//! |---|---|---|
//! | `reject` | the call is refused (`603`, reason `duplicate`) | that buyer is `excluded:duplicate` |
//! | `same_buyer` | the earlier call's buyer goes first | that buyer goes first |
//! | `not_billable` | the call is routed, never billable | billable unless that buyer takes it |
//! | `next_buyer` | the earlier call's buyer is `excluded:duplicate` | that buyer is `excluded:duplicate` |
//!
//! [`Memory`] is the node's record of who called whom and how far each call got, shared by
//! every SIP worker, refilled from the CDR database at start (`Db::dup_history`). It is
//! bounded: entries older than the longest window are swept, and at [`MAX_KEYS`] a new
//! caller is not remembered (logged).

use dce_routing::{BuyerId, CampaignId, DupAction, DupStage, Entry, Exclusion, Outcome, Snapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most (campaign or buyer, caller) pairs a node remembers.
pub const MAX_KEYS: usize = 2_000_000;

/// How far one caller's calls to one campaign (or buyer) got: per stage, per buyer, the
/// latest time (Unix seconds) a call of theirs reached it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    stages: [Vec<(i64, Arc<str>)>; 3],
}

impl Seen {
    /// The buyers whose calls reached `stage` less than `window_s` before `now_s`, the
    /// most recent first.
    pub fn within(&self, stage: DupStage, window_s: i64, now_s: i64) -> Vec<&str> {
        let mut v: Vec<&(i64, Arc<str>)> = self.stages[stage.index()]
            .iter()
            .filter(|(at, _)| now_s - *at < window_s)
            .collect();
        v.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        v.into_iter().map(|(_, b)| &**b).collect()
    }

    /// From a Redis hash: `"<stage>:<buyer>"` → `"<unix s>"` (fields it cannot read are
    /// skipped).
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Seen {
        let mut seen = Seen::default();
        for (k, v) in fields {
            let Some((stage, buyer)) = k.split_once(':') else {
                continue;
            };
            if let (Some(stage), Ok(at)) = (DupStage::parse(stage), v.parse::<i64>()) {
                put(&mut seen, stage, at, &Arc::from(buyer));
            }
        }
        seen
    }

    /// The field of a Redis hash for `stage` with `buyer` (see [`Seen::from_fields`]).
    pub fn field(stage: DupStage, buyer: &str) -> String {
        format!("{}:{buyer}", stage.as_str())
    }

    fn newest(&self) -> i64 {
        self.stages
            .iter()
            .flatten()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Box<str>, Seen>,
    /// Unix second of the last sweep.
    swept_s: i64,
    /// A full memory was logged (once per sweep).
    warned: bool,
}

/// The node's memory of callers (see the module docs).
#[derive(Debug, Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

fn campaign_key(campaign: &str, caller: &str) -> String {
    format!("c\u{1f}{campaign}\u{1f}{caller}")
}

fn buyer_key(buyer: &str, caller: &str) -> String {
    format!("b\u{1f}{buyer}\u{1f}{caller}")
}

impl Memory {
    /// A call of `caller` to `campaign` reached `stage` with `buyer` at `at_s` (Unix
    /// seconds); `campaign` `None`: the buyer's record only (a later buyer rung in the same
    /// call). `keep_s`: the longest window in force (older entries may be swept).
    pub fn record(
        &self,
        stage: DupStage,
        campaign: Option<&str>,
        buyer: &str,
        caller: &str,
        at_s: i64,
        keep_s: i64,
    ) {
        let buyer: Arc<str> = Arc::from(buyer);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if at_s - g.swept_s >= 3_600 || g.map.len() >= MAX_KEYS {
            let before = g.map.len();
            g.map.retain(|_, s| at_s - s.newest() < keep_s);
            g.swept_s = at_s;
            g.warned = false;
            tracing::debug!(
                kept = g.map.len(),
                dropped = before - g.map.len(),
                "duplicate memory swept"
            );
        }
        let keys = campaign
            .map(|c| campaign_key(c, caller))
            .into_iter()
            .chain([buyer_key(&buyer, caller)]);
        for key in keys {
            let full = g.map.len() >= MAX_KEYS;
            match g.map.get_mut(key.as_str()) {
                Some(seen) => put(seen, stage, at_s, &buyer),
                None if full => {
                    if !g.warned {
                        g.warned = true;
                        tracing::warn!(
                            max = MAX_KEYS,
                            "duplicate memory full: new callers are not remembered until older ones expire"
                        );
                    }
                }
                None => {
                    let mut seen = Seen::default();
                    put(&mut seen, stage, at_s, &buyer);
                    g.map.insert(key.into_boxed_str(), seen);
                }
            }
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Judge a new call of `caller` to `campaign` on the snapshot's rules at `now_s`, over
    /// the auction's `entries`.
    pub fn judge(
        &self,
        snap: &Snapshot,
        campaign: CampaignId,
        caller: &str,
        entries: &[Entry],
        now_s: i64,
    ) -> Judgement {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let c = snap.campaign(campaign);
        let seen_campaign = c
            .duplicates
            .and_then(|_| g.map.get(campaign_key(&c.id, caller).as_str()));
        judge(snap, campaign, entries, now_s, seen_campaign, |b| {
            g.map.get(buyer_key(&snap.buyer(b).id, caller).as_str())
        })
    }
}

impl super::Controller {
    /// Remember that call `key` reached `stage` with buyer `b` (when the snapshot has any
    /// duplicate rule); `campaign_too`: in the campaign's record as well as the buyer's.
    pub(super) fn remember(
        &mut self,
        key: super::state::CallKey,
        stage: DupStage,
        b: BuyerId,
        campaign_too: bool,
    ) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let keep_s = call.snapshot.dup_window_s();
        if keep_s == 0 {
            return;
        }
        let campaign = &call.snapshot.campaign(call.campaign).id;
        let (buyer, at_s) = (&call.snapshot.buyer(b).id, self.clock.now_utc().timestamp());
        let campaign = campaign_too.then_some(campaign.as_str());
        self.duplicates
            .record(stage, campaign, buyer, &call.caller, at_s, keep_s);
        if self.shared.is_some() {
            let w = super::lookup::DupWrite {
                stage,
                campaign: campaign.map(str::to_owned),
                buyer: buyer.clone(),
                caller: call.caller.clone(),
                at_s,
                keep_s,
            };
            self.out.push_back(super::controller::Output::Remember(w));
        }
    }

    /// A finished CDR: remember a billable call (the last stage a call reaches).
    pub(super) fn remember_billable(&mut self, cdr: &super::cdr::Cdr) {
        let keep_s = self.snapshot.dup_window_s();
        if keep_s == 0 || !cdr.billable {
            return;
        }
        if let Some(b) = &cdr.buyer_id {
            let at_s = self.clock.now_utc().timestamp();
            let stage = DupStage::Billable;
            self.duplicates
                .record(stage, Some(&cdr.campaign), b, &cdr.caller, at_s, keep_s);
            if self.shared.is_some() {
                let w = super::lookup::DupWrite {
                    stage,
                    campaign: Some(cdr.campaign.clone()),
                    buyer: b.clone(),
                    caller: cdr.caller.clone(),
                    at_s,
                    keep_s,
                };
                self.out.push_back(super::controller::Output::Remember(w));
            }
        }
    }
}

/// How a campaign's `reject` refuses the call.
pub(super) fn rejection() -> super::admit::Rejection {
    super::admit::Rejection::new(
        603,
        crate::counters::Counter::Duplicate603,
        super::vocab::EndReason::Duplicate,
    )
    .with(
        dce_sip::HeaderName::Reason,
        "SIP;cause=603;text=\"duplicate\"",
    )
}

/// The fleet-wide question a new call asks Redis, when the snapshot's rules need one.
pub(super) fn fleet_check(
    snap: &Snapshot,
    campaign: CampaignId,
    caller: &str,
    entries: &[Entry],
) -> Option<super::lookup::DupCheck> {
    if snap.dup_window_s() == 0 {
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
    Some(super::lookup::DupCheck {
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
    call: &super::state::Call,
    seen: Result<super::lookup::DupSeen, String>,
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

fn put(seen: &mut Seen, stage: DupStage, at_s: i64, buyer: &Arc<str>) {
    let v = &mut seen.stages[stage.index()];
    match v.iter_mut().find(|(_, b)| b == buyer) {
        Some((t, _)) => *t = (*t).max(at_s),
        None => v.push((at_s, buyer.clone())),
    }
}

/// What the duplicate rules do to one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// The campaign's rule refuses the call.
    pub reject: bool,
    /// This buyer goes first.
    pub pin: Option<BuyerId>,
    /// These buyers are `excluded:duplicate`.
    pub exclude: Vec<BuyerId>,
    /// The call is not billable if one of these takes it.
    pub not_billable: Vec<BuyerId>,
    /// The rules that fired (`campaign:<action>`, `buyer:<id>:<action>`), for the CDR.
    pub fired: Vec<String>,
}

impl Judgement {
    /// No rule fired.
    pub fn is_empty(&self) -> bool {
        self.fired.is_empty()
    }

    /// Apply the exclusions and the pin to the auction's entries; how many stay ranked.
    pub fn apply(&self, entries: &mut [Entry]) -> usize {
        for e in entries.iter_mut() {
            if self.exclude.contains(&e.buyer) && matches!(e.outcome, Outcome::Ranked(_)) {
                e.outcome = Outcome::Excluded(Exclusion::Duplicate);
            }
        }
        let ranked = dce_routing::reorder(entries);
        match self.pin {
            Some(b) => dce_routing::pin_first(entries, b),
            None => ranked,
        }
    }

    /// The CDR's `duplicate`.
    pub fn cdr_text(&self) -> Option<String> {
        (!self.fired.is_empty()).then(|| self.fired.join(","))
    }
}

/// The rules of `snap` over a call's `entries`, given what is remembered of the caller in the
/// campaign (`seen_campaign`) and with each buyer (`seen_buyer`).
pub fn judge<'a>(
    snap: &Snapshot,
    campaign: CampaignId,
    entries: &[Entry],
    now_s: i64,
    seen_campaign: Option<&'a Seen>,
    seen_buyer: impl Fn(BuyerId) -> Option<&'a Seen>,
) -> Judgement {
    let mut j = Judgement::default();
    let own = |b: BuyerId| snap.buyer(b).duplicates.is_some();
    let by_name = |name: &str| {
        entries
            .iter()
            .map(|e| e.buyer)
            .find(|b| snap.buyer(*b).id == name)
    };
    if let (Some(rule), Some(seen)) = (snap.campaign(campaign).duplicates, seen_campaign) {
        let earlier = seen.within(rule.after, rule.window_s(), now_s);
        if !earlier.is_empty() {
            j.fired.push(format!("campaign:{}", rule.action.as_str()));
            // the buyers that had the caller, the most recent first (a buyer with its own rule
            // is judged by that rule alone)
            let earlier: Vec<BuyerId> = earlier
                .into_iter()
                .filter_map(by_name)
                .filter(|b| !own(*b))
                .collect();
            match rule.action {
                DupAction::Reject => j.reject = true,
                DupAction::SameBuyer => j.pin = earlier.first().copied(),
                DupAction::NextBuyer => j.exclude.extend(earlier),
                DupAction::NotBillable => j
                    .not_billable
                    .extend(entries.iter().map(|e| e.buyer).filter(|b| !own(*b))),
            }
        }
    }
    for e in entries {
        let b = e.buyer;
        let Some(rule) = snap.buyer(b).duplicates else {
            continue;
        };
        if !matches!(e.outcome, Outcome::Ranked(_)) {
            continue;
        }
        let hit =
            seen_buyer(b).is_some_and(|s| !s.within(rule.after, rule.window_s(), now_s).is_empty());
        if !hit {
            continue;
        }
        j.fired.push(format!(
            "buyer:{}:{}",
            snap.buyer(b).id,
            rule.action.as_str()
        ));
        match rule.action {
            DupAction::Reject | DupAction::NextBuyer => j.exclude.push(b),
            DupAction::SameBuyer => {
                j.pin.get_or_insert(b);
            }
            DupAction::NotBillable => j.not_billable.push(b),
        }
    }
    j
}

/// Fill `memory` from the CDR database's history (oldest first); how many calls.
pub fn restore(memory: &Memory, rows: &[crate::store::db::DupHistoryRow], keep_s: i64) -> usize {
    for r in rows {
        if let Some(b) = &r.routed_to {
            memory.record(
                DupStage::Routed,
                Some(&r.campaign),
                b,
                &r.caller,
                r.at_s,
                keep_s,
            );
        }
        if let Some(b) = &r.connected_to {
            memory.record(
                DupStage::Connected,
                Some(&r.campaign),
                b,
                &r.caller,
                r.at_s,
                keep_s,
            );
            if r.billable {
                memory.record(
                    DupStage::Billable,
                    Some(&r.campaign),
                    b,
                    &r.caller,
                    r.at_s,
                    keep_s,
                );
            }
        }
    }
    rows.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dce_routing::{DuplicateRule, Live};

    fn rule(after: DupStage, action: DupAction) -> Option<DuplicateRule> {
        Some(DuplicateRule {
            window_days: 30,
            after,
            action,
        })
    }

    fn snap(
        campaign_rule: Option<DuplicateRule>,
        buyer_rules: [Option<DuplicateRule>; 3],
    ) -> Snapshot {
        let cfg = crate::config::parse(
            "t.toml",
            "[node]\nid = \"t\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
             [[campaign]]\nid = \"c\"\nnumbers = [\"+18005550100\"]\n\
             [[buyer]]\nid = \"a\"\ncampaigns = [\"c\"]\nuri = \"sip:{called}@127.0.0.1:5090\"\nbid_cents = 300\n\
             [[buyer]]\nid = \"b\"\ncampaigns = [\"c\"]\nuri = \"sip:{called}@127.0.0.1:5091\"\nbid_cents = 200\n\
             [[buyer]]\nid = \"x\"\ncampaigns = [\"c\"]\nuri = \"sip:{called}@127.0.0.1:5092\"\nbid_cents = 100\n",
        )
        .unwrap();
        let mut campaigns = cfg.routing.campaigns;
        campaigns[0].duplicates = campaign_rule;
        let mut buyers = cfg.routing.buyers;
        for (b, r) in buyers.iter_mut().zip(buyer_rules) {
            b.duplicates = r;
        }
        Snapshot::new(campaigns, buyers, &Live::default()).unwrap()
    }

    const T0: i64 = 1_800_000_000;

    fn names(s: &Snapshot, j: &Judgement) -> (Vec<String>, Option<String>, Vec<String>) {
        let n = |v: &[BuyerId]| v.iter().map(|b| s.buyer(*b).id.clone()).collect();
        (
            n(&j.exclude),
            j.pin.map(|b| s.buyer(b).id.clone()),
            n(&j.not_billable),
        )
    }

    fn auction(s: &Snapshot) -> Vec<Entry> {
        let mut out = Vec::new();
        dce_routing::auction(s, 0, None, chrono::Utc::now(), &mut out);
        out
    }

    #[test]
    fn each_campaign_action_does_what_it_says() {
        let m = Memory::default();
        m.record(DupStage::Routed, Some("c"), "b", "1310", T0, 86_400 * 30);
        m.record(
            DupStage::Connected,
            Some("c"),
            "b",
            "1310",
            T0 + 5,
            86_400 * 30,
        );
        for (action, want) in [
            (DupAction::Reject, (vec![], None, vec![])),
            (DupAction::SameBuyer, (vec![], Some("b".into()), vec![])),
            (DupAction::NextBuyer, (vec!["b".into()], None, vec![])),
            (
                DupAction::NotBillable,
                (vec![], None, vec!["a".into(), "b".into(), "x".into()]),
            ),
        ] {
            let s = snap(rule(DupStage::Connected, action), [None, None, None]);
            let entries = auction(&s);
            let j = m.judge(&s, 0, "1310", &entries, T0 + 86_400);
            assert_eq!(names(&s, &j), want, "{action:?}");
            assert_eq!(j.reject, action == DupAction::Reject);
            assert_eq!(j.cdr_text(), Some(format!("campaign:{}", action.as_str())));
            let mut e = entries.clone();
            let ranked = j.apply(&mut e);
            let order: Vec<String> = e
                .iter()
                .map(|e| format!("{}:{:?}", s.buyer(e.buyer).id, e.outcome))
                .collect();
            match action {
                DupAction::SameBuyer => assert!(order[0].starts_with("b:Ranked"), "{order:?}"),
                DupAction::NextBuyer => {
                    assert_eq!(ranked, 2);
                    assert_eq!(order[2], "b:Excluded(Duplicate)");
                }
                _ => assert_eq!(ranked, 3),
            }
        }
    }

    #[test]
    fn every_buyer_that_had_the_caller_counts_the_latest_first() {
        let m = Memory::default();
        m.record(DupStage::Connected, Some("c"), "a", "1310", T0, 86_400 * 30);
        m.record(
            DupStage::Connected,
            Some("c"),
            "b",
            "1310",
            T0 + 60,
            86_400 * 30,
        );
        let s = snap(rule(DupStage::Connected, DupAction::NextBuyer), [None; 3]);
        let e = auction(&s);
        let j = m.judge(&s, 0, "1310", &e, T0 + 120);
        assert_eq!(names(&s, &j).0, ["b", "a"], "both had the caller");
        let s = snap(rule(DupStage::Connected, DupAction::SameBuyer), [None; 3]);
        let j = m.judge(&s, 0, "1310", &e, T0 + 120);
        assert_eq!(names(&s, &j).1.as_deref(), Some("b"), "the latest");
        let seen = Seen::from_fields([
            ("connected:a", "100"),
            ("routed:b", "200"),
            ("bogus", "1"),
            ("routed:x", "not a time"),
        ]);
        assert_eq!(seen.within(DupStage::Connected, 10, 105), ["a"]);
        assert_eq!(seen.within(DupStage::Routed, 10, 205), ["b"]);
        assert_eq!(Seen::field(DupStage::Routed, "b"), "routed:b");
    }

    #[test]
    fn the_window_and_the_stage_decide_what_counts() {
        let m = Memory::default();
        m.record(DupStage::Routed, Some("c"), "a", "1310", T0, 86_400 * 30);
        let s = snap(rule(DupStage::Connected, DupAction::Reject), [None; 3]);
        let e = auction(&s);
        assert!(
            m.judge(&s, 0, "1310", &e, T0 + 10).is_empty(),
            "rung but never answered: not after `connected`"
        );
        let s = snap(rule(DupStage::Routed, DupAction::Reject), [None; 3]);
        assert!(m.judge(&s, 0, "1310", &e, T0 + 10).reject);
        assert!(
            m.judge(&s, 0, "1310", &e, T0 + 30 * 86_400 - 1).reject,
            "last second of the window"
        );
        assert!(
            m.judge(&s, 0, "1310", &e, T0 + 30 * 86_400).is_empty(),
            "the window is over"
        );
        assert!(
            m.judge(&s, 0, "1999", &e, T0 + 10).is_empty(),
            "another caller"
        );
        let s = snap(None, [None; 3]);
        assert!(m.judge(&s, 0, "1310", &e, T0 + 10).is_empty(), "no rule");
    }

    #[test]
    fn a_buyers_own_rule_replaces_the_campaigns_for_it() {
        let m = Memory::default();
        // the caller reached buyer `a` through another campaign, and `b` in this one
        m.record(
            DupStage::Connected,
            Some("other"),
            "a",
            "1310",
            T0,
            86_400 * 30,
        );
        m.record(DupStage::Connected, Some("c"), "b", "1310", T0, 86_400 * 30);
        let s = snap(
            rule(DupStage::Connected, DupAction::NotBillable),
            [
                rule(DupStage::Connected, DupAction::NextBuyer),
                rule(DupStage::Connected, DupAction::SameBuyer),
                None,
            ],
        );
        let e = auction(&s);
        let j = m.judge(&s, 0, "1310", &e, T0 + 60);
        assert_eq!(
            names(&s, &j),
            (vec!["a".into()], Some("b".into()), vec!["x".into()]),
            "a: its own next_buyer; b: its own same_buyer; x: the campaign's not_billable"
        );
        assert_eq!(
            j.cdr_text().as_deref(),
            Some("campaign:not_billable,buyer:a:next_buyer,buyer:b:same_buyer")
        );
    }

    #[test]
    fn memory_is_swept_and_restored() {
        let m = Memory::default();
        m.record(DupStage::Routed, Some("c"), "a", "1", T0, 100);
        assert_eq!(m.len(), 2, "one campaign key, one buyer key");
        m.record(DupStage::Routed, Some("c"), "a", "2", T0 + 3_600, 100);
        assert_eq!(
            m.len(),
            2,
            "the first caller is older than the window: swept"
        );
        let rows = vec![crate::store::db::DupHistoryRow {
            at_s: T0,
            campaign: "c".into(),
            caller: "3".into(),
            routed_to: Some("a".into()),
            connected_to: Some("b".into()),
            billable: true,
        }];
        let m = Memory::default();
        assert_eq!(restore(&m, &rows, 86_400), 1);
        let g = m.inner.lock().unwrap();
        let c = &g.map[campaign_key("c", "3").as_str()];
        assert_eq!(c.within(DupStage::Routed, 10, T0 + 1), ["a"]);
        assert_eq!(c.within(DupStage::Billable, 10, T0 + 1), ["b"]);
        assert!(g.map.contains_key(buyer_key("b", "3").as_str()));
    }
}

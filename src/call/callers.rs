//! The memory of callers behind the duplicate-call rules (issue #15, decision 0015), and the
//! rules: what a repeat caller gets. Data only; the call path's side is `duplicates.rs`.
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
            .filter(|(at, _)| now_s.saturating_sub(*at) < window_s)
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

/// A stage one call reached, to remember.
#[derive(Debug, Clone, Copy)]
pub struct Mark<'a> {
    /// How far it got.
    pub stage: DupStage,
    /// In this campaign's record (`None`: the campaign has no rule).
    pub campaign: Option<&'a str>,
    /// With this buyer.
    pub buyer: &'a str,
    /// In the buyer's own record too (it has a rule of its own).
    pub buyer_record: bool,
    /// The caller, E.164 digits.
    pub caller: &'a str,
    /// When, Unix seconds.
    pub at_s: i64,
}

/// Only a caller that is a number is remembered or judged: a withheld or anonymous caller is
/// not one person.
pub fn rememberable(caller: &str) -> bool {
    dce_routing::normalize(caller).is_some()
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
    /// Remember `m`. `keep_s`: the longest window in force (older entries may be swept).
    pub fn record(&self, m: &Mark<'_>, keep_s: i64) {
        if !rememberable(m.caller) {
            return;
        }
        let (stage, at_s, caller) = (m.stage, m.at_s, m.caller);
        let buyer: Arc<str> = Arc::from(m.buyer);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // a full pass under the lock: hourly, or at most once a minute while full
        let since = at_s.saturating_sub(g.swept_s);
        if since >= 3_600 || (g.map.len() >= MAX_KEYS && since >= 60) {
            let before = g.map.len();
            g.map
                .retain(|_, s| at_s.saturating_sub(s.newest()) < keep_s);
            g.swept_s = at_s;
            if g.map.len() < before {
                g.warned = false;
            }
            tracing::debug!(
                kept = g.map.len(),
                dropped = before - g.map.len(),
                "duplicate memory swept"
            );
        }
        let keys = m
            .campaign
            .map(|c| campaign_key(c, caller))
            .into_iter()
            .chain(m.buyer_record.then(|| buyer_key(&buyer, caller)));
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
        if !rememberable(caller) {
            return Judgement::default();
        }
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
                DupAction::SameBuyer => {
                    j.pin = earlier.iter().copied().find(|b| {
                        entries
                            .iter()
                            .any(|e| e.buyer == *b && matches!(e.outcome, Outcome::Ranked(_)))
                    })
                }
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

/// Fill `memory` from the CDR database's history (oldest first), for the rules of `snap`;
/// how many calls.
pub fn restore(
    memory: &Memory,
    rows: &[crate::store::db::DupHistoryRow],
    snap: &Snapshot,
) -> usize {
    let keep_s = snap.dup_window_s();
    let ruled = |c: &str| {
        snap.campaigns()
            .iter()
            .any(|x| x.id == c && x.duplicates.is_some())
    };
    let own = |b: &str| {
        snap.buyers()
            .iter()
            .any(|x| x.id == b && x.duplicates.is_some())
    };
    for r in rows {
        let campaign = ruled(&r.campaign).then_some(r.campaign.as_str());
        let mark = |stage, buyer: &str| {
            let m = Mark {
                stage,
                campaign,
                buyer,
                buyer_record: own(buyer),
                caller: &r.caller,
                at_s: r.at_s,
            };
            memory.record(&m, keep_s);
        };
        if let Some(b) = &r.routed_to {
            mark(DupStage::Routed, b);
        }
        if let Some(b) = &r.connected_to {
            // the buyer that answered was rung too
            mark(DupStage::Routed, b);
            mark(DupStage::Connected, b);
            if r.billable {
                mark(DupStage::Billable, b);
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

    /// Remember a stage in the campaign's and the buyer's records.
    fn rec(
        m: &Memory,
        stage: DupStage,
        campaign: &str,
        buyer: &str,
        caller: &str,
        at_s: i64,
        keep_s: i64,
    ) {
        let mark = Mark {
            stage,
            campaign: Some(campaign),
            buyer,
            buyer_record: true,
            caller,
            at_s,
        };
        m.record(&mark, keep_s);
    }

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
        rec(
            &m,
            DupStage::Routed,
            "c",
            "b",
            "13105550001",
            T0,
            86_400 * 30,
        );
        rec(
            &m,
            DupStage::Connected,
            "c",
            "b",
            "13105550001",
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
            let j = m.judge(&s, 0, "13105550001", &entries, T0 + 86_400);
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
        rec(
            &m,
            DupStage::Connected,
            "c",
            "a",
            "13105550001",
            T0,
            86_400 * 30,
        );
        rec(
            &m,
            DupStage::Connected,
            "c",
            "b",
            "13105550001",
            T0 + 60,
            86_400 * 30,
        );
        let s = snap(rule(DupStage::Connected, DupAction::NextBuyer), [None; 3]);
        let e = auction(&s);
        let j = m.judge(&s, 0, "13105550001", &e, T0 + 120);
        assert_eq!(names(&s, &j).0, ["b", "a"], "both had the caller");
        let s = snap(rule(DupStage::Connected, DupAction::SameBuyer), [None; 3]);
        let j = m.judge(&s, 0, "13105550001", &e, T0 + 120);
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
        rec(
            &m,
            DupStage::Routed,
            "c",
            "a",
            "13105550001",
            T0,
            86_400 * 30,
        );
        let s = snap(rule(DupStage::Connected, DupAction::Reject), [None; 3]);
        let e = auction(&s);
        assert!(
            m.judge(&s, 0, "13105550001", &e, T0 + 10).is_empty(),
            "rung but never answered: not after `connected`"
        );
        let s = snap(rule(DupStage::Routed, DupAction::Reject), [None; 3]);
        assert!(m.judge(&s, 0, "13105550001", &e, T0 + 10).reject);
        assert!(
            m.judge(&s, 0, "13105550001", &e, T0 + 30 * 86_400 - 1)
                .reject,
            "last second of the window"
        );
        assert!(
            m.judge(&s, 0, "13105550001", &e, T0 + 30 * 86_400)
                .is_empty(),
            "the window is over"
        );
        assert!(
            m.judge(&s, 0, "13105559999", &e, T0 + 10).is_empty(),
            "another caller"
        );
        let s = snap(None, [None; 3]);
        assert!(
            m.judge(&s, 0, "13105550001", &e, T0 + 10).is_empty(),
            "no rule"
        );
    }

    #[test]
    fn a_buyers_own_rule_replaces_the_campaigns_for_it() {
        let m = Memory::default();
        // the caller reached buyer `a` through another campaign, and `b` in this one
        rec(
            &m,
            DupStage::Connected,
            "other",
            "a",
            "13105550001",
            T0,
            86_400 * 30,
        );
        rec(
            &m,
            DupStage::Connected,
            "c",
            "b",
            "13105550001",
            T0,
            86_400 * 30,
        );
        let s = snap(
            rule(DupStage::Connected, DupAction::NotBillable),
            [
                rule(DupStage::Connected, DupAction::NextBuyer),
                rule(DupStage::Connected, DupAction::SameBuyer),
                None,
            ],
        );
        let e = auction(&s);
        let j = m.judge(&s, 0, "13105550001", &e, T0 + 60);
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
        rec(&m, DupStage::Routed, "c", "a", "13105550001", T0, 100);
        assert_eq!(m.len(), 2, "one campaign key, one buyer key");
        rec(&m, DupStage::Routed, "c", "a", "anonymous", T0, 100);
        assert_eq!(m.len(), 2, "a caller that is no number is not remembered");
        rec(
            &m,
            DupStage::Routed,
            "c",
            "a",
            "13105550002",
            T0 + 3_600,
            100,
        );
        assert_eq!(
            m.len(),
            2,
            "the first caller is older than the window: swept"
        );
        let rows = vec![crate::store::db::DupHistoryRow {
            at_s: T0,
            campaign: "c".into(),
            caller: "13105550003".into(),
            routed_to: Some("a".into()),
            connected_to: Some("b".into()),
            billable: true,
        }];
        let m = Memory::default();
        let s = snap(
            rule(DupStage::Routed, DupAction::Reject),
            [None, rule(DupStage::Routed, DupAction::Reject), None],
        );
        assert_eq!(restore(&m, &rows, &s), 1);
        let g = m.inner.lock().unwrap();
        let c = &g.map[campaign_key("c", "13105550003").as_str()];
        assert_eq!(
            c.within(DupStage::Routed, 10, T0 + 1),
            ["a", "b"],
            "the buyer that answered was rung too"
        );
        assert_eq!(c.within(DupStage::Billable, 10, T0 + 1), ["b"]);
        assert!(
            g.map.contains_key(buyer_key("b", "13105550003").as_str()),
            "b has a rule of its own"
        );
        assert!(
            !g.map.contains_key(buyer_key("a", "13105550003").as_str()),
            "a has none: its record is not kept"
        );
    }
}

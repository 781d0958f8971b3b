//! The compliance verdict for one call: DNC (national and internal), TCPA calling hours,
//! frequency cap, consent — in that order, from memory, the time passed in.

use crate::dnc::{nanp10, InternalDnc};
use crate::hours::CallingHours;
use crate::national::NationalDnc;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

/// The rule a call broke; its name goes into the `Reason` header and the CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// National or internal Do-Not-Call list.
    Dnc,
    /// Outside calling hours in the consumer's time zone(s).
    TcpaHours,
    /// Over `max_calls_per_day` for this number and campaign.
    TcpaFrequency,
    /// The campaign requires consent and the number has none live.
    Consent,
}

impl Rule {
    /// `DNC`, `TCPA_HOURS`, `TCPA_FREQUENCY`, `CONSENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Dnc => "DNC",
            Rule::TcpaHours => "TCPA_HOURS",
            Rule::TcpaFrequency => "TCPA_FREQUENCY",
            Rule::Consent => "CONSENT",
        }
    }
}

/// What a campaign asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignRules {
    /// Check the DNC lists.
    pub dnc: bool,
    /// Check calling hours.
    pub tcpa_hours: bool,
    /// Only numbers with live consent.
    pub require_consent: bool,
}

impl Default for CampaignRules {
    fn default() -> Self {
        CampaignRules {
            dnc: true,
            tcpa_hours: true,
            require_consent: false,
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Route it; these checks ran (and passed).
    Allow {
        /// Check names: `dnc`, `tcpa_hours`, `frequency`, `consent`.
        ran: Vec<&'static str>,
    },
    /// Refuse it.
    Reject(Rule),
}

/// A consent record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// 10-digit number.
    pub number: u64,
    /// Campaign id.
    pub campaign: String,
    /// When it was given.
    pub granted: DateTime<Utc>,
    /// When it lapses, if ever.
    pub expires: Option<DateTime<Utc>>,
    /// Where it came from (web form, IVR …).
    pub source: String,
}

/// The cap's rolling window.
const WINDOW_S: i64 = 86_400;

/// Expired calls forgotten per counted call (more than one, so a backlog shrinks while calls
/// keep arriving).
const PRUNE_PER_CALL: usize = 4;

/// Who a call is counted against: the caller as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CallerKey {
    /// A number: its digits and how many there are (so leading zeros stay distinct). A NANP
    /// number is always `1` + its 10 digits, so each of its formats is one key.
    Digits {
        /// Number of digits (1–19).
        len: u8,
        /// The digits.
        value: u64,
    },
    /// Anything else (`anonymous`, a user part that is not a number, more than 19 digits): a
    /// keyed hash of the string as received — 8 bytes however long the string.
    Raw(u64),
}

/// One caller's counted calls: per campaign, their times in the window, oldest first.
type PerCampaign = Vec<(Box<str>, VecDeque<i64>)>;

/// Per-caller per-campaign call counts over a rolling 24 hours, in process.
///
/// A caller is keyed as received: its digits when it is a number (NANP in any format counts as
/// one number), otherwise a keyed hash of the raw string (SipHash with a per-process key; two
/// distinct strings share a count with a chance of about 2⁻⁶⁴). Every counted call is also
/// queued by time; each [`FrequencyCap::admit`] forgets up to a few expired calls from the
/// front of that queue, dropping callers left with none, so memory follows the calls of the
/// last 24 hours with bounded work per call. [`FrequencyCap::prune`] sweeps everything at once.
#[derive(Debug, Default)]
pub struct FrequencyCap {
    /// Per caller, its counted calls.
    seen: HashMap<CallerKey, PerCampaign>,
    /// Every counted call, in the order counted: when, and whose.
    expiry: VecDeque<(i64, CallerKey)>,
    /// Keys the hash of raw callers.
    hasher: RandomState,
}

/// Drop the times at or before `cutoff` from the front.
fn expire(q: &mut VecDeque<i64>, cutoff: i64) {
    while q.front().is_some_and(|&first| first <= cutoff) {
        q.pop_front();
    }
}

impl FrequencyCap {
    fn key_of(&self, caller: &str) -> CallerKey {
        if let Some(n) = nanp10(caller) {
            return CallerKey::Digits {
                len: 11,
                value: 10_000_000_000 + n,
            };
        }
        let raw = CallerKey::Raw(self.hasher.hash_one(caller));
        let (mut len, mut value) = (0u8, 0u64);
        for c in caller.strip_prefix('+').unwrap_or(caller).chars() {
            match c.to_digit(10) {
                Some(_) if len == 19 => return raw,
                Some(d) => {
                    value = value * 10 + u64::from(d);
                    len += 1;
                }
                None if matches!(c, '-' | '.' | '(' | ')' | ' ') => {}
                None => return raw,
            }
        }
        if len == 0 {
            raw
        } else {
            CallerKey::Digits { len, value }
        }
    }

    /// Forget up to `budget` queued calls at or before `cutoff`, and callers left with none.
    fn forget_expired(&mut self, cutoff: i64, budget: usize) {
        for _ in 0..budget {
            if self.expiry.front().is_none_or(|&(t, _)| t > cutoff) {
                return;
            }
            let Some((_, key)) = self.expiry.pop_front() else {
                return;
            };
            if let Some(per) = self.seen.get_mut(&key) {
                per.retain_mut(|(_, q)| {
                    expire(q, cutoff);
                    !q.is_empty()
                });
                if per.is_empty() {
                    self.seen.remove(&key);
                }
            }
        }
    }

    /// Count a call from `caller` (as received: E.164 digits, any format, or any string) to
    /// `campaign` unless it would be the `max + 1`-th in 24 h; false when over.
    pub fn admit(&mut self, caller: &str, campaign: &str, max: u32, now: DateTime<Utc>) -> bool {
        let t = now.timestamp();
        let cutoff = t - WINDOW_S;
        self.forget_expired(cutoff, PRUNE_PER_CALL);
        if max == 0 {
            return false;
        }
        let key = self.key_of(caller);
        let per = self.seen.entry(key).or_default();
        let i = match per.iter().position(|(c, _)| &**c == campaign) {
            Some(i) => i,
            None => {
                per.push((campaign.into(), VecDeque::new()));
                per.len() - 1
            }
        };
        let Some((_, q)) = per.get_mut(i) else {
            return false;
        };
        expire(q, cutoff);
        if q.len() >= max as usize {
            return false;
        }
        q.push_back(t);
        self.expiry.push_back((t, key));
        true
    }

    /// Calls counted in process (all callers, all campaigns).
    pub fn clone_counts(&self) -> usize {
        self.seen
            .values()
            .flat_map(|per| per.iter().map(|(_, q)| q.len()))
            .sum()
    }

    /// Callers with a call counted in the window (or expired and not yet forgotten).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no caller is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forget every call older than 24 h and every caller left with none, at once (calls
    /// already do this a few at a time; this is for a periodic timer or a clock that stepped).
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let cutoff = now.timestamp() - WINDOW_S;
        self.seen.retain(|_, per| {
            per.retain_mut(|(_, q)| {
                expire(q, cutoff);
                !q.is_empty()
            });
            !per.is_empty()
        });
        self.expiry.retain(|&(t, _)| t > cutoff);
    }
}

/// Everything the checks need, loaded.
#[derive(Debug, Default)]
pub struct Compliance {
    /// The national registry, swapped whole on reload.
    pub national: Option<Arc<NationalDnc>>,
    /// The operator's list, editable at run time.
    pub internal: Arc<RwLock<InternalDnc>>,
    /// Calling hours.
    pub hours: Option<CallingHours>,
    /// Calls per caller per campaign per 24 h; 0 = off.
    pub max_calls_per_day: u32,
    /// Counts for the cap (in process).
    pub frequency: FrequencyCap,
    /// Live consent by (number, campaign).
    consent: HashSet<(u64, String)>,
    consent_records: Vec<Consent>,
}

impl Compliance {
    /// Replace the consent records.
    pub fn set_consent(&mut self, records: Vec<Consent>) {
        self.consent = records
            .iter()
            .map(|c| (c.number, c.campaign.clone()))
            .collect();
        self.consent_records = records;
    }

    fn consent_live(&self, number: u64, campaign: &str, now: DateTime<Utc>) -> bool {
        self.consent.contains(&(number, campaign.to_owned()))
            && self.consent_records.iter().any(|c| {
                c.number == number
                    && c.campaign == campaign
                    && c.granted <= now
                    && c.expires.is_none_or(|e| e > now)
            })
    }

    /// Is the number on a DNC list?
    pub fn on_dnc(&self, number: u64) -> bool {
        self.national.as_ref().is_some_and(|n| n.contains(number))
            || self
                .internal
                .read()
                .map(|i| i.contains_str(&format!("{number:010}")))
                .unwrap_or(true)
    }

    /// The verdict for a call from `caller` (E.164 digits, any format) in `state` to
    /// `campaign` with `rules`, at `now`. A caller that is not a NANP number is outside every
    /// list; the hours check then uses the intersection of all US zones, and the frequency cap
    /// counts it under its own digits (or, when not a number, the string as received).
    pub fn check(
        &mut self,
        caller: &str,
        state: Option<&str>,
        campaign: &str,
        rules: CampaignRules,
        now: DateTime<Utc>,
    ) -> Verdict {
        let number = nanp10(caller);
        let mut ran = Vec::with_capacity(4);
        if rules.dnc {
            ran.push("dnc");
            if number.is_some_and(|n| self.on_dnc(n)) {
                return Verdict::Reject(Rule::Dnc);
            }
        }
        if rules.tcpa_hours {
            if let Some(h) = &self.hours {
                ran.push("tcpa_hours");
                if !h.allows(number.unwrap_or(0), state, now) {
                    return Verdict::Reject(Rule::TcpaHours);
                }
            }
        }
        if rules.require_consent {
            ran.push("consent");
            if !number.is_some_and(|n| self.consent_live(n, campaign, now)) {
                return Verdict::Reject(Rule::Consent);
            }
        }
        if self.max_calls_per_day > 0 {
            ran.push("frequency");
            // keyed by the caller as received: a caller that is not a NANP number has its own
            // count, not one shared by every such caller
            if !self
                .frequency
                .admit(caller, campaign, self.max_calls_per_day, now)
            {
                return Verdict::Reject(Rule::TcpaFrequency);
            }
        }
        Verdict::Allow { ran }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::Window;
    use chrono::TimeZone;

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, 16, 0, 0).unwrap() // 12:00 New York
    }

    fn compliance() -> Compliance {
        Compliance {
            national: Some(Arc::new(
                NationalDnc::from_bytes(
                    NationalDnc::build(vec![2_125_550_001]),
                    std::path::Path::new("t"),
                )
                .unwrap(),
            )),
            hours: Some(CallingHours {
                default: Window::parse("08:00", "21:00").unwrap(),
                states: HashMap::new(),
            }),
            max_calls_per_day: 3,
            ..Compliance::default()
        }
    }

    #[test]
    fn each_rule_in_turn() {
        let mut c = compliance();
        let r = CampaignRules::default();
        assert_eq!(
            c.check("+12125550001", Some("NY"), "auto", r, noon()),
            Verdict::Reject(Rule::Dnc)
        );
        c.internal.write().unwrap().add("2125550002").unwrap();
        assert_eq!(
            c.check("12125550002", None, "auto", r, noon()),
            Verdict::Reject(Rule::Dnc)
        );
        let late = Utc.with_ymd_and_hms(2026, 7, 16, 2, 0, 0).unwrap(); // 22:00 New York
        assert_eq!(
            c.check("+12125550003", None, "auto", r, late),
            Verdict::Reject(Rule::TcpaHours)
        );
        for _ in 0..3 {
            assert!(matches!(
                c.check("+12125550004", None, "auto", r, noon()),
                Verdict::Allow { .. }
            ));
        }
        assert_eq!(
            c.check("+12125550004", None, "auto", r, noon()),
            Verdict::Reject(Rule::TcpaFrequency)
        );
        assert!(
            matches!(
                c.check("+12125550004", None, "home", r, noon()),
                Verdict::Allow { .. }
            ),
            "per campaign"
        );
        let tomorrow = noon() + chrono::Duration::hours(24);
        assert!(
            matches!(
                c.check("+12125550004", None, "auto", r, tomorrow),
                Verdict::Allow { .. }
            ),
            "rolling 24 h"
        );
        // a campaign that does not ask for DNC or hours
        let off = CampaignRules {
            dnc: false,
            tcpa_hours: false,
            require_consent: false,
        };
        assert_eq!(
            c.check("+12125550001", None, "x", off, late),
            Verdict::Allow {
                ran: vec!["frequency"]
            }
        );
    }

    #[test]
    fn consent_must_be_live() {
        let mut c = compliance();
        let r = CampaignRules {
            require_consent: true,
            ..CampaignRules::default()
        };
        assert_eq!(
            c.check("+12125550009", None, "auto", r, noon()),
            Verdict::Reject(Rule::Consent)
        );
        c.set_consent(vec![
            Consent {
                number: 2_125_550_009,
                campaign: "auto".into(),
                granted: noon() - chrono::Duration::days(1),
                expires: Some(noon() + chrono::Duration::days(1)),
                source: "web".into(),
            },
            Consent {
                number: 2_125_550_010,
                campaign: "auto".into(),
                granted: noon() - chrono::Duration::days(10),
                expires: Some(noon() - chrono::Duration::days(1)),
                source: "ivr".into(),
            },
        ]);
        assert_eq!(
            c.check("+12125550009", None, "auto", r, noon()),
            Verdict::Allow {
                ran: vec!["dnc", "tcpa_hours", "consent", "frequency"]
            }
        );
        assert_eq!(
            c.check("+12125550010", None, "auto", r, noon()),
            Verdict::Reject(Rule::Consent),
            "expired"
        );
        assert_eq!(
            c.check("+12125550009", None, "home", r, noon()),
            Verdict::Reject(Rule::Consent),
            "other campaign"
        );
    }

    fn allowed(v: &Verdict) -> bool {
        matches!(v, Verdict::Allow { .. })
    }

    /// Calls from `caller` to `auto` at `now` until one is refused; how many got through.
    fn calls_until_capped(c: &mut Compliance, caller: &str, now: DateTime<Utc>) -> usize {
        let r = CampaignRules::default();
        (0..10)
            .take_while(|_| allowed(&c.check(caller, None, "auto", r, now)))
            .count()
    }

    #[test]
    fn international_and_unparseable_callers_each_have_their_own_count() {
        let mut c = compliance();
        c.hours = None; // non-NANP callers need every US zone open: not what this is about
                        // a NANP caller in two formats is one caller
        assert_eq!(calls_until_capped(&mut c, "+12125550004", noon()), 3);
        assert_eq!(calls_until_capped(&mut c, "2125550004", noon()), 0);
        // each of these has its own three calls, whatever came before
        for caller in ["442071838750", "anonymous", "abc", "33142685300", ""] {
            assert_eq!(
                calls_until_capped(&mut c, caller, noon()),
                3,
                "{caller:?} has its own count"
            );
        }
        // and each is then capped, as a NANP caller is
        let r = CampaignRules::default();
        for caller in ["442071838750", "+44 20 7183 8750", "anonymous", "abc"] {
            assert_eq!(
                c.check(caller, None, "auto", r, noon()),
                Verdict::Reject(Rule::TcpaFrequency),
                "{caller:?}"
            );
        }
        // raw strings are keyed as received; long ones too, without keeping them
        let long = "x".repeat(10_000);
        assert_eq!(calls_until_capped(&mut c, &long, noon()), 3);
        assert_eq!(calls_until_capped(&mut c, "Anonymous", noon()), 3);
        // 20 digits do not fit a number key: still their own raw key
        assert_eq!(
            calls_until_capped(&mut c, "12345678901234567890", noon()),
            3
        );
        assert_eq!(
            calls_until_capped(&mut c, "012345678901234567890", noon()),
            3
        );
        // leading zeros are digits
        assert_eq!(calls_until_capped(&mut c, "0442071838750", noon()), 3);
    }

    #[test]
    fn two_international_callers_do_not_share_a_count() {
        let mut c = compliance();
        c.hours = None;
        assert_eq!(calls_until_capped(&mut c, "442071838750", noon()), 3);
        assert_eq!(calls_until_capped(&mut c, "442071838751", noon()), 3);
        assert_eq!(calls_until_capped(&mut c, "4915112345678", noon()), 3);
        assert_eq!(c.frequency.len(), 3);
        assert_eq!(c.frequency.clone_counts(), 9);
    }

    #[test]
    fn calls_forget_callers_whose_window_passed() {
        let mut c = compliance();
        c.hours = None;
        let r = CampaignRules::default();
        for i in 0..50 {
            let caller = format!("+4420718387{i:02}");
            assert!(allowed(&c.check(&caller, None, "auto", r, noon())));
            assert!(allowed(&c.check(&caller, None, "home", r, noon())));
        }
        assert!(allowed(&c.check("anonymous", None, "auto", r, noon())));
        assert_eq!(c.frequency.len(), 51);
        assert_eq!(c.frequency.expiry.len(), 101);
        // a day later, calls from one caller (even refused ones) forget the others, a few
        // per call
        let later = noon() + chrono::Duration::seconds(WINDOW_S);
        let first = c.check("12125550004", None, "auto", r, later);
        assert!(allowed(&first));
        assert_eq!(
            c.frequency.expiry.len(),
            101 - PRUNE_PER_CALL + 1,
            "bounded work"
        );
        for _ in 0..60 {
            let _ = c.check("12125550004", None, "auto", r, later);
        }
        assert_eq!(
            c.frequency.len(),
            1,
            "only the caller of the last day is left"
        );
        assert_eq!(c.frequency.clone_counts(), 3);
        assert_eq!(c.frequency.expiry.len(), 3);
        // and once its window passes too, a sweep leaves nothing
        c.frequency
            .prune(later + chrono::Duration::seconds(WINDOW_S));
        assert!(c.frequency.is_empty());
        assert_eq!(c.frequency.len(), 0);
        assert_eq!(c.frequency.clone_counts(), 0);
        assert!(c.frequency.expiry.is_empty());
    }

    #[test]
    fn the_map_empties_after_the_window_through_calls_alone() {
        let mut cap = FrequencyCap::default();
        for i in 0..1_000u64 {
            assert!(cap.admit(&format!("+44207183{i:04}"), "auto", 3, noon()));
        }
        assert!(cap.admit("anonymous", "auto", 3, noon()));
        assert_eq!(cap.len(), 1_001);
        // one second before the window ends nothing is forgotten
        let almost = noon() + chrono::Duration::seconds(WINDOW_S - 1);
        assert!(!cap.admit("anonymous", "auto", 0, almost));
        assert_eq!(cap.len(), 1_001);
        let later = noon() + chrono::Duration::seconds(WINDOW_S);
        let mut calls = 0;
        while !cap.is_empty() && calls < 1_000 {
            // max 0: refused, counted nowhere, but it still prunes
            assert!(!cap.admit("anonymous", "auto", 0, later));
            calls += 1;
        }
        assert_eq!(cap.len(), 0, "the map is empty after the window");
        assert!(cap.expiry.is_empty());
        assert_eq!(calls, 1_001_usize.div_ceil(PRUNE_PER_CALL));
    }
}

//! The compliance verdict for one call: DNC (national and internal), TCPA calling hours,
//! frequency cap, consent — in that order, from memory, the time passed in.

use crate::dnc::{nanp10, InternalDnc, NationalDnc};
use crate::hours::CallingHours;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet, VecDeque};
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

/// Per-number per-campaign call counts over a rolling 24 hours, in process.
#[derive(Debug, Default)]
pub struct FrequencyCap {
    seen: HashMap<(u64, String), VecDeque<i64>>,
}

impl FrequencyCap {
    /// Count this call unless it would be the `max + 1`-th in 24 h; false when over.
    pub fn admit(&mut self, number: u64, campaign: &str, max: u32, now: DateTime<Utc>) -> bool {
        let t = now.timestamp();
        let q = self.seen.entry((number, campaign.to_owned())).or_default();
        while q.front().is_some_and(|&first| first <= t - 86_400) {
            q.pop_front();
        }
        if q.len() as u32 >= max {
            return false;
        }
        q.push_back(t);
        true
    }

    /// Calls counted in process (all numbers, all campaigns).
    pub fn clone_counts(&self) -> usize {
        self.seen.values().map(VecDeque::len).sum()
    }

    /// Forget numbers with no call in the last 24 h (call from a periodic timer).
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let cutoff = now.timestamp() - 86_400;
        self.seen
            .retain(|_, q| q.back().is_some_and(|&last| last > cutoff));
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
    /// Calls per number per campaign per 24 h; 0 = off.
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
    /// list; the hours check then uses the intersection of all US zones.
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
            let key = number.unwrap_or(0);
            if !self
                .frequency
                .admit(key, campaign, self.max_calls_per_day, now)
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
}

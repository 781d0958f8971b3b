//! TCPA calling hours in the consumer's local time.
//!
//! The number's time zones come from `data/nanp_tz.tsv` (area code, or area code + exchange
//! where an area code spans zones), generated from libphonenumber by `scripts/gen_tz_table.py`.
//! When a number maps to several zones the call must be inside the window in every one of them
//! (the intersection); an unknown number must be inside it in every US zone. A state override
//! (stricter state law) replaces the window for callers from that state. DST-correct through
//! chrono-tz; the instant is an argument.

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A daily window in local time, `[start, end)` in minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First allowed minute.
    pub start: u16,
    /// First minute no longer allowed.
    pub end: u16,
}

impl Window {
    /// `HH:MM`–`HH:MM`; `None` when malformed or empty.
    pub fn parse(start: &str, end: &str) -> Option<Window> {
        let m = |s: &str| -> Option<u16> {
            let (h, mi) = s.trim().split_once(':')?;
            let (h, mi): (u16, u16) = (h.parse().ok()?, mi.parse().ok()?);
            (h <= 24 && mi < 60 && h * 60 + mi <= 1440).then_some(h * 60 + mi)
        };
        let w = Window {
            start: m(start)?,
            end: m(end)?,
        };
        (w.start < w.end).then_some(w)
    }

    fn contains(&self, minute: u16) -> bool {
        minute >= self.start && minute < self.end
    }
}

/// Zones a number with an unknown prefix could be in: every US zone.
pub const US_ZONES: [Tz; 9] = [
    chrono_tz::America::New_York,
    chrono_tz::America::Chicago,
    chrono_tz::America::Denver,
    chrono_tz::America::Phoenix,
    chrono_tz::America::Los_Angeles,
    chrono_tz::America::Anchorage,
    chrono_tz::Pacific::Honolulu,
    chrono_tz::America::Puerto_Rico,
    chrono_tz::Pacific::Guam,
];

struct Table {
    npa: HashMap<u16, Vec<Tz>>,
    npanxx: HashMap<u32, Vec<Tz>>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Table {
            npa: HashMap::new(),
            npanxx: HashMap::new(),
        };
        for line in include_str!("../data/nanp_tz.tsv").lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((prefix, zones)) = line.split_once('\t') else {
                continue;
            };
            let zones: Vec<Tz> = zones.split(',').filter_map(|z| z.parse().ok()).collect();
            if zones.is_empty() {
                continue;
            }
            match prefix.len() {
                3 => {
                    if let Ok(p) = prefix.parse() {
                        t.npa.insert(p, zones);
                    }
                }
                6 => {
                    if let Ok(p) = prefix.parse() {
                        t.npanxx.insert(p, zones);
                    }
                }
                _ => {}
            }
        }
        t
    })
}

/// The time zones of a 10-digit NANP number (`US_ZONES` when unknown).
pub fn zones_of(number10: u64) -> &'static [Tz] {
    let t = table();
    let npanxx = (number10 / 10_000) as u32;
    let npa = (number10 / 10_000_000) as u16;
    t.npanxx
        .get(&npanxx)
        .or_else(|| t.npa.get(&npa))
        .map(Vec::as_slice)
        .unwrap_or(&US_ZONES)
}

/// The calling-hours rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingHours {
    /// The window everywhere.
    pub default: Window,
    /// Stricter windows by USPS state code.
    pub states: HashMap<String, Window>,
}

impl CallingHours {
    /// May `number10` (a consumer in `state`, if known) be on a call at `now`?
    pub fn allows(&self, number10: u64, state: Option<&str>, now: DateTime<Utc>) -> bool {
        let w = state
            .and_then(|s| self.states.get(&s.to_ascii_uppercase()))
            .copied()
            .unwrap_or(self.default);
        zones_of(number10).iter().all(|tz| {
            let l = now.with_timezone(tz);
            w.contains((l.hour() * 60 + l.minute()) as u16)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rule() -> CallingHours {
        let mut states = HashMap::new();
        states.insert("FL".into(), Window::parse("08:00", "20:00").unwrap());
        CallingHours {
            default: Window::parse("08:00", "21:00").unwrap(),
            states,
        }
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn eastern_across_dst() {
        let r = rule();
        let nyc = 2_125_550_000;
        // 2026-03-08 US DST starts at 02:00 EST. 12:59 UTC = 08:59 EDT (allowed) but would be
        // 07:59 EST on the day before.
        assert!(r.allows(nyc, None, at(2026, 3, 8, 12, 59)));
        assert!(!r.allows(nyc, None, at(2026, 3, 7, 12, 59)));
        // 2026-11-01 DST ends: 00:59 UTC on Nov 2 = 19:59 EST (allowed); 01:00 UTC = 20:00 EST
        assert!(r.allows(nyc, None, at(2026, 11, 2, 1, 59)));
        assert!(
            !r.allows(nyc, None, at(2026, 11, 2, 2, 0)),
            "21:00 EST is too late"
        );
    }

    #[test]
    fn hawaii_alaska_puerto_rico_guam() {
        let r = rule();
        // 18:00 UTC: Honolulu 08:00 (HST, no DST), Anchorage 10:00 AKDT, San Juan 14:00, Guam 04:00
        let t = at(2026, 7, 15, 18, 0);
        assert!(r.allows(8_085_550_000, None, t), "Hawaii 08:00");
        assert!(
            !r.allows(8_085_550_000, None, at(2026, 7, 15, 17, 59)),
            "Hawaii 07:59"
        );
        assert!(r.allows(9_075_550_000, None, t), "Alaska");
        assert!(r.allows(7_875_550_000, None, t), "Puerto Rico");
        assert!(!r.allows(6_715_550_000, None, t), "Guam 04:00");
    }

    #[test]
    fn state_override_and_split_area_codes() {
        let r = rule();
        // Miami (305, FL): 20:30 EDT = 00:30 UTC: inside the 21:00 default, outside FL's 20:00
        let t = at(2026, 7, 16, 0, 30);
        assert!(r.allows(3_055_550_000, None, t));
        assert!(!r.allows(3_055_550_000, Some("FL"), t));
        // 850 (Florida panhandle) spans Eastern and Central: some exchanges are Central
        let zones: std::collections::HashSet<&str> = (200..1000u64)
            .map(|nxx| zones_of(8_500_000_000 + nxx * 10_000)[0].name())
            .collect();
        assert!(
            zones.contains("America/Chicago") && zones.contains("America/New_York"),
            "{zones:?}"
        );
    }

    #[test]
    fn unknown_numbers_need_every_us_zone() {
        let r = rule();
        let unknown = 5_555_550_000; // 555 is not a geographic area code
        assert_eq!(zones_of(unknown).len(), US_ZONES.len());
        // 20:00 UTC in July: New York 16:00, Honolulu 10:00, Guam 06:00 → Guam forbids
        assert!(!r.allows(unknown, None, at(2026, 7, 15, 20, 0)));
    }

    #[test]
    fn windows() {
        assert!(Window::parse("21:00", "08:00").is_none());
        assert!(Window::parse("8am", "9pm").is_none());
        assert_eq!(Window::parse("08:00", "24:00").unwrap().end, 1440);
    }
}

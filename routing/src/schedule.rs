//! A buyer's opening hours in its own time zone.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

/// Days of the week, bit 0 = Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(pub u8);

/// Why a schedule is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not an IANA time zone name.
    #[error("unknown time zone `{0}` (use an IANA name like America/New_York)")]
    TimeZone(String),
    /// Not `mon-fri`, `mon,wed,fri`, `daily` …
    #[error("bad days `{0}` (use e.g. mon-fri, sat,sun or daily)")]
    Days(String),
    /// Not `HH:MM`.
    #[error("bad time `{0}` (use HH:MM, 00:00 to 24:00)")]
    Time(String),
    /// Opening is not before closing.
    #[error("open {0} is not before close {1}")]
    OpenAfterClose(String, String),
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    /// `daily`, `mon-fri`, `sat,sun`, `mon-wed,fri`.
    pub fn parse(s: &str) -> Result<Days, ScheduleError> {
        let err = || ScheduleError::Days(s.to_owned());
        let t = s.trim().to_ascii_lowercase();
        if t == "daily" || t == "all" {
            return Ok(Days(0x7f));
        }
        let idx = |d: &str| DAY_NAMES.iter().position(|n| *n == d.trim());
        let mut bits = 0u8;
        for part in t.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (idx(a).ok_or_else(err)?, idx(b).ok_or_else(err)?);
                    let mut d = a;
                    loop {
                        bits |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << idx(part).ok_or_else(err)?,
            }
        }
        Ok(Days(bits))
    }
}

/// Opening hours: on `days`, from `open` to `close` (minutes after local midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The buyer's time zone.
    pub tz: Tz,
    /// Open days.
    pub days: Days,
    /// Opening minute of the day.
    pub open: u16,
    /// Closing minute of the day (exclusive).
    pub close: u16,
}

fn parse_hhmm(s: &str) -> Result<u16, ScheduleError> {
    let err = || ScheduleError::Time(s.to_owned());
    let (h, m) = s.trim().split_once(':').ok_or_else(err)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) || h.to_string().len() > 2 {
        return Err(err());
    }
    Ok(h * 60 + m)
}

impl Schedule {
    /// Build from config strings.
    pub fn parse(tz: &str, days: &str, open: &str, close: &str) -> Result<Schedule, ScheduleError> {
        let tz: Tz = tz
            .parse()
            .map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        let days = Days::parse(days)?;
        let (o, c) = (parse_hhmm(open)?, parse_hhmm(close)?);
        if o >= c {
            return Err(ScheduleError::OpenAfterClose(
                open.to_owned(),
                close.to_owned(),
            ));
        }
        Ok(Schedule {
            tz,
            days,
            open: o,
            close: c,
        })
    }

    /// Open at `now`?
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let day = local.weekday().num_days_from_monday() as u8;
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.is_open_local(day, minute)
    }

    /// Open on local weekday `day` (0 = Monday) at local minute `minute`?
    pub fn is_open_local(&self, day: u8, minute: u16) -> bool {
        self.days.0 & (1 << day) != 0 && minute >= self.open && minute < self.close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn days() {
        assert_eq!(Days::parse("mon-fri").unwrap(), Days(0b0011111));
        assert_eq!(Days::parse("sat,sun").unwrap(), Days(0b1100000));
        assert_eq!(Days::parse("fri-mon").unwrap(), Days(0b1110001));
        assert!(Days::parse("funday").is_err());
    }

    #[test]
    fn open_hours_follow_the_buyers_zone_and_dst() {
        let s = Schedule::parse("America/New_York", "mon-fri", "09:00", "18:00").unwrap();
        // Wed 2026-07-15 13:00 UTC = 09:00 EDT (open); 12:59 UTC = 08:59 (closed)
        assert!(s.is_open(Utc.with_ymd_and_hms(2026, 7, 15, 13, 0, 0).unwrap()));
        assert!(!s.is_open(Utc.with_ymd_and_hms(2026, 7, 15, 12, 59, 0).unwrap()));
        // Wed 2026-01-14 13:30 UTC = 08:30 EST (closed); 14:00 UTC = 09:00 (open)
        assert!(!s.is_open(Utc.with_ymd_and_hms(2026, 1, 14, 13, 30, 0).unwrap()));
        assert!(s.is_open(Utc.with_ymd_and_hms(2026, 1, 14, 14, 0, 0).unwrap()));
        // Saturday closed
        assert!(!s.is_open(Utc.with_ymd_and_hms(2026, 7, 18, 15, 0, 0).unwrap()));
        assert!(matches!(
            Schedule::parse("Mars/Olympus", "daily", "09:00", "18:00"),
            Err(ScheduleError::TimeZone(_))
        ));
        assert!(matches!(
            Schedule::parse("UTC", "daily", "18:00", "09:00"),
            Err(ScheduleError::OpenAfterClose(..))
        ));
        assert!(matches!(
            Schedule::parse("UTC", "daily", "9am", "18:00"),
            Err(ScheduleError::Time(_))
        ));
    }
}

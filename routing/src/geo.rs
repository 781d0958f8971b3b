//! US states and the NANP area code → state table.

use std::sync::OnceLock;

/// USPS codes DCE knows, in table order; a [`State`] is an index into this list.
const CODES: [&str; 56] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "PR", "GU", "VI", "AS", "MP",
];

/// A US state or territory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct State(u8);

impl State {
    /// From a USPS code (`"CA"`, case-insensitive).
    pub fn parse(code: &str) -> Option<State> {
        CODES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(code))
            .map(|i| State(i as u8))
    }

    /// The USPS code.
    pub fn code(self) -> &'static str {
        CODES[self.0 as usize]
    }
}

/// A set of states, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSet(u64);

impl StateSet {
    /// Add a state.
    pub fn insert(&mut self, s: State) {
        self.0 |= 1 << s.0;
    }
    /// Membership.
    pub fn contains(self, s: State) -> bool {
        self.0 & (1 << s.0) != 0
    }
    /// No state at all (the buyer takes any).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

fn table() -> &'static [u8; 1000] {
    static TABLE: OnceLock<[u8; 1000]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [u8::MAX; 1000];
        for line in include_str!("../data/npa_state.tsv").lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((code, npas)) = line.split_once('\t') else {
                continue;
            };
            let Some(state) = State::parse(code) else {
                continue;
            };
            for npa in npas.split_whitespace() {
                if let Ok(n) = npa.parse::<usize>() {
                    if n < 1000 {
                        t[n] = state.0;
                    }
                }
            }
        }
        t
    })
}

/// The state of an E.164 number (digits, no `+`) from its NANP area code; `None` outside the
/// NANP or for a non-US area code.
pub fn state_of_number(e164: &str) -> Option<State> {
    let b = e164.as_bytes();
    if b.len() != 11 || b[0] != b'1' || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let npa = (b[1] - b'0') as usize * 100 + (b[2] - b'0') as usize * 10 + (b[3] - b'0') as usize;
    match table()[npa] {
        u8::MAX => None,
        s => Some(State(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_codes() {
        assert_eq!(state_of_number("13105551234").map(State::code), Some("CA"));
        assert_eq!(state_of_number("12125551234").map(State::code), Some("NY"));
        assert_eq!(state_of_number("17135551234").map(State::code), Some("TX"));
        assert_eq!(
            state_of_number("14165551234"),
            None,
            "Toronto is not a US state"
        );
        assert_eq!(
            state_of_number("18005550100"),
            None,
            "toll-free has no state"
        );
        assert_eq!(state_of_number("442071838750"), None);
    }

    #[test]
    fn every_table_line_names_a_known_state() {
        for line in include_str!("../data/npa_state.tsv")
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            let code = line.split('\t').next().unwrap();
            assert!(State::parse(code).is_some(), "{code}");
        }
    }

    #[test]
    fn sets() {
        let mut s = StateSet::default();
        assert!(s.is_empty());
        s.insert(State::parse("ca").unwrap());
        assert!(s.contains(State::parse("CA").unwrap()));
        assert!(!s.contains(State::parse("TX").unwrap()));
    }
}

//! What publishers' bid requests (`POST /v1/bid`, `quote.rs`) leave behind: the request and
//! its answer, a quote waiting for its lookups, and the node-wide table of reservations — the
//! prices promised for a carrier's next call from a caller — with what a call routed on one
//! owes. Data only; what the controller does with it is in `quote.rs`.

use super::lookup::Lookups;
use chrono::{DateTime, Utc};
use dce_routing::{BuyerId, CampaignId, Entry, Snapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A publisher's bid request, as the API hands it to a SIP worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest {
    /// The driver's id for the answer (`Output::Quoted`).
    pub id: u64,
    /// The carrier the publisher's key is tied to.
    pub carrier: String,
    /// Caller, E.164 digits.
    pub caller: String,
    /// The dialled number, E.164 digits (or `campaign`).
    pub called: Option<String>,
    /// The campaign id (when no number is given).
    pub campaign: Option<String>,
    /// The caller's state, when the publisher knows it (else from the area code).
    pub state: Option<&'static str>,
    /// The caller's ZIP code, passed on to the bidders.
    pub zip: Option<String>,
    /// Tags, passed on to the bidders (DCE's format).
    pub tags: Vec<String>,
    /// The request's `X-DCE-Loop` (another exchange asking).
    pub loop_via: Option<String>,
}

/// DCE's answer to a bid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteAnswer {
    /// A price.
    Bid {
        /// What the publisher is paid for the call, cents (after the margin).
        bid_cents: u32,
        /// The price holds until then.
        expires_at: DateTime<Utc>,
        /// Where to send the call: DCE, at the campaign's number.
        destination: String,
        /// The quote's id (logs; the pings' `call_id`).
        quote: String,
    },
    /// No price, and why: `loop`, `shutting_down`, `unknown_carrier`, `no_campaign`,
    /// `compliance:<RULE>`, `no_eligible_buyer`, `lookup_failed`, `busy`.
    Refused(String),
}

/// A price promised to a publisher for its next call from one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The quote's id.
    pub quote: String,
    /// The campaign id.
    pub campaign: String,
    /// The buyer id.
    pub buyer: String,
    /// What the buyer pays, cents.
    pub price_cents: u32,
    /// What the publisher is paid, cents.
    pub payout_cents: u32,
    /// The promise ends.
    pub expires_at: DateTime<Utc>,
    /// The winning real-time bid's destination, when it named one.
    pub destination: Option<crate::rtb::Destination>,
    /// The winning real-time bid's minimum billable duration.
    pub min_duration_s: Option<u32>,
}

/// The node's reservations, by (carrier, caller): shared by every SIP worker (the quote is
/// made on one, the call may arrive on another).
#[derive(Debug, Default)]
pub struct Reservations {
    map: Mutex<HashMap<(String, String), Reservation>>,
}

impl Reservations {
    /// At most this many are held: beyond, expired ones are dropped, and a new one is refused
    /// (`busy`) while the table is still full.
    pub const MAX: usize = 100_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Reservation>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `r` for `carrier`'s next call from `caller` (replacing an earlier one); false when
    /// the table is full of live reservations.
    pub fn put(&self, carrier: &str, caller: &str, r: Reservation, now: DateTime<Utc>) -> bool {
        let mut m = self.lock();
        if m.len() >= Self::MAX {
            m.retain(|_, v| v.expires_at > now);
            if m.len() >= Self::MAX {
                return false;
            }
        }
        m.insert((carrier.to_owned(), caller.to_owned()), r);
        true
    }

    /// Take the reservation for `carrier`'s call from `caller`, if any (it is used once).
    pub fn take(&self, carrier: &str, caller: &str) -> Option<Reservation> {
        let mut m = self.lock();
        if m.is_empty() {
            return None;
        }
        m.remove(&(carrier.to_owned(), caller.to_owned()))
    }

    /// Reservations held (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a call routed on a reservation owes: the reserved buyer and the payout promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The reserved buyer, in the call's snapshot.
    pub buyer: BuyerId,
    /// The payout promised to the publisher, cents (when the call is billable).
    pub payout_cents: u32,
    /// The quote's id.
    pub quote: String,
}

/// A bid request waiting for its lookups.
pub(super) struct Quote {
    pub req: QuoteRequest,
    pub ref_id: String,
    pub snapshot: Arc<Snapshot>,
    pub campaign: CampaignId,
    pub called: String,
    pub entries: Vec<Entry>,
    pub lookups: Lookups,
    /// The timer index holds (deadline, key) while lookups are out.
    pub(super) deadline: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(exp: DateTime<Utc>) -> Reservation {
        Reservation {
            quote: "q".into(),
            campaign: "auto".into(),
            buyer: "acme".into(),
            price_cents: 1500,
            payout_cents: 1200,
            expires_at: exp,
            destination: None,
            min_duration_s: None,
        }
    }

    #[test]
    fn a_reservation_is_used_once_and_is_per_carrier_and_caller() {
        let now = Utc::now();
        let t = Reservations::default();
        assert!(t.put("carrier-a", "13105551234", r(now), now));
        assert_eq!(t.take("carrier-b", "13105551234"), None);
        assert_eq!(t.take("carrier-a", "13105559999"), None);
        assert_eq!(t.take("carrier-a", "13105551234"), Some(r(now)));
        assert_eq!(t.take("carrier-a", "13105551234"), None, "used once");
        assert!(t.is_empty());
    }
}

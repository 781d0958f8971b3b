//! Real-time bidding (issue #14): DCE asks remote buyers for a bid over HTTP on every call that
//! passes compliance, under the campaign's `auction_deadline_ms`, and ranks the bids that come
//! in time beside the static ones.
//!
//! The core never waits on HTTP: a bid request is a lookup (`call/lookup.rs`,
//! `Query::Bid`) with a deadline; the SIP worker runs it with [`client::Client`] and hands the
//! [`PingResult`] back; a ping still out at the deadline counts as `timeout`.
//!
//! | file | what it owns |
//! |---|---|
//! | `format.rs` | request bodies and answer parsing: DCE's JSON, Ringba, Retreaver |
//! | `client.rs` | the pooled HTTP/1.1 + HTTP/2 client (rustls), one ping under a deadline |

pub mod client;
pub mod format;

/// What a bid request tells a buyer about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFacts {
    /// DCE's call id.
    pub call_id: String,
    /// Caller, E.164 digits (masked in the request unless the buyer has `expose_caller`).
    pub caller: String,
    /// Dialled number, E.164 digits.
    pub called: String,
    /// Campaign id.
    pub campaign: String,
    /// The carrier (publisher) id.
    pub carrier: String,
    /// The caller's US state (from the area code, or as a publisher's bid request gave it).
    pub state: Option<&'static str>,
    /// The caller's ZIP code, when a publisher's bid request gave it.
    pub zip: Option<String>,
    /// A publisher's bid request's tags (`POST /v1/bid`), passed on in DCE's format.
    pub tags: Vec<String>,
    /// The `X-DCE-Loop` of the bid request this one answers (`POST /v1/bid` from another
    /// exchange): DCE's own node id is added to it, so a chain of exchanges that pings back
    /// its start is refused there.
    pub loop_via: Option<String>,
}

impl CallFacts {
    /// The `X-DCE-Loop` value a request about this call carries from node `node_id`.
    pub fn loop_header(&self, node_id: &str) -> String {
        match &self.loop_via {
            Some(v) if !v.trim().is_empty() => format!("{}, {node_id}", v.trim()),
            _ => node_id.to_owned(),
        }
    }
}

/// Whether an `X-DCE-Loop` value names node `node_id` (a bid request that went round).
pub fn loops_back(header: &str, node_id: &str) -> bool {
    header.split(',').any(|n| n.trim() == node_id)
}

/// Where a bid wants the call to go instead of the buyer's trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A SIP URI: the request URI of the buyer INVITE.
    Sip(String),
    /// A phone number (E.164 digits): `{called}` in the buyer's trunk URI.
    Number(String),
}

/// A bid, whatever format it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bid {
    /// The price, in cents.
    pub cents: u32,
    /// Where the call goes, when not the buyer's trunk as configured.
    pub destination: Option<Destination>,
    /// Good for this long from the answer; `None`: for the call.
    pub expires_in_s: Option<u32>,
    /// The call is billable to this buyer after this long (replaces the campaign's
    /// `billable_after_s` for it).
    pub min_duration_s: Option<u32>,
}

/// What came of one bid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingResult {
    /// A bid.
    Bid(Bid),
    /// The buyer declined, with its reason.
    Rejected(String),
    /// No answer by the deadline.
    Timeout,
    /// A non-2xx status (the code) or a transport failure (what failed).
    Error(String),
    /// An answer DCE could not read as a bid (why).
    Malformed(String),
}

impl PingResult {
    /// Its kind, for metrics: `bid`, `rejected`, `timeout`, `error`, `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            PingResult::Bid(_) => "bid",
            PingResult::Rejected(_) => "rejected",
            PingResult::Timeout => "timeout",
            PingResult::Error(_) => "error",
            PingResult::Malformed(_) => "malformed",
        }
    }

    /// The outcome as CDRs and events name it: `bid`, `timeout`, `error:<status>`,
    /// `malformed`, `rejected:<reason>`.
    pub fn outcome(&self) -> String {
        match self {
            PingResult::Bid(_) => "bid".into(),
            PingResult::Rejected(r) => format!("rejected:{r}"),
            PingResult::Timeout => "timeout".into(),
            PingResult::Error(e) => format!("error:{e}"),
            PingResult::Malformed(_) => "malformed".into(),
        }
    }
}

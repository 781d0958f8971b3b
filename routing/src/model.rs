//! Campaigns, buyers and the immutable snapshot the auction runs on.

use crate::geo::StateSet;
use crate::live::{BuyerLive, Live};
use crate::schedule::Schedule;
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a campaign in its snapshot.
pub type CampaignId = usize;
/// Index of a buyer in its snapshot.
pub type BuyerId = usize;

/// A campaign: the numbers that reach it and its commercial terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// Name from config.
    pub id: String,
    /// Dialled numbers, E.164 digits without `+`.
    pub numbers: Vec<String>,
    /// A buyer pays its bid when the call lasts at least this long.
    pub billable_after_s: u32,
    /// Bids below are not considered.
    pub floor_cents: u32,
    /// Calls are ended after this long.
    pub max_duration_s: u32,
    /// A call with one-way audio is still billable (`false`: it is not).
    pub bill_one_way_audio: bool,
    /// Check the DNC lists for this campaign's callers.
    pub dnc: bool,
    /// Check TCPA calling hours.
    pub tcpa_hours: bool,
    /// Route only callers with live consent.
    pub require_consent: bool,
    /// The longest a call waits for real-time bids, milliseconds.
    pub auction_deadline_ms: u32,
    /// The exchange's share of each billable call's price, in parts per million
    /// (`publisher_margin = 0.2` → 200,000); the publisher is paid the rest.
    pub publisher_margin_ppm: u32,
    /// How long a price quoted by `POST /v1/bid` holds, seconds (a real-time bid's own
    /// expiry shortens it).
    pub reservation_s: u32,
    /// What a repeat caller gets (`duplicates = { … }`), if anything.
    pub duplicates: Option<DuplicateRule>,
    /// Revenue recovery: when the buyer that answered hangs up within this many seconds of
    /// its answer, the carrier stays connected and the call goes to the next buyer (0: off).
    pub reroute_within_s: u32,
    /// At most this many such reroutes per call.
    pub max_reroutes: u32,
    /// `stir = { require, on_fail }`: what the caller's identity must show.
    pub stir: crate::StirPolicy,
    /// `record`: record its connected calls (both directions, one stereo file).
    pub record: bool,
}

/// `duplicates = { window_days, after, action }`: a caller who came within `window_days` of
/// an earlier call that reached `after` is a duplicate, and `action` says what happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateRule {
    /// How long a caller stays a duplicate, days.
    pub window_days: u32,
    /// How far the earlier call must have got.
    pub after: DupStage,
    /// What happens to the repeat call.
    pub action: DupAction,
}

impl DuplicateRule {
    /// The window in seconds.
    pub fn window_s(self) -> i64 {
        i64::from(self.window_days) * 86_400
    }
}

/// How far an earlier call got (`after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DupStage {
    /// A buyer was rung.
    Routed,
    /// A buyer answered.
    Connected,
    /// The call became billable.
    Billable,
}

impl DupStage {
    /// Every stage, in order.
    pub const ALL: [DupStage; 3] = [DupStage::Routed, DupStage::Connected, DupStage::Billable];

    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DupStage::Routed => "routed",
            DupStage::Connected => "connected",
            DupStage::Billable => "billable",
        }
    }

    /// From its name in the config.
    pub fn parse(s: &str) -> Option<DupStage> {
        DupStage::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Its place in [`DupStage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happens to a duplicate call (`action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DupAction {
    /// Refuse it (a campaign's rule: the call; a buyer's: that buyer, `excluded:duplicate`).
    Reject,
    /// The buyer that had the earlier call goes first.
    SameBuyer,
    /// Routed as usual, but never billable.
    NotBillable,
    /// The buyer that had the earlier call is `excluded:duplicate`; the others bid.
    NextBuyer,
}

impl DupAction {
    /// Every action.
    pub const ALL: [DupAction; 4] = [
        DupAction::Reject,
        DupAction::SameBuyer,
        DupAction::NotBillable,
        DupAction::NextBuyer,
    ];

    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DupAction::Reject => "reject",
            DupAction::SameBuyer => "same_buyer",
            DupAction::NotBillable => "not_billable",
            DupAction::NextBuyer => "next_buyer",
        }
    }

    /// From its name in the config.
    pub fn parse(s: &str) -> Option<DupAction> {
        DupAction::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl Campaign {
    /// What the publisher is paid of `revenue_cents` after the margin, rounded down to the
    /// cent (the margin is the rest, so the two always add up to the revenue).
    pub fn payout_of(&self, revenue_cents: u32) -> u32 {
        let keep = 1_000_000 - u64::from(self.publisher_margin_ppm.min(1_000_000));
        (u64::from(revenue_cents) * keep / 1_000_000) as u32
    }
}

/// A buyer: where its calls go, what it bids, and its limits. `0` means unlimited everywhere.
#[derive(Debug, Clone)]
pub struct Buyer {
    /// Name from config.
    pub id: String,
    /// Campaigns it buys.
    pub campaigns: Vec<CampaignId>,
    /// Target URI template with `{called}` / `{caller}`.
    pub uri: String,
    /// Bid per billable call, in cents.
    pub bid_cents: u32,
    /// Calls at once (ringing or connected).
    pub max_concurrent: u32,
    /// Answered calls per clock hour in the buyer's zone.
    pub hourly_cap: u32,
    /// Answered calls per day in the buyer's zone.
    pub daily_cap: u32,
    /// Spend per day in the buyer's zone, in cents.
    pub daily_budget_cents: u64,
    /// Answered calls per calendar month in the buyer's zone.
    pub monthly_cap: u32,
    /// Spend per calendar month in the buyer's zone, in cents.
    pub monthly_budget_cents: u64,
    /// Pause itself after calls ring out (`pause_after_unanswered = { in_hour, in_day }`).
    pub pause_after_unanswered: PauseRule,
    /// Its own duplicate rule (judged on the caller's calls to this buyer), replacing the
    /// campaign's for this buyer.
    pub duplicates: Option<DuplicateRule>,
    /// Caller states it takes; empty = any.
    pub states: StateSet,
    /// Opening hours, if any.
    pub schedule: Option<Schedule>,
    /// Tie-break among equal bids, higher first.
    pub priority: i32,
    /// Credentials for the buyer's digest challenges (`401`/`407`), if it sends any.
    pub auth: Option<BuyerAuth>,
    /// Extra headers on its INVITEs: (name, value template).
    pub headers: Vec<(String, String)>,
    /// Codecs its offers may carry (encoding names); empty = whatever the carrier offered.
    pub codecs: Vec<String>,
    /// The From user part template; `None` = the caller.
    pub from_user: Option<String>,
    /// Trunk health checks (`health = { … }`), if configured.
    pub health: Option<BuyerHealth>,
    /// A PEM file of CAs trusted for this buyer's TLS certificate (beside the system's roots).
    pub tls_ca: Option<String>,
    /// Real-time bidding: the buyer is asked for a bid over HTTP on every call (`rtb = { … }`);
    /// `bid_cents`, when set, is its fallback when no bid comes.
    pub rtb: Option<Arc<Rtb>>,
    /// `min_attestation`: calls whose caller identity is verified below this are
    /// `excluded:attestation` (`Trust::None`: no minimum).
    pub min_attestation: crate::Trust,
    /// `attestation_bid`: the bid's multiplier by trust level.
    pub attestation_bid: crate::AttestationBid,
    /// `record`: record the calls it answers (whatever the campaign says).
    pub record: bool,
}

/// `rtb = { url, timeout_ms, format, headers }` and `expose_caller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtb {
    /// Where the bid request is POSTed (`http://` or `https://`).
    pub url: String,
    /// The longest this buyer is waited for, milliseconds (the campaign's
    /// `auction_deadline_ms` caps it).
    pub timeout_ms: u32,
    /// The request and response shape.
    pub format: RtbFormat,
    /// Extra HTTP headers (an API key, …).
    pub headers: Vec<(String, String)>,
    /// Send the caller's number in full (otherwise masked: area code and exchange only).
    pub expose_caller: bool,
    /// Bid requests out at once, across the node (0 = unlimited); over it the buyer is
    /// `excluded:ping_cap` for that call.
    pub max_in_flight: u32,
    /// Bid requests per second, across the node (0 = unlimited).
    pub max_pings_per_s: u32,
}

/// The bid request/response shapes DCE speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtbFormat {
    /// DCE's own JSON (`docs/rtb.md`).
    Dce,
    /// Ringba's ping tree (`CID`, `zipcode`, … → `bidAmount`, `expireInSeconds`, …).
    Ringba,
    /// Retreaver's RTB (`status: "reserved"`, `retreaver_payout`, …).
    Retreaver,
}

impl RtbFormat {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            RtbFormat::Dce => "dce",
            RtbFormat::Ringba => "ringba",
            RtbFormat::Retreaver => "retreaver",
        }
    }

    /// From its name in the config.
    pub fn parse(s: &str) -> Option<RtbFormat> {
        [RtbFormat::Dce, RtbFormat::Ringba, RtbFormat::Retreaver]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

/// `pause_after_unanswered = { in_hour, in_day }`: a buyer pauses itself when that many of
/// its calls rang out (not answered) in one local hour or day; 0 = no such rule. An operator
/// resumes it through the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PauseRule {
    /// Calls that rang out in one local hour.
    pub in_hour: u32,
    /// Calls that rang out in one local day.
    pub in_day: u32,
}

impl PauseRule {
    /// Any rule at all?
    pub fn is_set(self) -> bool {
        self.in_hour > 0 || self.in_day > 0
    }
}

/// `health = { interval_s, down_after, up_after, fail_calls, cooldown_s }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuyerHealth {
    /// Seconds between OPTIONS pings; 0 = no pings (the breaker only).
    pub interval_s: u32,
    /// Failed pings in a row that mark the trunk down.
    pub down_after: u32,
    /// Answered pings in a row that bring it back up.
    pub up_after: u32,
    /// Failed calls in a row (no response, 408, 5xx) that open the breaker; 0 = no breaker.
    pub fail_calls: u32,
    /// How long the breaker stays open, seconds.
    pub cooldown_s: u32,
}

/// A buyer trunk's digest credentials. The password is read from the environment or a file
/// named in the config (never the config itself) and never printed: `{:?}` shows the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct BuyerAuth {
    /// The user name.
    pub user: String,
    password: String,
}

impl BuyerAuth {
    /// Credentials for `user`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> BuyerAuth {
        BuyerAuth {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The password, for computing a digest answer.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for BuyerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuyerAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Buyer {
    /// The zone the buyer's hours, caps and budget are counted in (its schedule's, else UTC).
    pub fn tz(&self) -> Tz {
        self.schedule.map(|s| s.tz).unwrap_or(chrono_tz::UTC)
    }

    /// It has a cap or a budget (what fleet-wide caps count in Redis).
    pub fn capped(&self) -> bool {
        self.max_concurrent > 0
            || self.hourly_cap > 0
            || self.daily_cap > 0
            || self.monthly_cap > 0
            || self.daily_budget_cents > 0
            || self.monthly_budget_cents > 0
    }

    /// The buyer's target URI for a call.
    pub fn target_uri(&self, called: &str, caller: &str) -> String {
        self.uri
            .replace("{called}", called)
            .replace("{caller}", caller)
    }
}

/// A problem with a snapshot's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Two campaigns claim one number.
    #[error("number {number} belongs to both campaign `{first}` and `{second}`")]
    DuplicateNumber {
        /// The number.
        number: String,
        /// First campaign.
        first: String,
        /// Second campaign.
        second: String,
    },
}

/// Campaigns and buyers as of one config load. Immutable: a reload builds a new one; calls in
/// progress keep the one they started with.
#[derive(Debug)]
pub struct Snapshot {
    campaigns: Vec<Campaign>,
    buyers: Vec<Buyer>,
    live: Vec<Arc<BuyerLive>>,
    by_number: HashMap<String, CampaignId>,
    by_campaign: Vec<Vec<BuyerId>>,
    has_rtb: bool,
    /// The longest duplicate window of any rule, seconds (0: no rule).
    dup_window_s: i64,
}

impl Snapshot {
    /// Build a snapshot; live counters are taken from `live` by buyer id, so caps and
    /// concurrency survive a reload.
    pub fn new(
        campaigns: Vec<Campaign>,
        buyers: Vec<Buyer>,
        live: &Live,
    ) -> Result<Snapshot, SnapshotError> {
        let mut by_number = HashMap::new();
        for (i, c) in campaigns.iter().enumerate() {
            for n in &c.numbers {
                if let Some(prev) = by_number.insert(n.clone(), i) {
                    return Err(SnapshotError::DuplicateNumber {
                        number: n.clone(),
                        first: campaigns[prev].id.clone(),
                        second: c.id.clone(),
                    });
                }
            }
        }
        let mut by_campaign = vec![Vec::new(); campaigns.len()];
        for (b, buyer) in buyers.iter().enumerate() {
            for &c in &buyer.campaigns {
                if let Some(list) = by_campaign.get_mut(c) {
                    list.push(b);
                }
            }
        }
        let live = buyers.iter().map(|b| live.get(&b.id)).collect();
        let has_rtb = buyers.iter().any(|b| b.rtb.is_some());
        let dup_window_s = campaigns
            .iter()
            .filter_map(|c| c.duplicates)
            .chain(buyers.iter().filter_map(|b| b.duplicates))
            .map(DuplicateRule::window_s)
            .max()
            .unwrap_or(0);
        Ok(Snapshot {
            campaigns,
            buyers,
            live,
            by_number,
            by_campaign,
            has_rtb,
            dup_window_s,
        })
    }

    /// The longest window of any duplicate rule, seconds; 0 when there is none (then calls
    /// are not remembered).
    pub fn dup_window_s(&self) -> i64 {
        self.dup_window_s
    }

    /// Some buyer bids in real time (`rtb`): calls may have bid requests to make.
    pub fn has_rtb(&self) -> bool {
        self.has_rtb
    }

    /// The campaign a dialled number (E.164 digits) belongs to.
    pub fn campaign_for(&self, number: &str) -> Option<CampaignId> {
        self.by_number.get(number).copied()
    }

    /// The campaign named `id` in config.
    pub fn campaign_named(&self, id: &str) -> Option<CampaignId> {
        self.campaigns.iter().position(|c| c.id == id)
    }

    /// The buyer named `id` in config.
    pub fn buyer_named(&self, id: &str) -> Option<BuyerId> {
        self.buyers.iter().position(|b| b.id == id)
    }

    /// A campaign.
    pub fn campaign(&self, id: CampaignId) -> &Campaign {
        &self.campaigns[id]
    }

    /// A buyer.
    pub fn buyer(&self, id: BuyerId) -> &Buyer {
        &self.buyers[id]
    }

    /// A buyer's live counters.
    pub fn live(&self, id: BuyerId) -> &Arc<BuyerLive> {
        &self.live[id]
    }

    /// Buyers of a campaign, in config order.
    pub fn buyers_for(&self, c: CampaignId) -> &[BuyerId] {
        self.by_campaign.get(c).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every buyer.
    pub fn buyers(&self) -> &[Buyer] {
        &self.buyers
    }

    /// Every campaign.
    pub fn campaigns(&self) -> &[Campaign] {
        &self.campaigns
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn payout_rounds_down_and_margin_is_the_rest() {
        let mut c = crate::auction::tests::campaign(0);
        for (ppm, revenue, payout) in [
            (0, 1500, 1500),
            (200_000, 1500, 1200),
            (150_000, 999, 849),
            (999_999, 100, 0),
            (1, u32::MAX, u32::MAX - 4295),
        ] {
            c.publisher_margin_ppm = ppm;
            assert_eq!(c.payout_of(revenue), payout, "{ppm} ppm of {revenue}");
        }
    }
}

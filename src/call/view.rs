//! What the control API shows of live state: calls in progress and buyers. Built by the call
//! controller on the core task and handed to the API as plain data.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A call in progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallView {
    /// DCE's call id (the CDR's id).
    pub id: String,
    /// The carrier's SIP Call-ID.
    pub carrier_call_id: String,
    /// Carrier id.
    pub carrier: String,
    /// Campaign id.
    pub campaign: String,
    /// Caller, E.164 digits.
    pub caller: String,
    /// Dialled number, E.164 digits.
    pub called: String,
    /// `checking` (waiting for fleet-wide lookups), `ringing`, `answered` (awaiting the
    /// carrier's ACK) or `connected`.
    pub state: String,
    /// Seconds since the INVITE arrived.
    pub age_s: f64,
    /// Seconds since the buyer answered.
    pub talk_s: Option<f64>,
    /// The buyer being rung, or the one that answered.
    pub buyer: Option<String>,
    /// Buyers tried so far.
    pub attempts: u32,
    /// The compliance verdict.
    pub compliance: String,
    /// The STIR/SHAKEN verdict (`A`, `B`, `C`, `no_identity`, `failed:<reason>`; `pending`
    /// while its certificate is fetched), when `[stir]` is configured.
    pub stir: Option<String>,
    /// The buyer legs, in the order they were tried.
    pub legs: Vec<LegView>,
}

/// One buyer leg of a call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LegView {
    /// Buyer id.
    pub buyer: String,
    /// Its bid, cents.
    pub bid_cents: u32,
    /// `ringing`, `answered` or `ended` (declined, timed out, cancelled).
    pub state: String,
    /// The final SIP code the buyer sent, when it did.
    pub code: Option<u16>,
}

/// A buyer as the auction sees it now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuyerView {
    /// Buyer id.
    pub id: String,
    /// Campaigns it buys.
    pub campaigns: Vec<String>,
    /// The bid in force, cents (the override when set).
    pub bid_cents: u32,
    /// The bid in the config, cents.
    pub config_bid_cents: u32,
    /// An operator's override is in force (until the next reload).
    pub bid_override: bool,
    /// Paused (excluded from auctions until an operator resumes it).
    pub paused: bool,
    /// Who or what paused it: `operator`, `unanswered_in_hour` or `unanswered_in_day`
    /// (`pause_after_unanswered`).
    pub paused_by: Option<String>,
    /// When it was paused (RFC 3339).
    pub paused_at: Option<String>,
    /// Calls that rang out (not answered) in the buyer's current local hour, since it was
    /// last resumed.
    pub unanswered_this_hour: u32,
    /// Calls that rang out on the buyer's current local day, since it was last resumed.
    pub unanswered_today: u32,
    /// `pause_after_unanswered`, when set.
    pub pause_after_unanswered: Option<PauseRuleView>,
    /// Calls ringing or connected now.
    pub active_calls: u32,
    /// `max_concurrent` (0 = unlimited).
    pub max_concurrent: u32,
    /// Answered calls in the buyer's current local hour.
    pub answered_this_hour: u32,
    /// `hourly_cap` (0 = none).
    pub hourly_cap: u32,
    /// Answered calls on the buyer's current local day.
    pub answered_today: u32,
    /// `daily_cap` (0 = none).
    pub daily_cap: u32,
    /// Cents committed today.
    pub spend_today_cents: u64,
    /// `daily_budget_cents` (0 = none).
    pub daily_budget_cents: u64,
    /// Answered calls this month in the buyer's zone.
    pub answered_this_month: u32,
    /// `monthly_cap` (0 = none).
    pub monthly_cap: u32,
    /// Cents committed this month.
    pub spend_this_month_cents: u64,
    /// `monthly_budget_cents` (0 = none).
    pub monthly_budget_cents: u64,
    /// How the trunk's host name resolves (absent for an IP address).
    pub dns: Option<DnsView>,
    /// The trunk's health (absent without `health = { … }`).
    pub health: Option<HealthView>,
}

/// `pause_after_unanswered = { in_hour, in_day }` (0 = no such rule).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PauseRuleView {
    /// Calls that rang out in one local hour that pause the buyer.
    pub in_hour: u32,
    /// Calls that rang out in one local day that pause the buyer.
    pub in_day: u32,
}

/// A buyer trunk's health as the auction sees it now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthView {
    /// `up` or `down` (then the buyer is `excluded:down`).
    pub state: String,
    /// Why it is down: `options` (pings fail), `calls` (the breaker is open), or both.
    pub reason: Option<String>,
    /// Failed OPTIONS pings in a row while up, or answered ones while down.
    pub ping_run: u32,
    /// Failed calls in a row (no response, 408, 5xx) towards the breaker.
    pub failed_calls: u32,
    /// Until when the breaker is open (RFC 3339), while it is.
    pub breaker_open_until: Option<String>,
}

fn health_view(
    b: &dce_routing::Buyer,
    live: &dce_routing::BuyerLive,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<HealthView> {
    b.health?;
    let now_ms = now.timestamp_millis().max(0) as u64;
    let h = &live.health;
    let (ping, breaker) = (h.ping_down(), h.breaker_open(now_ms));
    let reason = match (ping, breaker) {
        (true, true) => Some("options+calls"),
        (true, false) => Some("options"),
        (false, true) => Some("calls"),
        (false, false) => None,
    };
    Some(HealthView {
        state: if reason.is_some() { "down" } else { "up" }.into(),
        reason: reason.map(str::to_owned),
        ping_run: h.ping_run(),
        failed_calls: h.call_fails(),
        breaker_open_until: breaker
            .then(|| chrono::DateTime::from_timestamp_millis(h.open_until_ms() as i64))
            .flatten()
            .map(|t| t.to_rfc3339()),
    })
}

/// A buyer host name's resolution (RFC 3263), as the resolver last saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DnsView {
    /// The name looked up, with what the URI fixes (`host[:port][;transport]`).
    pub host: String,
    /// `ok`, `stale` (the last lookup failed; the older answer is used), `failed` (never
    /// resolved: the buyer is `excluded:dns`) or `pending` (first lookup not done).
    pub status: String,
    /// The addresses calls use, in record order, e.g. `10.0.0.1:5060 (a.example prio 10 weight 50)`.
    pub targets: Vec<String>,
    /// TTL of the answer in use, seconds.
    pub ttl_s: Option<u64>,
    /// `naptr`, `srv` or `a`: the RFC 3263 step that gave the answer.
    pub via: Option<String>,
    /// The last lookup's error.
    pub error: Option<String>,
    /// When the answer in use was resolved (RFC 3339).
    pub resolved_at: Option<String>,
}

/// The DNS state of `uri`'s host in `table`; `None` when the host is an IP address.
pub fn dns_view(uri: &str, table: Option<&crate::dns::Table>) -> Option<DnsView> {
    let Ok((_, crate::config::routing::TargetHost::Name(d))) =
        crate::config::routing::target_of(uri, "1", "1")
    else {
        return None;
    };
    let host = d.key();
    let Some(s) = table.and_then(|t| t.get(&host)) else {
        return Some(DnsView {
            host,
            status: "pending".into(),
            targets: Vec::new(),
            ttl_s: None,
            via: None,
            error: None,
            resolved_at: None,
        });
    };
    let status = match (&s.answer, &s.error) {
        (None, _) => "failed",
        (Some(_), Some(_)) => "stale",
        (Some(_), None) => "ok",
    };
    let targets = s
        .answer
        .iter()
        .flat_map(|a| a.targets.iter())
        .flat_map(|t| {
            t.addrs
                .iter()
                .map(move |a| format!("{a} ({} prio {} weight {})", t.name, t.priority, t.weight))
        })
        .collect();
    Some(DnsView {
        host,
        status: status.into(),
        targets,
        ttl_s: s.answer.as_ref().map(|a| a.ttl.as_secs()),
        via: s.answer.as_ref().map(|a| a.via.to_owned()),
        error: s.error.clone(),
        resolved_at: s
            .resolved_at
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
    })
}

/// Buyer `i` of `snap` with its live state at `now`.
pub fn buyer_view(
    snap: &dce_routing::Snapshot,
    i: usize,
    now: chrono::DateTime<chrono::Utc>,
    dns: Option<&crate::dns::Table>,
) -> BuyerView {
    let b = &snap.buyers()[i];
    let live = snap.live(i as dce_routing::BuyerId);
    let k = dce_routing::local_keys(b.tz(), now);
    let bid_override = live.bid_override();
    let pause = live.pause();
    BuyerView {
        id: b.id.clone(),
        campaigns: b
            .campaigns
            .iter()
            .map(|c| snap.campaign(*c).id.clone())
            .collect(),
        bid_cents: bid_override.unwrap_or(b.bid_cents),
        config_bid_cents: b.bid_cents,
        bid_override: bid_override.is_some(),
        paused: pause.is_some(),
        paused_by: pause.map(|p| p.by.as_str().to_owned()),
        paused_at: pause.and_then(|p| {
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(p.at_ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }),
        unanswered_this_hour: live.unanswered_in_hour(k.hour),
        unanswered_today: live.unanswered_on_day(k.day),
        pause_after_unanswered: b.pause_after_unanswered.is_set().then_some(PauseRuleView {
            in_hour: b.pause_after_unanswered.in_hour,
            in_day: b.pause_after_unanswered.in_day,
        }),
        active_calls: live.active(),
        max_concurrent: b.max_concurrent,
        answered_this_hour: live.answered_in_hour(k.hour),
        hourly_cap: b.hourly_cap,
        answered_today: live.answered_on_day(k.day),
        daily_cap: b.daily_cap,
        spend_today_cents: live.spend_on_day(k.day),
        daily_budget_cents: b.daily_budget_cents,
        answered_this_month: live.answered_in_month(k.month),
        monthly_cap: b.monthly_cap,
        spend_this_month_cents: live.spend_in_month(k.month),
        monthly_budget_cents: b.monthly_budget_cents,
        dns: dns_view(&b.uri, dns),
        health: health_view(b, live, now),
    }
}

/// `PATCH /v1/buyers/{id}`: every field is optional; what is present is changed.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyerPatch {
    /// `true` pauses the buyer (no new calls), `false` resumes it.
    pub paused: Option<bool>,
    /// A bid in cents that replaces the config's until the next reload; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 10000000)]
    pub bid_cents: Option<Option<u32>>,
}

impl BuyerPatch {
    /// From a JSON object: `paused` a boolean (or null: unchanged), `bid_cents` an integer
    /// 0–10,000,000 (`1500.0` counts as an integer, as in JSON Schema) or null (clears the
    /// override); nothing else.
    pub fn from_json(v: &serde_json::Value) -> Result<BuyerPatch, String> {
        let obj = v.as_object().ok_or("the body must be a JSON object")?;
        let mut p = BuyerPatch::default();
        for (k, v) in obj {
            match k.as_str() {
                "paused" => {
                    p.paused = match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::Bool(b) => Some(*b),
                        _ => return Err("`paused` must be true or false".into()),
                    }
                }
                "bid_cents" => {
                    p.bid_cents = Some(match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::Number(n) => {
                            let f = n.as_f64().unwrap_or(-1.0);
                            if f.fract() != 0.0 || !(0.0..=10_000_000.0).contains(&f) {
                                return Err(
                                    "`bid_cents` must be a whole number from 0 to 10000000".into(),
                                );
                            }
                            Some(f as u32)
                        }
                        _ => return Err("`bid_cents` must be a number or null".into()),
                    })
                }
                other => return Err(format!("unknown field `{other}`")),
            }
        }
        Ok(p)
    }
}

/// `Some(v)` for a field that is present (even `null`), `None` when absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_absent_from_null() {
        let p: BuyerPatch = serde_json::from_str(r#"{"paused":true}"#).unwrap();
        assert_eq!((p.paused, p.bid_cents), (Some(true), None));
        let p: BuyerPatch = serde_json::from_str(r#"{"bid_cents":null}"#).unwrap();
        assert_eq!(p.bid_cents, Some(None));
        let p: BuyerPatch = serde_json::from_str(r#"{"bid_cents":1500}"#).unwrap();
        assert_eq!(p.bid_cents, Some(Some(1500)));
        assert!(serde_json::from_str::<BuyerPatch>(r#"{"bid":1}"#).is_err());
        assert!(serde_json::from_str::<BuyerPatch>(r#"{"bid_cents":-1}"#).is_err());
        let j = |t: &str| BuyerPatch::from_json(&serde_json::from_str(t).unwrap());
        assert_eq!(
            j(r#"{"bid_cents":1500.0}"#).unwrap().bid_cents,
            Some(Some(1500))
        );
        assert_eq!(j(r#"{"paused":null}"#).unwrap().paused, None);
        for bad in [
            "[null, null]",
            r#"{"bid_cents":1.5}"#,
            r#"{"bid_cents":10000001}"#,
            r#"{"bid_cents":"5"}"#,
            r#"{"paused":1}"#,
            r#"{"x":1}"#,
        ] {
            assert!(j(bad).is_err(), "{bad}");
        }
    }
}

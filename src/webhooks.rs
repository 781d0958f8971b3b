//! Postbacks (issue #15 item 5), the data: which webhook gets which event of a stored call,
//! what it is sent, how it is signed, and when a failed delivery is tried again.
//!
//! A buyer's and a carrier's (publisher's) `webhook = { url, secret, events }` subscribe to
//! `call.routed` (a buyer was rung: each buyer rung, and the carrier), `call.answered`,
//! `call.completed` (an answered call ended), `call.billable` (the winner and the carrier),
//! and `call.converted` (`POST /v1/calls/{id}/conversion`). The rows of a call's postbacks
//! are derived from its final CDR and written in the CDR's own transaction (the outbox), so
//! nothing is sent for a call that is not stored and nothing stored is forgotten.
//!
//! Each delivery is a POST of a JSON body with `X-DCE-Signature: t=<unix s>,v1=<hex>` — the
//! HMAC-SHA256, keyed with the webhook's secret, of `<t>.<body>` — and `Idempotency-Key`, the
//! row's id (`<call id>:<event>:<target>`, and `<call id>:call.converted:<seq>:<target>` for
//! the n-th conversion event of a call): a receiver that sees one twice has seen the same
//! event. The secret is never stored in the outbox nor logged.

use crate::call::cdr::{Cdr, LegRecord};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::Duration;

/// An event a webhook may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A buyer was rung.
    Routed,
    /// A buyer answered.
    Answered,
    /// An answered call ended.
    Completed,
    /// The call became billable.
    Billable,
    /// A buyer marked the call converted (or adjusted its payout).
    Converted,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 5] = [
        Event::Routed,
        Event::Answered,
        Event::Completed,
        Event::Billable,
        Event::Converted,
    ];

    /// Its name in config, bodies and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Routed => "call.routed",
            Event::Answered => "call.answered",
            Event::Completed => "call.completed",
            Event::Billable => "call.billable",
            Event::Converted => "call.converted",
        }
    }

    /// The event named `s`.
    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One webhook (`webhook = { url, secret, events }`).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    secret: String,
    events: u8,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field(
                "events",
                &self.events().map(Event::as_str).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Webhook {
    /// A webhook for `events`.
    pub fn new(url: &str, secret: &str, events: &[Event]) -> Webhook {
        Webhook {
            url: url.to_owned(),
            secret: secret.to_owned(),
            events: events.iter().fold(0, |m, e| m | e.bit()),
        }
    }

    /// Does it want `e`?
    pub fn wants(&self, e: Event) -> bool {
        self.events & e.bit() != 0
    }

    /// The events it wants.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        Event::ALL.into_iter().filter(|e| self.wants(*e))
    }

    /// The `X-DCE-Signature` of `body` sent at Unix second `t`.
    pub fn signature(&self, t: i64, body: &str) -> String {
        signature(&self.secret, t, body)
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// One postback to deliver: a row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postback {
    /// `<call id>:<event>:<target>`: the row's key and the `Idempotency-Key`.
    pub id: String,
    /// The call.
    pub call_id: String,
    /// `buyer:<id>` or `carrier:<id>`.
    pub target: String,
    /// The event.
    pub event: Event,
    /// Where it goes (the webhook's URL when the row was written).
    pub url: String,
    /// What is sent.
    pub body: String,
}

/// Every webhook of the running config, by target (`buyer:<id>`, `carrier:<id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Webhooks {
    by_target: HashMap<String, Webhook>,
}

impl Webhooks {
    /// Add `hook` for `target`.
    pub fn insert(&mut self, target: String, hook: Webhook) {
        self.by_target.insert(target, hook);
    }

    /// No webhook at all.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    /// The webhook of `target`.
    pub fn get(&self, target: &str) -> Option<&Webhook> {
        self.by_target.get(target)
    }

    /// The postbacks a stored call owes, in a stable order.
    pub fn postbacks(&self, cdr: &Cdr) -> Vec<Postback> {
        if self.is_empty() {
            return Vec::new();
        }
        let carrier = format!("carrier:{}", cdr.carrier);
        let answered = cdr.answer_at.is_some();
        let winner = cdr.buyer_id.as_deref().filter(|_| answered);
        let mut owed: Vec<(Event, String, Option<&str>, Option<&LegRecord>)> = Vec::new();
        let rung: Vec<&str> = cdr
            .bids
            .iter()
            .filter(|b| b.outcome == "won" || b.outcome.starts_with("attempted:"))
            .map(|b| b.buyer_id.as_str())
            .collect();
        for b in &rung {
            owed.push((Event::Routed, format!("buyer:{b}"), Some(b), None));
        }
        if !rung.is_empty() {
            owed.push((Event::Routed, carrier.clone(), rung.first().copied(), None));
        }
        // Each buyer hears of its own leg (a rerouted call has one per buyer that answered,
        // and a buyer answers a call at most once); a CDR stored before legs were kept has
        // only its winner.
        for leg in &cdr.legs {
            let b = leg.buyer_id.as_str();
            owed.push((Event::Answered, format!("buyer:{b}"), Some(b), Some(leg)));
            owed.push((Event::Completed, format!("buyer:{b}"), Some(b), Some(leg)));
            if leg.billable {
                owed.push((Event::Billable, format!("buyer:{b}"), Some(b), Some(leg)));
            }
        }
        if let Some(w) = winner {
            if cdr.legs.is_empty() {
                for e in [Event::Answered, Event::Completed] {
                    owed.push((e, format!("buyer:{w}"), Some(w), None));
                }
                if cdr.billable {
                    owed.push((Event::Billable, format!("buyer:{w}"), Some(w), None));
                }
            }
            // The publisher hears of the call: answered once, the buyer it ended with.
            for e in [Event::Answered, Event::Completed] {
                owed.push((e, carrier.clone(), Some(w), None));
            }
            if cdr.billable {
                owed.push((Event::Billable, carrier.clone(), Some(w), None));
            }
        }
        owed.into_iter()
            .filter_map(|(event, target, buyer, leg)| {
                let hook = self.get(&target).filter(|h| h.wants(event))?;
                let id = format!("{}:{}:{target}", cdr.id, event.as_str());
                let body = body(&id, event, &target, buyer, cdr, leg).to_string();
                Some(Postback {
                    id,
                    call_id: cdr.id.clone(),
                    target,
                    event,
                    url: hook.url.clone(),
                    body,
                })
            })
            .collect()
    }
}

/// What a webhook receives for `event` of a call: the buyer sees its price, the publisher its
/// payout; neither sees the other's. A buyer's events of its own `leg` carry that leg's times,
/// duration and price (and `rerouted` when it hung up and the call went on to another buyer).
pub fn body(
    id: &str,
    event: Event,
    target: &str,
    buyer: Option<&str>,
    cdr: &Cdr,
    leg: Option<&LegRecord>,
) -> serde_json::Value {
    let at = match (event, leg) {
        (Event::Routed, _) => cdr.invite_at.clone(),
        (Event::Answered, Some(l)) => l.answer_at.clone(),
        (Event::Answered, None) => cdr.answer_at.clone().unwrap_or_else(|| cdr.end_at.clone()),
        (_, Some(l)) => l.end_at.clone(),
        _ => cdr.end_at.clone(),
    };
    let mut v = serde_json::json!({
        "id": id,
        "event": event.as_str(),
        "at": at,
        "call_id": cdr.id,
        "campaign": cdr.campaign,
        "caller": format!("+{}", cdr.caller.trim_start_matches('+')),
        "called": format!("+{}", cdr.called.trim_start_matches('+')),
        "buyer": buyer,
    });
    if matches!(event, Event::Completed | Event::Billable) {
        let (duration, billable) = leg.map_or((cdr.duration_s, cdr.billable), |l| {
            (l.duration_s, l.billable)
        });
        v["duration_s"] = serde_json::json!(duration);
        v["billable"] = serde_json::json!(billable);
    }
    if leg.is_some_and(|l| l.rerouted) {
        v["rerouted"] = serde_json::json!(true);
    }
    if target.starts_with("buyer:") {
        if event == Event::Billable {
            let price = leg.map_or(cdr.revenue_cents, |l| l.revenue_cents);
            v["price_cents"] = serde_json::json!(price);
        }
    } else {
        v["carrier"] = serde_json::json!(cdr.carrier);
        if event == Event::Billable {
            v["payout_cents"] = serde_json::json!(cdr.payout_cents);
        }
    }
    v
}

/// One conversion event of a stored call (`POST /v1/calls/{id}/conversion`), as its
/// `call.converted` postbacks tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion<'a> {
    /// The call.
    pub call_id: &'a str,
    /// Its campaign.
    pub campaign: &'a str,
    /// Caller, E.164 digits.
    pub caller: &'a str,
    /// Called, E.164 digits.
    pub called: &'a str,
    /// The carrier (publisher).
    pub carrier: &'a str,
    /// The buyer that answered it.
    pub buyer: Option<&'a str>,
    /// 1 for the call's first conversion event, then 2, 3 …
    pub seq: i64,
    /// When (RFC 3339).
    pub at: &'a str,
    /// The name of the API key that posted it.
    pub by: &'a str,
    /// Converted (true) or the conversion withdrawn (false).
    pub converted: bool,
    /// What the buyer pays.
    pub revenue_cents: i64,
    /// What the publisher is paid, after this event.
    pub payout_cents: i64,
    /// This event set the payout.
    pub payout_adjusted: bool,
}

impl Webhooks {
    /// The `call.converted` postbacks of one conversion event: to the call's buyer and its
    /// carrier, when they subscribe. Each event has its own ids
    /// (`<call id>:call.converted:<seq>:<target>`), so a second adjustment is a new delivery.
    pub fn conversion_postbacks(&self, c: &Conversion<'_>) -> Vec<Postback> {
        let mut targets = Vec::new();
        if let Some(b) = c.buyer {
            targets.push(format!("buyer:{b}"));
        }
        targets.push(format!("carrier:{}", c.carrier));
        targets
            .into_iter()
            .filter_map(|target| {
                let hook = self.get(&target).filter(|h| h.wants(Event::Converted))?;
                let id = format!(
                    "{}:{}:{}:{target}",
                    c.call_id,
                    Event::Converted.as_str(),
                    c.seq
                );
                let body = conversion_body(&id, &target, c).to_string();
                Some(Postback {
                    id,
                    call_id: c.call_id.to_owned(),
                    target,
                    event: Event::Converted,
                    url: hook.url.clone(),
                    body,
                })
            })
            .collect()
    }
}

/// What a webhook receives for a conversion event. As for the other events, the buyer sees
/// its price (and the payout only when it set it itself), the publisher its payout; the
/// event's note stays in the CDR database.
pub fn conversion_body(id: &str, target: &str, c: &Conversion<'_>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": id,
        "event": Event::Converted.as_str(),
        "at": c.at,
        "call_id": c.call_id,
        "campaign": c.campaign,
        "caller": format!("+{}", c.caller.trim_start_matches('+')),
        "called": format!("+{}", c.called.trim_start_matches('+')),
        "buyer": c.buyer,
        "converted": c.converted,
        "seq": c.seq,
        "by": c.by,
    });
    if target.starts_with("buyer:") {
        v["price_cents"] = serde_json::json!(c.revenue_cents);
        if c.payout_adjusted {
            v["payout_cents"] = serde_json::json!(c.payout_cents);
        }
    } else {
        v["carrier"] = serde_json::json!(c.carrier);
        v["payout_cents"] = serde_json::json!(c.payout_cents);
    }
    v
}

/// How long after the `attempts`-th failed delivery the next is tried: 10 s doubling, at most
/// an hour.
pub fn backoff(attempts: u32) -> Duration {
    let s = 10u64.saturating_mul(1 << attempts.min(12));
    Duration::from_secs(s.min(3600))
}

/// A postback still undelivered this long after its call was stored is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::cdr::BidRecord;

    fn cdr(billable: bool) -> Cdr {
        let mut c = Cdr::synthetic(1);
        c.id = "c1".into();
        c.carrier = "pub-a".into();
        c.caller = "13105551234".into();
        c.buyer_id = Some("acme".into());
        c.answer_at = Some("2026-12-02T10:00:05Z".into());
        c.billable = billable;
        c.revenue_cents = 1500;
        c.payout_cents = 1200;
        c.bids = vec![
            BidRecord {
                buyer_id: "bravo".into(),
                amount_cents: 1600,
                outcome: "attempted:486".into(),
            },
            BidRecord {
                buyer_id: "acme".into(),
                amount_cents: 1500,
                outcome: "won".into(),
            },
            BidRecord {
                buyer_id: "zed".into(),
                amount_cents: 100,
                outcome: "lost".into(),
            },
        ];
        c
    }

    fn hooks() -> Webhooks {
        let mut h = Webhooks::default();
        h.insert(
            "buyer:acme".into(),
            Webhook::new("http://127.0.0.1:1/acme", "s3cret", &Event::ALL),
        );
        h.insert(
            "buyer:bravo".into(),
            Webhook::new("http://127.0.0.1:1/bravo", "b", &[Event::Routed]),
        );
        h.insert(
            "carrier:pub-a".into(),
            Webhook::new("http://127.0.0.1:1/pub", "p", &[Event::Billable]),
        );
        h
    }

    #[test]
    fn a_stored_call_owes_each_subscriber_its_events() {
        let ids: Vec<String> = hooks()
            .postbacks(&cdr(true))
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            ids,
            [
                "c1:call.routed:buyer:bravo",
                "c1:call.routed:buyer:acme",
                "c1:call.answered:buyer:acme",
                "c1:call.completed:buyer:acme",
                "c1:call.billable:buyer:acme",
                "c1:call.billable:carrier:pub-a",
            ]
        );
        // not billable: no billable event for anyone
        let p = hooks().postbacks(&cdr(false));
        assert!(p.iter().all(|p| p.event != Event::Billable), "{p:?}");
        // never answered: only the routing
        let mut failed = cdr(false);
        failed.answer_at = None;
        let events: Vec<Event> = hooks().postbacks(&failed).iter().map(|p| p.event).collect();
        assert_eq!(events, [Event::Routed, Event::Routed]);
        assert!(Webhooks::default().postbacks(&cdr(true)).is_empty());
    }

    #[test]
    fn each_buyer_of_a_rerouted_call_hears_of_its_own_leg() {
        let leg = |buyer: &str, billable: bool, rerouted: bool, cents: u32| LegRecord {
            buyer_id: buyer.into(),
            bid_cents: cents,
            answer_at: format!("2026-12-02T10:00:0{}Z", if rerouted { 5 } else { 9 }),
            end_at: "2026-12-02T10:00:08Z".into(),
            duration_s: if rerouted { 3.0 } else { 120.0 },
            billable,
            revenue_cents: if billable { cents } else { 0 },
            payout_cents: if billable { cents / 2 } else { 0 },
            hangup_by: Some(if rerouted { "buyer" } else { "carrier" }.into()),
            rerouted,
        };
        let mut c = cdr(true);
        c.bids[0].outcome = "won".into();
        c.legs = vec![
            leg("acme", false, true, 1500),
            leg("bravo", true, false, 1600),
        ];
        c.buyer_id = Some("bravo".into());
        c.revenue_cents = 1600;
        c.payout_cents = 800;
        let mut h = hooks();
        h.insert(
            "buyer:bravo".into(),
            Webhook::new("http://127.0.0.1:1/bravo", "b", &Event::ALL),
        );
        let p = h.postbacks(&c);
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "c1:call.routed:buyer:bravo",
                "c1:call.routed:buyer:acme",
                "c1:call.answered:buyer:acme",
                "c1:call.completed:buyer:acme",
                "c1:call.answered:buyer:bravo",
                "c1:call.completed:buyer:bravo",
                "c1:call.billable:buyer:bravo",
                "c1:call.billable:carrier:pub-a",
            ]
        );
        let body = |id: &str| -> serde_json::Value {
            serde_json::from_str(&p.iter().find(|p| p.id == id).unwrap().body).unwrap()
        };
        let a = body("c1:call.completed:buyer:acme");
        assert_eq!(
            (a["billable"].as_bool(), a["rerouted"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(a["duration_s"], 3.0);
        let b = body("c1:call.billable:buyer:bravo");
        assert_eq!(
            (b["price_cents"].as_u64(), b.get("rerouted")),
            (Some(1600), None)
        );
        assert_eq!(
            body("c1:call.answered:buyer:bravo")["at"],
            "2026-12-02T10:00:09Z"
        );
        assert_eq!(body("c1:call.billable:carrier:pub-a")["payout_cents"], 800);
    }

    #[test]
    fn the_buyer_sees_its_price_and_the_publisher_its_payout() {
        let p = hooks().postbacks(&cdr(true));
        let body = |id: &str| -> serde_json::Value {
            serde_json::from_str(&p.iter().find(|p| p.id == id).unwrap().body).unwrap()
        };
        let b = body("c1:call.billable:buyer:acme");
        assert_eq!(b["price_cents"], 1500);
        assert!(b.get("payout_cents").is_none() && b.get("carrier").is_none());
        assert_eq!(b["caller"], "+13105551234");
        assert_eq!(b["id"], "c1:call.billable:buyer:acme");
        let c = body("c1:call.billable:carrier:pub-a");
        assert_eq!(
            (c["payout_cents"].as_u64(), c["carrier"].as_str()),
            (Some(1200), Some("pub-a"))
        );
        assert!(c.get("price_cents").is_none());
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_timestamp_and_the_body() {
        // RFC 4231 does not cover this framing; checked against `openssl dgst -sha256 -hmac`:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=".to_owned() + &expected_hex("key", "1700000000.{\"a\":1}")
        );
        assert_ne!(signature("key", 1, "x"), signature("other", 1, "x"));
        assert_ne!(signature("key", 1, "x"), signature("key", 2, "x"));
        let h = Webhook::new("http://x", "hidden-secret", &[Event::Routed]);
        assert!(!format!("{h:?}").contains("hidden-secret"));
    }

    /// An independent HMAC-SHA256 (RFC 2104 by hand over sha2), to check the framing.
    fn expected_hex(key: &str, msg: &str) -> String {
        use sha2::Digest;
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key.as_bytes());
        let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(msg.as_bytes())
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        outer.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn each_conversion_event_is_its_own_delivery_to_the_buyer_and_the_publisher() {
        let mut c = Conversion {
            call_id: "c1",
            campaign: "auto",
            caller: "13105551234",
            called: "18005550100",
            carrier: "pub-a",
            buyer: Some("acme"),
            seq: 1,
            at: "2026-12-02T10:00:05.000Z",
            by: "acme-key",
            converted: true,
            revenue_cents: 1500,
            payout_cents: 1200,
            payout_adjusted: false,
        };
        let mut h = hooks();
        h.insert(
            "carrier:pub-a".into(),
            Webhook::new("http://127.0.0.1:1/pub", "p", &[Event::Converted]),
        );
        let p = h.conversion_postbacks(&c);
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "c1:call.converted:1:buyer:acme",
                "c1:call.converted:1:carrier:pub-a"
            ]
        );
        let b: serde_json::Value = serde_json::from_str(&p[0].body).unwrap();
        assert_eq!(
            (b["converted"].as_bool(), b["by"].as_str()),
            (Some(true), Some("acme-key"))
        );
        assert_eq!(b["price_cents"], 1500);
        assert!(b.get("payout_cents").is_none(), "{b}");
        let pb: serde_json::Value = serde_json::from_str(&p[1].body).unwrap();
        assert_eq!(pb["payout_cents"], 1200);
        assert!(pb.get("price_cents").is_none(), "{pb}");
        c.seq = 2;
        c.payout_adjusted = true;
        c.payout_cents = 900;
        let p = h.conversion_postbacks(&c);
        assert_eq!(p[0].id, "c1:call.converted:2:buyer:acme");
        let b: serde_json::Value = serde_json::from_str(&p[0].body).unwrap();
        assert_eq!(b["payout_cents"], 900);
        // the carrier of hooks() only wants call.billable; bravo did not answer
        assert_eq!(hooks().conversion_postbacks(&c).len(), 1);
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(320));
        assert_eq!(backoff(9), Duration::from_secs(3600));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(3600));
    }
}

//! Live call events for `GET /v1/events` (WebSocket) and the live page.
//!
//! The call controller publishes into a [`Bus`]; every subscriber has its own bounded queue
//! (a broadcast channel). A subscriber that falls more than [`CAPACITY`] events behind is
//! dropped by the API task; the controller never waits for anyone. With nobody subscribed an
//! event costs one atomic load: the JSON is only built when somebody listens.

use std::sync::Arc;
use tokio::sync::broadcast;

/// Events a subscriber may lag behind before it is dropped.
pub const CAPACITY: usize = 4096;

/// One event, serialized once for every subscriber.
#[derive(Debug)]
pub struct Event {
    /// `call.started`, `call.rejected`, `auction.completed`, `call.answered`, `call.completed`,
    /// `bid.quoted`, `buyer.down`, `buyer.up`, `buyer.paused`.
    pub kind: &'static str,
    /// The call's campaign (for filtering), when known.
    pub campaign: String,
    /// Buyers the event concerns (bidders, or the winner), for filtering.
    pub buyers: Vec<String>,
    /// The JSON text sent to clients.
    pub json: String,
}

impl Event {
    /// Does it pass a subscriber's filter?
    pub fn matches(&self, campaign: Option<&str>, buyer: Option<&str>) -> bool {
        campaign.is_none_or(|c| c == self.campaign)
            && buyer.is_none_or(|b| self.buyers.iter().any(|x| x == b))
    }
}

/// Where events go.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Bus {
    /// Publish an event of `kind`; `body` builds its fields (called only when somebody
    /// listens). `type`, `at` (RFC 3339) are added.
    pub fn emit(
        &self,
        kind: &'static str,
        campaign: &str,
        buyers: impl FnOnce() -> Vec<String>,
        body: impl FnOnce() -> serde_json::Value,
    ) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut v = body();
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), kind.into());
            o.insert(
                "at".into(),
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
            o.entry("campaign").or_insert_with(|| campaign.into());
        }
        let _ = self.tx.send(Arc::new(Event {
            kind,
            campaign: campaign.to_owned(),
            buyers: buyers(),
            json: v.to_string(),
        }));
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_listeners_and_filters_apply() {
        let bus = Bus::default();
        bus.emit(
            "call.started",
            "c1",
            || panic!("not built"),
            || panic!("not built"),
        );
        let mut rx = bus.subscribe();
        bus.emit(
            "call.answered",
            "c1",
            || vec!["b1".into()],
            || serde_json::json!({ "call_id": "x" }),
        );
        let e = rx.try_recv().unwrap();
        assert_eq!(e.kind, "call.answered");
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["type"], "call.answered");
        assert_eq!(v["campaign"], "c1");
        assert_eq!(v["call_id"], "x");
        assert!(e.matches(Some("c1"), Some("b1")));
        assert!(e.matches(None, None));
        assert!(!e.matches(Some("c2"), None));
        assert!(!e.matches(None, Some("b2")));
    }
}

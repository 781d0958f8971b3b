//! Conversions (issue #15 item 5): a buyer marks a call it answered converted, or adjusts
//! what the call's publisher is paid, within [`WINDOW`] of the INVITE
//! (`POST /v1/calls/{id}/conversion`). The call's row keeps the state after the latest event
//! (`converted`, `converted_at`, `converted_by`, and `payout_cents`/`margin_cents` after the
//! adjustment); `conversions` keeps every event (who, when, payout before and after, note);
//! the `call.converted` postbacks go to the outbox in the same transaction, so a conversion
//! is either recorded and announced, or neither.
//!
//! Money: the payout may not exceed what the buyer pays (the call's revenue), so the margin,
//! revenue − payout, never goes below zero.

use super::db::Db;
use crate::webhooks::{Postback, Webhooks};
use sqlx::Row;
use std::time::Duration;

/// How long after its INVITE a call may be converted or adjusted.
pub const WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest note kept with a conversion event, in characters.
pub const MAX_NOTE: usize = 500;

/// What one conversion event asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionRequest {
    /// Converted (true) or the conversion withdrawn (false).
    pub converted: bool,
    /// The publisher's new payout, cents; none keeps it.
    pub payout_cents: Option<i64>,
    /// Free text kept with the event.
    pub note: Option<String>,
}

/// Who asks: the API key's name, and the buyer it is limited to (a `buyer` key; none for
/// an admin key).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The key's name (recorded as `converted_by`; never the key).
    pub key: &'a str,
    /// The only buyer whose calls it may touch.
    pub buyer: Option<&'a str>,
}

/// A stored call's conversion state and history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ConversionState {
    /// The call.
    pub call_id: String,
    /// The buyer that answered it.
    pub buyer_id: Option<String>,
    /// Marked converted by the latest event.
    pub converted: bool,
    /// The latest event (RFC 3339).
    pub converted_at: Option<String>,
    /// The name of the API key that posted it.
    pub converted_by: Option<String>,
    /// What the buyer pays, cents.
    pub revenue_cents: i64,
    /// What the publisher is paid, cents (after any adjustment).
    pub payout_cents: i64,
    /// What the exchange keeps, cents (revenue − payout after an adjustment).
    pub margin_cents: i64,
    /// Every event, oldest first.
    pub history: Vec<ConversionEvent>,
    /// The postbacks the latest request enqueued (their ids, also the `Idempotency-Key`s);
    /// empty on a read.
    pub postbacks: Vec<String>,
}

/// One conversion event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ConversionEvent {
    /// 1, 2, … per call.
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// The name of the API key that posted it.
    pub by: String,
    /// Converted (or withdrawn).
    pub converted: bool,
    /// The payout before, cents.
    pub old_payout_cents: i64,
    /// The payout after, cents.
    pub new_payout_cents: i64,
    /// The note sent with it.
    pub note: Option<String>,
}

/// Why a conversion was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// No stored call has that id.
    #[error("no stored call `{0}`")]
    NotFound(String),
    /// A buyer key asked about a call another buyer answered (or nobody did).
    #[error("call `{call}` was not answered by buyer `{buyer}`")]
    NotYours {
        /// The call.
        call: String,
        /// The key's buyer.
        buyer: String,
    },
    /// The call was never answered: there is nothing to convert.
    #[error("call `{0}` was not answered; only answered calls can be converted")]
    NotAnswered(String),
    /// The call is older than the window.
    #[error("call `{call}` began at {created_at}, more than 30 days ago: its conversion window is closed")]
    WindowClosed {
        /// The call.
        call: String,
        /// Its INVITE time.
        created_at: String,
    },
    /// The payout asked exceeds what the buyer pays.
    #[error("payout_cents {payout} exceeds the call's revenue ({revenue} cents): the exchange does not pay out more than it is paid")]
    PayoutAboveRevenue {
        /// Asked.
        payout: i64,
        /// The call's revenue.
        revenue: i64,
    },
    /// The database failed.
    #[error("CDR database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The call's columns a conversion reads.
struct CallRow {
    created_at: String,
    disposition: String,
    answered: bool,
    carrier: String,
    campaign: String,
    caller: String,
    called: String,
    buyer_id: Option<String>,
    revenue: i64,
    payout: i64,
    margin: i64,
    seq: i64,
    converted: bool,
    converted_at: Option<String>,
    converted_by: Option<String>,
}

/// The columns both databases read alike (after the id and the times).
const CALL_COLS: &str = "disposition, CAST(CASE WHEN answered_at IS NULL THEN 0 ELSE 1 END AS BIGINT) AS answered, \
     carrier, campaign, caller, called, buyer_id, revenue_cents, payout_cents, margin_cents, \
     CAST(conversion_seq AS BIGINT) AS seq, CAST(CASE WHEN converted THEN 1 ELSE 0 END AS BIGINT) AS converted, converted_by";
const PG_CALL: &str = "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at, \
     to_char(converted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS converted_at, ";
const SQLITE_CALL: &str = "SELECT created_at, converted_at, ";
const HISTORY_COLS: &str = "CAST(seq AS BIGINT) AS seq, by_key, CAST(CASE WHEN converted THEN 1 ELSE 0 END AS BIGINT) AS converted, \
     old_payout_cents, new_payout_cents, note FROM conversions";
const INSERT_POSTBACK: &str =
    "INSERT INTO postbacks (id, call_id, target, event, url, body, created_ms, next_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING";

/// Per database: how an id and a time are written in SQL, and the row lock.
struct Dialect {
    call: &'static str,
    id: &'static str,
    ts: &'static str,
    lock: &'static str,
    at: &'static str,
}

const PG: Dialect = Dialect {
    call: PG_CALL,
    id: "::text::uuid",
    ts: "::text::timestamptz",
    lock: " FOR UPDATE",
    at: "to_char(event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at",
};
const SQLITE: Dialect = Dialect {
    call: SQLITE_CALL,
    id: "",
    ts: "",
    lock: "",
    at: "event_at AS at",
};

impl Dialect {
    fn select_call(&self, lock: bool) -> String {
        format!(
            "{}{CALL_COLS} FROM calls WHERE id = $1{}{}",
            self.call,
            self.id,
            if lock { self.lock } else { "" }
        )
    }
    fn history(&self) -> String {
        format!(
            "SELECT {}, {HISTORY_COLS} WHERE call_id = $1{} ORDER BY seq",
            self.at, self.id
        )
    }
    fn update(&self) -> String {
        format!(
            "UPDATE calls SET converted = $1, converted_at = $2{}, converted_by = $3, conversion_seq = $4, \
             payout_cents = $5, margin_cents = $6 WHERE id = $7{}",
            self.ts, self.id
        )
    }
    fn insert(&self) -> String {
        format!(
            "INSERT INTO conversions (call_id, seq, event_at, by_key, converted, old_payout_cents, new_payout_cents, note) \
             VALUES ($1{}, $2, $3{}, $4, $5, $6, $7, $8)",
            self.id, self.ts
        )
    }
}

fn call_row(get: &dyn Fn(&str) -> Option<String>, int: &dyn Fn(&str) -> i64) -> CallRow {
    CallRow {
        created_at: get("created_at").unwrap_or_default(),
        disposition: get("disposition").unwrap_or_default(),
        answered: int("answered") != 0,
        carrier: get("carrier").unwrap_or_default(),
        campaign: get("campaign").unwrap_or_default(),
        caller: get("caller").unwrap_or_default(),
        called: get("called").unwrap_or_default(),
        buyer_id: get("buyer_id"),
        revenue: int("revenue_cents"),
        payout: int("payout_cents"),
        margin: int("margin_cents"),
        seq: int("seq"),
        converted: int("converted") != 0,
        converted_at: get("converted_at"),
        converted_by: get("converted_by"),
    }
}

fn event_row(get: &dyn Fn(&str) -> Option<String>, int: &dyn Fn(&str) -> i64) -> ConversionEvent {
    ConversionEvent {
        seq: int("seq"),
        at: get("at").unwrap_or_default(),
        by: get("by_key").unwrap_or_default(),
        converted: int("converted") != 0,
        old_payout_cents: int("old_payout_cents"),
        new_payout_cents: int("new_payout_cents"),
        note: get("note"),
    }
}

/// `8-4-4-4-12` hex digits: the only ids DCE gives calls (anything else is no stored call,
/// and never reaches PostgreSQL's `uuid` cast).
pub fn is_call_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// What a conversion changes, decided from the stored row (no I/O): the refusals in the
/// order the API reports them, then the new payout and margin.
fn decide(
    id: &str,
    row: &CallRow,
    who: Actor<'_>,
    req: &ConversionRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(i64, i64), ConversionError> {
    mine(id, row, who)?;
    if row.disposition != "answered" || !row.answered {
        return Err(ConversionError::NotAnswered(id.to_owned()));
    }
    let closed = match chrono::DateTime::parse_from_rfc3339(&row.created_at) {
        Ok(t) => now.signed_duration_since(t).to_std().unwrap_or_default() > WINDOW,
        Err(_) => true,
    };
    if closed {
        return Err(ConversionError::WindowClosed {
            call: id.to_owned(),
            created_at: row.created_at.clone(),
        });
    }
    match req.payout_cents {
        None => Ok((row.payout, row.margin)),
        Some(p) if p > row.revenue => Err(ConversionError::PayoutAboveRevenue {
            payout: p,
            revenue: row.revenue,
        }),
        Some(p) => Ok((p, row.revenue - p)),
    }
}

fn mine(id: &str, row: &CallRow, who: Actor<'_>) -> Result<(), ConversionError> {
    match who.buyer {
        Some(b) if row.buyer_id.as_deref() != Some(b) => Err(ConversionError::NotYours {
            call: id.to_owned(),
            buyer: b.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// One conversion on either database, in one transaction.
macro_rules! convert_in {
    ($pool:expr, $d:expr, $id:expr, $who:expr, $req:expr, $hooks:expr, $now:expr) => {{
        let (id, who, req, now) = ($id, $who, $req, $now);
        let mut tx = $pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe($d.select_call(true)))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| call_row(&|c| r.get(c), &|c| r.get(c)))
            .ok_or_else(|| ConversionError::NotFound(id.to_owned()))?;
        let (payout, margin) = decide(id, &row, who, req, now)?;
        let seq = row.seq + 1;
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        sqlx::query(sqlx::AssertSqlSafe($d.update()))
            .bind(req.converted)
            .bind(&at)
            .bind(who.key)
            .bind(seq as i32)
            .bind(payout)
            .bind(margin)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe($d.insert()))
            .bind(id)
            .bind(seq as i32)
            .bind(&at)
            .bind(who.key)
            .bind(req.converted)
            .bind(row.payout)
            .bind(payout)
            .bind(req.note.as_deref())
            .execute(&mut *tx)
            .await?;
        let postbacks: Vec<Postback> = $hooks.conversion_postbacks(&crate::webhooks::Conversion {
            call_id: id,
            campaign: &row.campaign,
            caller: &row.caller,
            called: &row.called,
            carrier: &row.carrier,
            buyer: row.buyer_id.as_deref(),
            seq,
            at: &at,
            by: who.key,
            converted: req.converted,
            revenue_cents: row.revenue,
            payout_cents: payout,
            payout_adjusted: req.payout_cents.is_some(),
        });
        for pb in &postbacks {
            sqlx::query(INSERT_POSTBACK)
                .bind(&pb.id)
                .bind(&pb.call_id)
                .bind(&pb.target)
                .bind(pb.event.as_str())
                .bind(&pb.url)
                .bind(&pb.body)
                .bind(now.timestamp_millis())
                .execute(&mut *tx)
                .await?;
        }
        let history = sqlx::query(sqlx::AssertSqlSafe($d.history()))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| event_row(&|c| r.get(c), &|c| r.get(c)))
            .collect();
        tx.commit().await?;
        ConversionState {
            call_id: id.to_owned(),
            buyer_id: row.buyer_id,
            converted: req.converted,
            converted_at: Some(at),
            converted_by: Some(who.key.to_owned()),
            revenue_cents: row.revenue,
            payout_cents: payout,
            margin_cents: margin,
            history,
            postbacks: postbacks.into_iter().map(|p| p.id).collect(),
        }
    }};
}

/// A call's conversion state on either database.
macro_rules! state_in {
    ($pool:expr, $d:expr, $id:expr, $who:expr) => {{
        let (id, who) = ($id, $who);
        let row = sqlx::query(sqlx::AssertSqlSafe($d.select_call(false)))
            .bind(id)
            .fetch_optional($pool)
            .await?
            .map(|r| call_row(&|c| r.get(c), &|c| r.get(c)))
            .ok_or_else(|| ConversionError::NotFound(id.to_owned()))?;
        mine(id, &row, who)?;
        let history = sqlx::query(sqlx::AssertSqlSafe($d.history()))
            .bind(id)
            .fetch_all($pool)
            .await?
            .into_iter()
            .map(|r| event_row(&|c| r.get(c), &|c| r.get(c)))
            .collect();
        ConversionState {
            call_id: id.to_owned(),
            buyer_id: row.buyer_id,
            converted: row.converted,
            converted_at: row.converted_at,
            converted_by: row.converted_by,
            revenue_cents: row.revenue,
            payout_cents: row.payout,
            margin_cents: row.margin,
            history,
            postbacks: Vec::new(),
        }
    }};
}

impl Db {
    /// Record one conversion event of stored call `id` for `who` at `now`, with the
    /// `call.converted` postbacks `hooks` subscribe to, in one transaction.
    pub async fn convert(
        &self,
        id: &str,
        who: Actor<'_>,
        req: &ConversionRequest,
        hooks: &Webhooks,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ConversionState, ConversionError> {
        if !is_call_id(id) {
            return Err(ConversionError::NotFound(id.to_owned()));
        }
        let id = &id.to_ascii_lowercase();
        Ok(match self {
            Db::Pg(p) => convert_in!(p, PG, id, who, req, hooks, now),
            Db::Sqlite(p) => convert_in!(p, SQLITE, id, who, req, hooks, now),
        })
    }

    /// Stored call `id`'s conversion state and history, as `who` may see it.
    pub async fn conversion_state(
        &self,
        id: &str,
        who: Actor<'_>,
    ) -> Result<ConversionState, ConversionError> {
        if !is_call_id(id) {
            return Err(ConversionError::NotFound(id.to_owned()));
        }
        let id = &id.to_ascii_lowercase();
        Ok(match self {
            Db::Pg(p) => state_in!(p, PG, id, who),
            Db::Sqlite(p) => state_in!(p, SQLITE, id, who),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::{Event, Webhook};

    fn answered(i: usize) -> crate::call::cdr::Cdr {
        let mut c = crate::call::cdr::Cdr::synthetic(i);
        c.disposition = "answered".into();
        c.answer_at = Some(c.invite_at.clone());
        c.buyer_id = Some("acme".into());
        c.carrier = "pub-a".into();
        c.revenue_cents = 1500;
        c.payout_cents = 1200;
        c.margin_cents = 300;
        c.billable = true;
        c
    }

    fn hooks() -> Webhooks {
        let mut h = Webhooks::default();
        h.insert(
            "buyer:acme".into(),
            Webhook::new(
                "http://127.0.0.1:1/acme",
                "acme-secret-0123456789",
                &[Event::Converted],
            ),
        );
        h.insert(
            "carrier:pub-a".into(),
            Webhook::new(
                "http://127.0.0.1:1/pub",
                "pub-secret-0123456789",
                &[Event::Billable],
            ),
        );
        h
    }

    const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

    async fn each_database(f: impl AsyncFn(Db)) {
        let path = std::env::temp_dir().join(format!("dce-conv-{}.db", crate::ids::uuid()));
        let sqlite = Db::connect(&format!("sqlite://{}", path.display())).unwrap();
        sqlite.migrate().await.unwrap();
        f(sqlite).await;
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
        // PostgreSQL when it is there (as tests/e2e_store.rs): a fresh database
        let admin = Db::connect(PG_ADMIN).unwrap();
        if admin.ping().await.is_err() {
            eprintln!("NOT RUN on PostgreSQL: {PG_ADMIN} does not answer");
            return;
        }
        let name = format!("dce_conv_{}", crate::ids::uuid().replace('-', ""));
        let Db::Pg(ap) = &admin else { unreachable!() };
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(ap)
            .await
            .unwrap();
        let pg = Db::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}")).unwrap();
        pg.migrate().await.unwrap();
        f(pg.clone()).await;
        if let Db::Pg(p) = &pg {
            p.close().await;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(ap)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_conversion_is_recorded_with_its_postbacks_and_every_event_is_kept() {
        each_database(async |db: Db| {
            let now = chrono::Utc::now();
            let mut fresh = answered(1);
            fresh.invite_at = (now - chrono::Duration::hours(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            fresh.answer_at = Some(fresh.invite_at.clone());
            let mut old = answered(2);
            old.invite_at = (now - chrono::Duration::days(31))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut failed = answered(3);
            failed.invite_at = fresh.invite_at.clone();
            failed.disposition = "failed".into();
            failed.answer_at = None;
            db.insert(&[fresh.clone(), old.clone(), failed.clone()])
                .await
                .unwrap();
            let buyer = Actor {
                key: "acme-key",
                buyer: Some("acme"),
            };
            let req = ConversionRequest {
                converted: true,
                payout_cents: None,
                note: Some("sale #1".into()),
            };
            let s = db
                .convert(&fresh.id, buyer, &req, &hooks(), now)
                .await
                .unwrap();
            assert!(s.converted);
            assert_eq!(s.converted_by.as_deref(), Some("acme-key"));
            assert_eq!((s.payout_cents, s.margin_cents), (1200, 300));
            assert_eq!(
                s.postbacks,
                [format!("{}:call.converted:1:buyer:acme", fresh.id)],
                "the carrier does not subscribe to call.converted"
            );
            let adjust = ConversionRequest {
                payout_cents: Some(1000),
                note: None,
                ..req.clone()
            };
            let admin = Actor {
                key: "ops",
                buyer: None,
            };
            let s = db
                .convert(&fresh.id, admin, &adjust, &hooks(), now)
                .await
                .unwrap();
            assert_eq!((s.payout_cents, s.margin_cents), (1000, 500));
            assert_eq!(
                s.postbacks,
                [format!("{}:call.converted:2:buyer:acme", fresh.id)]
            );
            let h: Vec<_> = s
                .history
                .iter()
                .map(|e| {
                    (
                        e.seq,
                        e.by.as_str(),
                        e.old_payout_cents,
                        e.new_payout_cents,
                        e.note.as_deref(),
                    )
                })
                .collect();
            assert_eq!(
                h,
                [
                    (1, "acme-key", 1200, 1200, Some("sale #1")),
                    (2, "ops", 1200, 1000, None)
                ]
            );
            assert_eq!(s.history[0].at.len(), 24, "{:?}", s.history[0]);
            // what the CDR search shows
            let rows = db
                .search(&crate::store::CdrQuery {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            let r = rows.iter().find(|r| r.id == fresh.id).unwrap();
            assert!(r.converted);
            assert_eq!(r.converted_by.as_deref(), Some("ops"));
            assert_eq!((r.payout_cents, r.margin_cents), (1000, 500));
            assert!(r.converted_at.as_deref().is_some_and(|t| t.ends_with('Z')));
            assert!(rows
                .iter()
                .filter(|r| r.id != fresh.id)
                .all(|r| !r.converted));
            let read = db.conversion_state(&fresh.id, buyer).await.unwrap();
            assert_eq!(read.history, s.history);
            assert!(read.postbacks.is_empty());
            // the outbox has both events, pending
            let (rows, counts) = db
                .postbacks(&crate::store::db::PostbackQuery {
                    call_id: Some(fresh.id.clone()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!(counts, [("pending".to_owned(), 2)]);
            assert!(rows
                .iter()
                .all(|r| r.attempts == 0 && r.event == "call.converted"));
            // the sender's side of the outbox reads them on this database too
            let due = db
                .due_postbacks(now.timestamp_millis() + 1, 10)
                .await
                .unwrap();
            assert_eq!(due.len(), 2);
            assert!(due.iter().all(|d| d.attempts == 0 && !d.body.is_empty()));
            let done = crate::store::db::PostbackResult::Delivered {
                at_ms: now.timestamp_millis(),
            };
            db.postback_result(&due[0].id, &done).await.unwrap();
            let (_, counts) = db
                .postbacks(&crate::store::db::PostbackQuery {
                    call_id: Some(fresh.id.clone()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                counts,
                [("delivered".to_owned(), 1), ("pending".to_owned(), 1)]
            );

            // refusals, and nothing written for them
            let err = |r: Result<ConversionState, ConversionError>| r.unwrap_err().to_string();
            let other = Actor {
                key: "bravo-key",
                buyer: Some("bravo"),
            };
            assert!(err(db.convert(&fresh.id, other, &req, &hooks(), now).await)
                .contains("not answered by buyer `bravo`"));
            assert!(err(db.conversion_state(&fresh.id, other).await).contains("bravo"));
            assert!(err(db.convert(&old.id, admin, &req, &hooks(), now).await)
                .contains("conversion window is closed"));
            assert!(
                err(db.convert(&failed.id, admin, &req, &hooks(), now).await)
                    .contains("was not answered")
            );
            let greedy = ConversionRequest {
                payout_cents: Some(1501),
                ..req.clone()
            };
            assert!(
                err(db.convert(&fresh.id, admin, &greedy, &hooks(), now).await)
                    .contains("exceeds the call's revenue")
            );
            let unknown = crate::ids::uuid();
            assert!(matches!(
                db.convert(&unknown, admin, &req, &hooks(), now).await,
                Err(ConversionError::NotFound(_))
            ));
            assert!(matches!(
                db.convert("not-a-uuid'; --", admin, &req, &hooks(), now)
                    .await,
                Err(ConversionError::NotFound(_))
            ));
            let after = db.conversion_state(&fresh.id, admin).await.unwrap();
            assert_eq!(after.history.len(), 2);
            assert_eq!(after.payout_cents, 1000);
        })
        .await;
    }
}

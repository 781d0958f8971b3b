//! The CDR database: PostgreSQL, or the embedded SQLite default. Migrations are embedded
//! (`migrations/postgres`, `migrations/sqlite`, sqlx's format and bookkeeping table).

use crate::call::cdr::Cdr;
use crate::webhooks::Postback;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, Row, SqlSafeStr, SqlitePool};
use std::borrow::Cow;
use std::str::FromStr;

/// A connection pool to the CDR database.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL.
    Pg(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// The migrations, in order: (name, SQL). Step `n` is version `n`.
type Steps = &'static [(&'static str, &'static str)];

const PG_STEPS: Steps = &[
    (
        "cdr",
        include_str!("../../migrations/postgres/0001_cdr.sql"),
    ),
    (
        "rtb",
        include_str!("../../migrations/postgres/0002_rtb.sql"),
    ),
    (
        "money",
        include_str!("../../migrations/postgres/0003_money.sql"),
    ),
    (
        "duplicates",
        include_str!("../../migrations/postgres/0004_duplicates.sql"),
    ),
    (
        "fleet_caps",
        include_str!("../../migrations/postgres/0005_fleet_caps.sql"),
    ),
    (
        "postbacks",
        include_str!("../../migrations/postgres/0006_postbacks.sql"),
    ),
    (
        "conversions",
        include_str!("../../migrations/postgres/0007_conversions.sql"),
    ),
    (
        "buyer_legs",
        include_str!("../../migrations/postgres/0008_buyer_legs.sql"),
    ),
    (
        "stir",
        include_str!("../../migrations/postgres/0009_stir.sql"),
    ),
    (
        "dtmf",
        include_str!("../../migrations/postgres/0010_dtmf.sql"),
    ),
    (
        "recording",
        include_str!("../../migrations/postgres/0011_recording.sql"),
    ),
];

const SQLITE_STEPS: Steps = &[
    ("cdr", include_str!("../../migrations/sqlite/0001_cdr.sql")),
    ("rtb", include_str!("../../migrations/sqlite/0002_rtb.sql")),
    (
        "money",
        include_str!("../../migrations/sqlite/0003_money.sql"),
    ),
    (
        "duplicates",
        include_str!("../../migrations/sqlite/0004_duplicates.sql"),
    ),
    (
        "fleet_caps",
        include_str!("../../migrations/sqlite/0005_fleet_caps.sql"),
    ),
    (
        "postbacks",
        include_str!("../../migrations/sqlite/0006_postbacks.sql"),
    ),
    (
        "conversions",
        include_str!("../../migrations/sqlite/0007_conversions.sql"),
    ),
    (
        "buyer_legs",
        include_str!("../../migrations/sqlite/0008_buyer_legs.sql"),
    ),
    (
        "stir",
        include_str!("../../migrations/sqlite/0009_stir.sql"),
    ),
    (
        "dtmf",
        include_str!("../../migrations/sqlite/0010_dtmf.sql"),
    ),
    (
        "recording",
        include_str!("../../migrations/sqlite/0011_recording.sql"),
    ),
];

fn migrator(steps: Steps) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            steps
                .iter()
                .enumerate()
                .map(|(i, &(name, sql))| {
                    Migration::new(
                        i as i64 + 1,
                        name.into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

fn ms(d: f64) -> i64 {
    (d * 1000.0).round() as i64
}

/// number, campaign, granted, expires, source — as text.
type ConsentRow = (String, String, Option<String>, Option<String>, String);

/// One row of `dce cdr export`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ExportRow {
    /// Call id.
    pub id: String,
    /// INVITE time (RFC 3339).
    pub created_at: String,
    /// Disposition.
    pub disposition: String,
    /// Carrier.
    pub carrier: String,
    /// Campaign.
    pub campaign: String,
    /// Caller.
    pub caller: String,
    /// Called.
    pub called: String,
    /// Winner.
    pub buyer_id: Option<String>,
    /// Winner's bid.
    pub bid_cents: i64,
    /// What the buyer pays (billable calls).
    pub revenue_cents: i64,
    /// What the publisher is paid.
    pub payout_cents: i64,
    /// What the exchange keeps.
    pub margin_cents: i64,
    /// Billable.
    pub billable: bool,
    /// Duration, ms.
    pub duration_ms: i64,
    /// Marked converted (`POST /v1/calls/{id}/conversion`); `payout_cents` and
    /// `margin_cents` above are the figures after any adjustment.
    pub converted: bool,
    /// The latest conversion event (RFC 3339), if any.
    pub converted_at: Option<String>,
    /// The name of the API key that posted it.
    pub converted_by: Option<String>,
    /// The STIR/SHAKEN verdict (`A`, `B`, `C`, `no_identity`, `failed:<reason>`), when
    /// verified.
    pub stir: Option<String>,
}

/// The columns of an [`ExportRow`] in PostgreSQL.
const PG_EXPORT_COLS: &str = "SELECT id::text AS id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at, \
     disposition, carrier, campaign, caller, called, buyer_id, bid_cents, revenue_cents, payout_cents, margin_cents, billable, duration_ms, \
     converted, to_char(converted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS converted_at, converted_by, stir FROM calls";
/// The same in SQLite.
const SQLITE_EXPORT_COLS: &str = "SELECT id, created_at, disposition, carrier, campaign, caller, called, buyer_id, bid_cents, revenue_cents, \
     payout_cents, margin_cents, billable, duration_ms, converted, converted_at, converted_by, stir FROM calls";

/// An export row from a query row of either database (they differ in how booleans are stored).
macro_rules! export_row {
    ($r:ident, $billable:expr, $converted:expr) => {
        ExportRow {
            id: $r.get("id"),
            created_at: $r.get("created_at"),
            disposition: $r.get("disposition"),
            carrier: $r.get("carrier"),
            campaign: $r.get("campaign"),
            caller: $r.get("caller"),
            called: $r.get("called"),
            buyer_id: $r.get("buyer_id"),
            bid_cents: $r.get("bid_cents"),
            revenue_cents: $r.get("revenue_cents"),
            payout_cents: $r.get("payout_cents"),
            margin_cents: $r.get("margin_cents"),
            billable: $billable,
            duration_ms: $r.get("duration_ms"),
            converted: $converted,
            converted_at: $r.get("converted_at"),
            converted_by: $r.get("converted_by"),
            stir: $r.get("stir"),
        }
    };
}

impl Db {
    /// Connect lazily (a database that is down at start is retried by the writer).
    pub fn connect(url: &str) -> Result<Db, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Db::Pg(
                PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(std::time::Duration::from_secs(3))
                    .connect_lazy(url)?,
            ))
        } else {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                // an erased or anonymised number must not linger in freed page space
                .pragma("secure_delete", "on");
            Ok(Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    // each connection has its own thread (sqlx's); CDR writes are background
                    // work, so it runs below the SIP workers (src/priority.rs)
                    .after_connect(|_, _| {
                        Box::pin(async {
                            crate::priority::background_threads_named("sqlx-sqlite-wor");
                            Ok(())
                        })
                    })
                    .connect_lazy_with(opts),
            ))
        }
    }

    /// One round trip (`SELECT 1`), for health checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Pg(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        }
    }

    /// Apply the embedded migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Pg(p) => migrator(PG_STEPS).run(p).await,
            Db::Sqlite(p) => migrator(SQLITE_STEPS).run(p).await,
        }
    }

    /// Insert CDRs and their bids in one transaction; a CDR already stored is skipped
    /// (replays never duplicate).
    pub async fn insert(&self, cdrs: &[Cdr]) -> Result<(), sqlx::Error> {
        self.insert_with(cdrs, &[], 0).await
    }

    /// [`Db::insert`], with the postbacks those calls owe written to the outbox in the same
    /// transaction (due at once; created at `now_ms`). A postback already there is skipped.
    pub async fn insert_with(
        &self,
        cdrs: &[Cdr],
        postbacks: &[Postback],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        if cdrs.is_empty() {
            return Ok(());
        }
        match self {
            Db::Pg(p) => insert_pg(p, cdrs, postbacks, now_ms).await,
            Db::Sqlite(p) => insert_sqlite(p, cdrs, postbacks, now_ms).await,
        }
    }

    /// Postbacks due at `now_ms`, oldest first, at most `limit`.
    pub async fn due_postbacks(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<DuePostback>, sqlx::Error> {
        let sql = "SELECT id, target, url, body, created_ms, CAST(attempts AS BIGINT) AS attempts FROM postbacks \
                   WHERE state = 'pending' AND next_ms <= $1 ORDER BY next_ms, id LIMIT $2";
        let rows = match self {
            Db::Pg(p) => {
                sqlx::query(sql)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(p)
                    .await?
            }
            Db::Sqlite(p) => {
                let rows = sqlx::query(sql)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(p)
                    .await?;
                return Ok(rows
                    .into_iter()
                    .map(|r| due_row(&|c| r.get(c), &|c| r.get(c)))
                    .collect());
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| due_row(&|c| r.get(c), &|c| r.get(c)))
            .collect())
    }

    /// What came of one delivery of postback `id`.
    pub async fn postback_result(&self, id: &str, r: &PostbackResult) -> Result<(), sqlx::Error> {
        let (state, next, delivered, error) = match r {
            PostbackResult::Delivered { at_ms } => ("delivered", *at_ms, Some(*at_ms), None),
            PostbackResult::Retry { next_ms, error } => {
                ("pending", *next_ms, None, Some(error.as_str()))
            }
            PostbackResult::Failed { at_ms, error } => {
                ("failed", *at_ms, None, Some(error.as_str()))
            }
        };
        let sql =
            "UPDATE postbacks SET state = $1, next_ms = $2, delivered_ms = $3, last_error = $4, \
                   attempts = attempts + 1 WHERE id = $5";
        match self {
            Db::Pg(p) => {
                sqlx::query(sql)
                    .bind(state)
                    .bind(next)
                    .bind(delivered)
                    .bind(error)
                    .bind(id)
                    .execute(p)
                    .await?;
            }
            Db::Sqlite(p) => {
                sqlx::query(sql)
                    .bind(state)
                    .bind(next)
                    .bind(delivered)
                    .bind(error)
                    .bind(id)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// The latest postbacks matching `q` (newest first, at most `q.limit`), and how many
    /// postbacks match `q` in each state (the state filter aside): what `/v1/webhooks` shows.
    pub async fn postbacks(
        &self,
        q: &PostbackQuery,
    ) -> Result<(Vec<PostbackRow>, Vec<(String, i64)>), sqlx::Error> {
        use sqlx::QueryBuilder;
        fn filters<DB: sqlx::Database>(b: &mut QueryBuilder<DB>, q: &PostbackQuery, state: bool)
        where
            for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        {
            b.push(" WHERE 1=1");
            let state = if state { q.state.as_ref() } else { None };
            for (col, v) in [
                ("state", state),
                ("call_id", q.call_id.as_ref()),
                ("target", q.target.as_ref()),
            ] {
                if let Some(v) = v {
                    b.push(format!(" AND {col} = ")).push_bind(v.clone());
                }
            }
        }
        const ROWS: &str = "SELECT id, call_id, target, event, url, created_ms, next_ms, CAST(attempts AS BIGINT) AS attempts, state, \
                            last_error, delivered_ms FROM postbacks";
        const COUNTS: &str = "SELECT state, COUNT(*) AS n FROM postbacks";
        macro_rules! run {
            ($p:expr) => {{
                let mut b = QueryBuilder::new(ROWS);
                filters(&mut b, q, true);
                b.push(" ORDER BY created_ms DESC, id LIMIT ")
                    .push_bind(q.limit);
                let rows = b
                    .build()
                    .fetch_all($p)
                    .await?
                    .into_iter()
                    .map(|r| PostbackRow {
                        id: r.get("id"),
                        call_id: r.get("call_id"),
                        target: r.get("target"),
                        event: r.get("event"),
                        url: r.get("url"),
                        created_ms: r.get("created_ms"),
                        next_ms: r.get("next_ms"),
                        attempts: r.get("attempts"),
                        state: r.get("state"),
                        last_error: r.get("last_error"),
                        delivered_ms: r.get("delivered_ms"),
                    })
                    .collect();
                let mut b = QueryBuilder::new(COUNTS);
                filters(&mut b, q, false);
                b.push(" GROUP BY state ORDER BY state");
                let counts = b
                    .build()
                    .fetch_all($p)
                    .await?
                    .into_iter()
                    .map(|r| (r.get("state"), r.get("n")))
                    .collect();
                (rows, counts)
            }};
        }
        Ok(match self {
            Db::Pg(p) => run!(p),
            Db::Sqlite(p) => run!(p),
        })
    }

    /// Every consent record (for the in-memory consent check).
    pub async fn load_consent(&self) -> Result<Vec<dce_compliance::Consent>, sqlx::Error> {
        let parse = |t: Option<String>| {
            t.and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .ok()
                    .or_else(|| {
                        chrono::DateTime::parse_from_str(
                            &format!("{t} +0000"),
                            "%Y-%m-%d %H:%M:%S%.f %z",
                        )
                        .ok()
                    })
                    .map(|d| d.with_timezone(&chrono::Utc))
            })
        };
        let rows: Vec<ConsentRow> = match self {
            Db::Pg(p) => sqlx::query(
                "SELECT number, campaign, to_char(granted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS granted,                  to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS expires, source FROM consent",
            )
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| (r.get("number"), r.get("campaign"), r.get("granted"), r.get("expires"), r.get("source")))
            .collect(),
            Db::Sqlite(p) => sqlx::query("SELECT number, campaign, granted_at AS granted, expires_at AS expires, source FROM consent")
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| (r.get("number"), r.get("campaign"), r.get("granted"), r.get("expires"), r.get("source")))
                .collect(),
        };
        Ok(rows
            .into_iter()
            .filter_map(|(number, campaign, granted, expires, source)| {
                Some(dce_compliance::Consent {
                    number: dce_compliance::nanp10(&number)?,
                    campaign,
                    granted: parse(granted)?,
                    expires: parse(expires),
                    source,
                })
            })
            .collect())
    }

    /// Rows in `calls`.
    pub async fn count_calls(&self) -> Result<i64, sqlx::Error> {
        match self {
            Db::Pg(p) => {
                sqlx::query_scalar("SELECT count(*) FROM calls")
                    .fetch_one(p)
                    .await
            }
            Db::Sqlite(p) => {
                sqlx::query_scalar("SELECT count(*) FROM calls")
                    .fetch_one(p)
                    .await
            }
        }
    }

    /// Calls with `from <= created_at < to` (RFC 3339), oldest first.
    pub async fn export(&self, from: &str, to: &str) -> Result<Vec<ExportRow>, sqlx::Error> {
        let rows = match self {
            Db::Pg(p) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{PG_EXPORT_COLS} WHERE created_at >= $1::text::timestamptz AND created_at < $2::text::timestamptz ORDER BY created_at"
                )))
                .bind(from)
                .bind(to)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| export_row!(r, r.get("billable"), r.get("converted")))
                .collect()
            }
            Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SQLITE_EXPORT_COLS} WHERE created_at >= ? AND created_at < ? ORDER BY created_at"
            )))
            .bind(from)
            .bind(to)
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| {
                export_row!(
                    r,
                    r.get::<i64, _>("billable") != 0,
                    r.get::<i64, _>("converted") != 0
                )
            })
            .collect(),
        };
        Ok(rows)
    }
}

/// One call of the duplicate rules' history (`Db::dup_history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DupHistoryRow {
    /// INVITE time, Unix seconds.
    pub at_s: i64,
    /// Campaign.
    pub campaign: String,
    /// Caller.
    pub caller: String,
    /// The first buyer rung, if any.
    pub routed_to: Option<String>,
    /// The buyer that answered, if any.
    pub connected_to: Option<String>,
    /// Billable.
    pub billable: bool,
}

impl Db {
    /// Calls since `since` (Unix seconds) as the duplicate rules remember them, oldest first:
    /// who was rung first, who answered, and whether it became billable (restored at start
    /// so a restart does not forget a repeat caller).
    pub async fn dup_history(&self, since_s: i64) -> Result<Vec<DupHistoryRow>, sqlx::Error> {
        // the first buyer rung: the lowest position that was tried
        macro_rules! routed {
            () => {
                "(SELECT b.buyer_id FROM bids b WHERE b.call_id = calls.id \
                 AND (b.outcome = 'won' OR b.outcome LIKE 'attempted:%') ORDER BY b.position LIMIT 1)"
            };
        }
        let row = |at_s: i64, r: &dyn Fn(&str) -> Option<String>, billable: bool| DupHistoryRow {
            at_s,
            campaign: r("campaign").unwrap_or_default(),
            caller: r("caller").unwrap_or_default(),
            routed_to: r("routed_to"),
            connected_to: if r("disposition").as_deref() == Some("answered") {
                r("buyer_id")
            } else {
                None
            },
            billable,
        };
        let rows = match self {
            Db::Pg(p) => sqlx::query(concat!(
                "SELECT CAST(EXTRACT(EPOCH FROM created_at) AS BIGINT) AS at_s, campaign, caller, buyer_id, \
                 disposition, billable, ",
                routed!(),
                " AS routed_to FROM calls \
                 WHERE created_at >= to_timestamp($1) AND disposition <> 'rejected' ORDER BY created_at"
            ))
            .bind(since_s as f64)
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| row(r.get("at_s"), &|c| r.get(c), r.get("billable")))
            .collect(),
            Db::Sqlite(p) => sqlx::query(concat!(
                "SELECT CAST(strftime('%s', created_at) AS INTEGER) AS at_s, campaign, caller, buyer_id, \
                 disposition, billable, ",
                routed!(),
                " AS routed_to FROM calls \
                 WHERE created_at >= ? AND disposition <> 'rejected' ORDER BY created_at"
            ))
            .bind(
                chrono::DateTime::<chrono::Utc>::from_timestamp(since_s, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string(),
            )
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| {
                let billable = r.get::<i64, _>("billable") != 0;
                row(r.get("at_s"), &|c| r.get(c), billable)
            })
            .collect(),
        };
        Ok(rows)
    }
}

/// A CDR search: every field narrows it; newest first; `after` is the last row of the previous
/// page (keyset pagination on `(created_at, id)`, so pages stay stable while calls arrive).
#[derive(Debug, Default, Clone)]
pub struct CdrQuery {
    /// `created_at >= from` (RFC 3339).
    pub from: Option<String>,
    /// `created_at < to` (RFC 3339).
    pub to: Option<String>,
    /// Winning buyer.
    pub buyer: Option<String>,
    /// Campaign.
    pub campaign: Option<String>,
    /// Disposition.
    pub disposition: Option<String>,
    /// Caller, E.164 digits.
    pub caller: Option<String>,
    /// `(created_at, id)` of the last row already seen.
    pub after: Option<(String, String)>,
    /// Page size.
    pub limit: u32,
}

impl Db {
    /// One page of [`CdrQuery`].
    pub async fn search(&self, q: &CdrQuery) -> Result<Vec<ExportRow>, sqlx::Error> {
        use sqlx::QueryBuilder;
        fn filters<DB: sqlx::Database>(b: &mut QueryBuilder<DB>, q: &CdrQuery, ts: &str, uuid: &str)
        where
            for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
            for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        {
            b.push(" WHERE 1=1");
            if let Some(v) = &q.from {
                b.push(" AND created_at >= ").push_bind(utc(v)).push(ts);
            }
            if let Some(v) = &q.to {
                b.push(" AND created_at < ").push_bind(utc(v)).push(ts);
            }
            for (col, v) in [
                ("buyer_id", &q.buyer),
                ("campaign", &q.campaign),
                ("disposition", &q.disposition),
                ("caller", &q.caller),
            ] {
                if let Some(v) = v {
                    b.push(format!(" AND {col} = ")).push_bind(v.clone());
                }
            }
            if let Some((at, id)) = &q.after {
                b.push(" AND (created_at, id) < (")
                    .push_bind(utc(at))
                    .push(ts)
                    .push(", ")
                    .push_bind(id.clone())
                    .push(uuid)
                    .push(")");
            }
            b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(q.limit));
        }
        let rows = match self {
            Db::Pg(p) => {
                let mut b = QueryBuilder::new(PG_EXPORT_COLS);
                filters(&mut b, q, "::text::timestamptz", "::text::uuid");
                b.build()
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|r| export_row!(r, r.get("billable"), r.get("converted")))
                    .collect()
            }
            Db::Sqlite(p) => {
                let mut b = QueryBuilder::new(SQLITE_EXPORT_COLS);
                filters(&mut b, q, "", "");
                b.build()
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|r| {
                        export_row!(
                            r,
                            r.get::<i64, _>("billable") != 0,
                            r.get::<i64, _>("converted") != 0
                        )
                    })
                    .collect()
            }
        };
        Ok(rows)
    }
}

/// Times as UTC RFC 3339 so SQLite's text comparison orders them.
fn utc(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_else(|_| t.to_owned())
}

async fn insert_pg(
    p: &PgPool,
    cdrs: &[Cdr],
    postbacks: &[Postback],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let col = |f: fn(&Cdr) -> String| cdrs.iter().map(f).collect::<Vec<String>>();
    let opt = |f: fn(&Cdr) -> Option<String>| cdrs.iter().map(f).collect::<Vec<Option<String>>>();
    let mut tx = p.begin().await?;
    sqlx::query(
        "INSERT INTO calls (id, node_id, carrier, campaign, caller, called, carrier_call_id, buyer_id, bid_cents, payout_cents, \
         billable, disposition, status, carrier_code, buyer_code, compliance, hangup_by, reason, created_at, answered_at, ended_at, \
         duration_ms, quality, revenue_cents, margin_cents, duplicate, fleet_caps, legs, stir, dtmf, recording) \
         SELECT * FROM UNNEST($1::text[]::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
         $9::int8[], $10::int8[], $11::bool[], $12::text[], $12::text[], $13::int4[], $14::int4[], $15::text[], $16::text[], $17::text[], \
         $18::text[]::timestamptz[], $19::text[]::timestamptz[], $20::text[]::timestamptz[], $21::int8[], $22::text[]::jsonb[], $23::int8[], $24::int8[], $25::text[], $26::text[], $27::text[]::jsonb[], $28::text[], $29::text[]::jsonb[], $30::text[]::jsonb[]) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(col(|c| c.id.clone()))
    .bind(col(|c| c.node_id.clone()))
    .bind(col(|c| c.carrier.clone()))
    .bind(col(|c| c.campaign.clone()))
    .bind(col(|c| c.caller.clone()))
    .bind(col(|c| c.called.clone()))
    .bind(col(|c| c.carrier_call_id.clone()))
    .bind(opt(|c| c.buyer_id.clone()))
    .bind(cdrs.iter().map(|c| i64::from(c.bid_cents)).collect::<Vec<i64>>())
    .bind(cdrs.iter().map(|c| i64::from(c.payout_cents)).collect::<Vec<i64>>())
    .bind(cdrs.iter().map(|c| c.billable).collect::<Vec<bool>>())
    .bind(col(|c| c.disposition.clone()))
    .bind(cdrs.iter().map(|c| i32::from(c.carrier_code)).collect::<Vec<i32>>())
    .bind(cdrs.iter().map(|c| c.buyer_code.map(i32::from)).collect::<Vec<Option<i32>>>())
    .bind(col(|c| c.compliance.clone()))
    .bind(opt(|c| c.hangup_by.clone()))
    .bind(col(|c| c.reason.clone()))
    .bind(col(|c| c.invite_at.clone()))
    .bind(opt(|c| c.answer_at.clone()))
    .bind(col(|c| c.end_at.clone()))
    .bind(cdrs.iter().map(|c| ms(c.duration_s)).collect::<Vec<i64>>())
    .bind(opt(|c| c.quality.as_ref().and_then(|q| serde_json::to_string(q).ok())))
    .bind(cdrs.iter().map(|c| i64::from(c.revenue_cents)).collect::<Vec<i64>>())
    .bind(cdrs.iter().map(|c| i64::from(c.margin_cents)).collect::<Vec<i64>>())
    .bind(opt(|c| c.duplicate.clone()))
    .bind(opt(|c| c.fleet_caps.clone()))
    .bind(opt(legs_json))
    .bind(opt(|c| c.stir.clone()))
    .bind(opt(dtmf_json))
    .bind(opt(recording_json))
    .execute(&mut *tx)
    .await?;
    let (mut ids, mut pos, mut buyers, mut amounts, mut outcomes) =
        (vec![], vec![], vec![], vec![], vec![]);
    for c in cdrs {
        for (i, b) in c.bids.iter().enumerate() {
            ids.push(c.id.clone());
            pos.push(i as i32);
            buyers.push(b.buyer_id.clone());
            amounts.push(i64::from(b.amount_cents));
            outcomes.push(b.outcome.clone());
        }
    }
    sqlx::query(
        "INSERT INTO bids (call_id, position, buyer_id, amount_cents, outcome) \
         SELECT * FROM UNNEST($1::text[]::uuid[], $2::int4[], $3::text[], $4::int8[], $5::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(pos)
    .bind(buyers)
    .bind(amounts)
    .bind(outcomes)
    .execute(&mut *tx)
    .await?;
    if cdrs.iter().any(|c| !c.pings.is_empty()) {
        let (mut ids, mut pos, mut buyers, mut lat, mut status, mut outcome, mut amount) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for c in cdrs {
            for (i, p) in c.pings.iter().enumerate() {
                ids.push(c.id.clone());
                pos.push(i as i32);
                buyers.push(p.buyer_id.clone());
                lat.push(i64::from(p.latency_ms));
                status.push(p.status.map(i32::from));
                outcome.push(p.outcome.clone());
                amount.push(p.amount_cents.map(i64::from));
            }
        }
        sqlx::query(
            "INSERT INTO pings (call_id, position, buyer_id, latency_ms, status, outcome, amount_cents) \
             SELECT * FROM UNNEST($1::text[]::uuid[], $2::int4[], $3::text[], $4::int8[], $5::int4[], $6::text[], $7::int8[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .bind(pos)
        .bind(buyers)
        .bind(lat)
        .bind(status)
        .bind(outcome)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
    }
    for pb in postbacks {
        sqlx::query(
            "INSERT INTO postbacks (id, call_id, target, event, url, body, created_ms, next_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&pb.id)
        .bind(&pb.call_id)
        .bind(&pb.target)
        .bind(pb.event.as_str())
        .bind(&pb.url)
        .bind(&pb.body)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A call's buyer legs as stored (`calls.legs`): NULL when no buyer answered.
fn legs_json(c: &Cdr) -> Option<String> {
    (!c.legs.is_empty())
        .then(|| serde_json::to_string(&c.legs).ok())
        .flatten()
}

/// The call's DTMF digits as JSON, when there were any.
fn dtmf_json(c: &Cdr) -> Option<String> {
    c.dtmf.as_ref().and_then(|d| serde_json::to_string(d).ok())
}

/// The call's recording as JSON, when one was asked for.
fn recording_json(c: &Cdr) -> Option<String> {
    c.recording
        .as_ref()
        .and_then(|r| serde_json::to_string(r).ok())
}

/// Rows per multi-row `INSERT` (31 parameters each: well under SQLite's 32,766).
const SQLITE_ROWS: usize = 100;

/// A batch in a few multi-row statements: each statement is one round trip to SQLite's worker
/// thread, where one statement per row cost two thread hand-offs per CDR. `OR IGNORE` on both
/// tables' keys makes a replay of stored calls (and of their bids) change nothing.
async fn insert_sqlite(
    p: &SqlitePool,
    cdrs: &[Cdr],
    postbacks: &[Postback],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = p.begin().await?;
    for chunk in cdrs.chunks(SQLITE_ROWS) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO calls (id, node_id, carrier, campaign, caller, called, carrier_call_id, buyer_id, bid_cents, \
             payout_cents, billable, disposition, status, carrier_code, buyer_code, compliance, hangup_by, reason, created_at, \
             answered_at, ended_at, duration_ms, quality, revenue_cents, margin_cents, duplicate, fleet_caps, legs, stir, dtmf, recording) ",
        );
        q.push_values(chunk, |mut b, c| {
            b.push_bind(&c.id)
                .push_bind(&c.node_id)
                .push_bind(&c.carrier)
                .push_bind(&c.campaign)
                .push_bind(&c.caller)
                .push_bind(&c.called)
                .push_bind(&c.carrier_call_id)
                .push_bind(&c.buyer_id)
                .push_bind(i64::from(c.bid_cents))
                .push_bind(i64::from(c.payout_cents))
                .push_bind(c.billable)
                .push_bind(&c.disposition)
                .push_bind(&c.disposition)
                .push_bind(i64::from(c.carrier_code))
                .push_bind(c.buyer_code.map(i64::from))
                .push_bind(&c.compliance)
                .push_bind(&c.hangup_by)
                .push_bind(&c.reason)
                .push_bind(utc(&c.invite_at))
                .push_bind(c.answer_at.as_deref().map(utc))
                .push_bind(utc(&c.end_at))
                .push_bind(ms(c.duration_s))
                .push_bind(
                    c.quality
                        .as_ref()
                        .and_then(|q| serde_json::to_string(q).ok()),
                )
                .push_bind(i64::from(c.revenue_cents))
                .push_bind(i64::from(c.margin_cents))
                .push_bind(&c.duplicate)
                .push_bind(&c.fleet_caps)
                .push_bind(legs_json(c))
                .push_bind(&c.stir)
                .push_bind(dtmf_json(c))
                .push_bind(recording_json(c));
        });
        // a full chunk's statement is reused; the odd-sized last one is not cached
        q.build()
            .persistent(chunk.len() == SQLITE_ROWS)
            .execute(&mut *tx)
            .await?;
    }
    let bids: Vec<(&str, i64, &crate::call::cdr::BidRecord)> = cdrs
        .iter()
        .flat_map(|c| {
            c.bids
                .iter()
                .enumerate()
                .map(move |(i, b)| (c.id.as_str(), i as i64, b))
        })
        .collect();
    for chunk in bids.chunks(SQLITE_ROWS * 4) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO bids (call_id, position, buyer_id, amount_cents, outcome) ",
        );
        q.push_values(chunk, |mut b, (id, pos, bid)| {
            b.push_bind(*id)
                .push_bind(*pos)
                .push_bind(&bid.buyer_id)
                .push_bind(i64::from(bid.amount_cents))
                .push_bind(&bid.outcome);
        });
        q.build()
            .persistent(chunk.len() == SQLITE_ROWS * 4)
            .execute(&mut *tx)
            .await?;
    }
    let pings: Vec<(&str, i64, &crate::call::cdr::PingRecord)> = cdrs
        .iter()
        .flat_map(|c| {
            c.pings
                .iter()
                .enumerate()
                .map(move |(i, p)| (c.id.as_str(), i as i64, p))
        })
        .collect();
    for chunk in pings.chunks(SQLITE_ROWS * 4) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO pings (call_id, position, buyer_id, latency_ms, status, outcome, amount_cents) ",
        );
        q.push_values(chunk, |mut b, (id, pos, p)| {
            b.push_bind(*id)
                .push_bind(*pos)
                .push_bind(&p.buyer_id)
                .push_bind(i64::from(p.latency_ms))
                .push_bind(p.status.map(i64::from))
                .push_bind(&p.outcome)
                .push_bind(p.amount_cents.map(i64::from));
        });
        q.build().persistent(false).execute(&mut *tx).await?;
    }
    for pb in postbacks {
        sqlx::query(
            "INSERT INTO postbacks (id, call_id, target, event, url, body, created_ms, next_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&pb.id)
        .bind(&pb.call_id)
        .bind(&pb.target)
        .bind(pb.event.as_str())
        .bind(&pb.url)
        .bind(&pb.body)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A postback due for delivery (`Db::due_postbacks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePostback {
    /// Its id (`Idempotency-Key`).
    pub id: String,
    /// `buyer:<id>` / `carrier:<id>`: whose secret signs it.
    pub target: String,
    /// Where.
    pub url: String,
    /// What.
    pub body: String,
    /// When it was written, Unix ms.
    pub created_ms: i64,
    /// Deliveries tried so far.
    pub attempts: i64,
}

fn due_row(s: &dyn Fn(&str) -> String, i: &dyn Fn(&str) -> i64) -> DuePostback {
    DuePostback {
        id: s("id"),
        target: s("target"),
        url: s("url"),
        body: s("body"),
        created_ms: i("created_ms"),
        attempts: i("attempts"),
    }
}

/// What came of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostbackResult {
    /// The receiver answered 2xx.
    Delivered {
        /// When, Unix ms.
        at_ms: i64,
    },
    /// It failed; try again then.
    Retry {
        /// Unix ms.
        next_ms: i64,
        /// What went wrong.
        error: String,
    },
    /// Given up (24 h of failures).
    Failed {
        /// When, Unix ms.
        at_ms: i64,
        /// The last error.
        error: String,
    },
}

/// A search of the outbox (`Db::postbacks`): each field narrows it.
#[derive(Debug, Clone, Default)]
pub struct PostbackQuery {
    /// `pending`, `delivered` or `failed`.
    pub state: Option<String>,
    /// One call's.
    pub call_id: Option<String>,
    /// `buyer:<id>` / `carrier:<id>`.
    pub target: Option<String>,
    /// At most this many rows.
    pub limit: i64,
}

/// A postback as `/v1/webhooks` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PostbackRow {
    /// `<call id>:<event>:<target>`.
    pub id: String,
    /// The call.
    pub call_id: String,
    /// `buyer:<id>` / `carrier:<id>`.
    pub target: String,
    /// `call.routed` …
    pub event: String,
    /// Where it goes.
    pub url: String,
    /// Written, Unix ms.
    pub created_ms: i64,
    /// Next try (pending) or when it ended, Unix ms.
    pub next_ms: i64,
    /// Deliveries tried.
    pub attempts: i64,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// The last failure.
    pub last_error: Option<String>,
    /// Delivered at, Unix ms.
    pub delivered_ms: Option<i64>,
}

/// Totals of one group of calls in a window (see [`Db::stats`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StatRow {
    /// Campaign.
    pub campaign: String,
    /// Winning buyer (none for calls nobody answered).
    pub buyer_id: Option<String>,
    /// Calls (every disposition).
    pub calls: i64,
    /// Calls refused before any buyer was rung (compliance, no buyer, overload…).
    pub rejected: i64,
    /// Calls a buyer answered.
    pub answered: i64,
    /// Answered calls that became billable.
    pub billable: i64,
    /// What the buyers paid, cents.
    pub revenue_cents: i64,
    /// What the publishers are paid, cents.
    pub payout_cents: i64,
    /// What the exchange kept, cents.
    pub margin_cents: i64,
    /// Talk time of answered calls, ms.
    pub talk_ms: i64,
}

impl Db {
    /// Calls created in `[from, to)` grouped by campaign and winning buyer.
    pub async fn stats(&self, from: &str, to: &str) -> Result<Vec<StatRow>, sqlx::Error> {
        const COLS: &str = "SELECT campaign, buyer_id, COUNT(*) AS calls, \
            CAST(SUM(CASE WHEN disposition = 'rejected' THEN 1 ELSE 0 END) AS BIGINT) AS rejected, \
            CAST(SUM(CASE WHEN disposition = 'answered' THEN 1 ELSE 0 END) AS BIGINT) AS answered, \
            CAST(SUM(CASE WHEN billable THEN 1 ELSE 0 END) AS BIGINT) AS billable, \
            CAST(SUM(revenue_cents) AS BIGINT) AS revenue, \
            CAST(SUM(payout_cents) AS BIGINT) AS payout, \
            CAST(SUM(margin_cents) AS BIGINT) AS margin, \
            CAST(SUM(CASE WHEN disposition = 'answered' THEN duration_ms ELSE 0 END) AS BIGINT) AS talk_ms \
            FROM calls ";
        const GROUP: &str = " GROUP BY campaign, buyer_id ORDER BY campaign, buyer_id";
        // One query on either pool: only the placeholders differ.
        macro_rules! grouped {
            ($pool:expr, $window:expr) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{COLS}WHERE {}{GROUP}",
                    $window
                )))
                .bind(utc(from))
                .bind(utc(to))
                .fetch_all($pool)
                .await?
                .into_iter()
                .map(|r| StatRow {
                    campaign: r.get("campaign"),
                    buyer_id: r.get("buyer_id"),
                    calls: r.get("calls"),
                    rejected: r.get("rejected"),
                    answered: r.get("answered"),
                    billable: r.get("billable"),
                    revenue_cents: r.get("revenue"),
                    payout_cents: r.get("payout"),
                    margin_cents: r.get("margin"),
                    talk_ms: r.get("talk_ms"),
                })
                .collect()
            };
        }
        Ok(match self {
            Db::Pg(p) => grouped!(
                p,
                "created_at >= $1::text::timestamptz AND created_at < $2::text::timestamptz"
            ),
            Db::Sqlite(p) => grouped!(p, "created_at >= ?1 AND created_at < ?2"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before the money columns existed keeps what its buyers paid: the
    /// old `payout_cents` (what the buyer paid, with no publisher margin) becomes the revenue,
    /// the payout stays, the margin is 0.
    #[tokio::test]
    async fn the_money_step_keeps_old_rows_revenue() {
        let path = std::env::temp_dir().join(format!("dce-money-{}.db", crate::ids::uuid()));
        let db = Db::connect(&format!("sqlite://{}", path.display())).unwrap();
        let Db::Sqlite(pool) = &db else {
            unreachable!()
        };
        migrator(&SQLITE_STEPS[..2]).run(pool).await.unwrap();
        sqlx::query(
            "INSERT INTO calls (id, node_id, carrier, campaign, caller, called, carrier_call_id, buyer_id, bid_cents, \
             payout_cents, billable, disposition, status, carrier_code, compliance, reason, created_at, ended_at, duration_ms) \
             VALUES ('old', 'n', 'c', 'auto', '1', '2', 'x', 'bravo', 1200, 1200, 1, 'answered', 'answered', 200, 'pass', \
             'bye', '2026-07-15T16:00:00.000Z', '2026-07-15T16:01:00.000Z', 60000)",
        )
        .execute(pool)
        .await
        .unwrap();
        db.migrate().await.unwrap();
        db.migrate().await.unwrap();
        let rows = db
            .export("2026-07-15T00:00:00Z", "2026-07-16T00:00:00Z")
            .await
            .unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.bid_cents, r.revenue_cents, r.payout_cents, r.margin_cents))
                .collect::<Vec<_>>(),
            [(1200, 1200, 1200, 0)]
        );
        let mut dup = Cdr::synthetic(1);
        dup.duplicate = Some("campaign:not_billable".into());
        db.insert(&[dup]).await.unwrap();
        assert_eq!(db.count_calls().await.unwrap(), 2);
        // what the duplicate rules restore at start (the old row has no bids: never rung)
        let t = chrono::DateTime::parse_from_rfc3339("2026-07-15T16:00:00Z")
            .unwrap()
            .timestamp();
        let h = db.dup_history(t - 1).await.unwrap();
        let mut got: Vec<_> = h
            .iter()
            .map(|r| {
                (
                    r.at_s,
                    r.routed_to.as_deref(),
                    r.connected_to.as_deref(),
                    r.billable,
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (t, None, Some("bravo"), true),
                (t, Some("acme"), Some("bravo"), true)
            ]
        );
        assert!(db.dup_history(t + 1).await.unwrap().is_empty());
        let stored: Option<String> =
            sqlx::query_scalar("SELECT duplicate FROM calls WHERE id <> 'old'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(stored.as_deref(), Some("campaign:not_billable"));
        pool.close().await;
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
    }
}

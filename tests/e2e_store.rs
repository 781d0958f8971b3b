//! CDRs in the database, end to end: a SIPp run through the real binary leaves exactly one
//! `calls` row per call with its `bids` rows, in PostgreSQL (a database created for the test
//! and dropped after) and in the embedded SQLite default; with the database away the CDRs wait
//! in the spool and are replayed, exactly once, when it is back; `dce migrate` and
//! `dce cdr export` work on what was written.

mod support;

use sqlx::Row;
use std::path::Path;
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An admin connection to the local PostgreSQL, or `None` (after saying so) outside CI.
fn pg_admin(rt: &tokio::runtime::Runtime) -> Option<sqlx::PgPool> {
    match rt.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(PG_ADMIN),
    ) {
        Ok(p) => Some(p),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL at {PG_ADMIN} is required under CI=true: {e}");
            }
            eprintln!("NOT RUN: PostgreSQL unreachable at {PG_ADMIN}: {e}");
            None
        }
    }
}

fn config(port: u16, dir: &Path, database_url: &str, acme: u16, bravo: u16) -> String {
    format!(
        "[node]\nid = \"store\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\ndatabase_url = \"{database_url}\"\nspool_dir = \"{}\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\npublisher_margin = 0.25\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 1500\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 1200\n",
        dir.join("spool").display()
    )
}

/// `n` calls: acme answers 486, bravo takes each one.
fn run_calls(bin: &std::path::PathBuf, dce: &Dce, acme: u16, bravo: u16, n: u32) {
    let m = n.to_string();
    let a = Background::start(
        bin,
        &sipp::args(&sipp::scenario("uas_busy.xml"), acme, &["-m", &m]),
    );
    let b = Background::start(
        bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", &m]),
    );
    let mut args = sipp::args(
        &sipp::scenario("uac_call.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", &m, "-r", "10", "-d", "200"],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(bin, &args);
    assert!(
        out.status.success(),
        "carrier: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(a.finish(20).0 && b.finish(20).0);
}

/// What the calls and bids tables hold, as (calls, bids, answered by bravo, bad bid outcomes).
async fn check_rows<'e, E>(db: E) -> (i64, i64, i64, i64)
where
    E: sqlx::Executor<'e> + Copy,
    E::Database: sqlx::Database,
    for<'r> i64: sqlx::Decode<'r, E::Database> + sqlx::Type<E::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<<E::Database as sqlx::Database>::Row>,
    for<'q> <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
{
    let calls: i64 = sqlx::query("SELECT count(*) AS n FROM calls")
        .fetch_one(db)
        .await
        .unwrap()
        .get("n");
    let bids: i64 = sqlx::query("SELECT count(*) AS n FROM bids")
        .fetch_one(db)
        .await
        .unwrap()
        .get("n");
    let bravo: i64 = sqlx::query(
        "SELECT count(*) AS n FROM calls WHERE disposition = 'answered' AND buyer_id = 'bravo' AND bid_cents = 1200 \
         AND revenue_cents = 1200 AND payout_cents = 900 AND margin_cents = 300 AND caller = '13105551234' AND called = '18005550100' AND quality IS NOT NULL",
    )
    .fetch_one(db)
    .await
    .unwrap()
    .get("n");
    let bad: i64 = sqlx::query(
        "SELECT count(*) AS n FROM calls c WHERE (SELECT count(*) FROM bids b WHERE b.call_id = c.id AND \
         ((b.buyer_id = 'acme' AND b.outcome = 'attempted:486' AND b.amount_cents = 1500) OR \
          (b.buyer_id = 'bravo' AND b.outcome = 'won' AND b.amount_cents = 1200))) <> 2",
    )
    .fetch_one(db)
    .await
    .unwrap()
    .get("n");
    (calls, bids, bravo, bad)
}

#[test]
fn postgresql_gets_one_row_per_call_with_its_bids() {
    let Some(bin) = sipp::sipp() else { return };
    let rt = rt();
    let Some(admin) = pg_admin(&rt) else { return };
    let name = format!("dce_test_{}_{}", std::process::id(), free_port());
    rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin),
    )
    .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let (acme, bravo) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, &url, acme, bravo));
    run_calls(&bin, &dce, acme, bravo, 20);
    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
    let (got, paged, stats) = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let r = check_rows(&pool).await;
        pool.close().await;
        // the API's keyset search on PostgreSQL: pages of 7, newest first, each call once
        let db = dce::store::Db::connect(&url).unwrap();
        let mut q = dce::store::CdrQuery {
            buyer: Some("bravo".into()),
            limit: 7,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = db.search(&q).await.unwrap();
            seen.extend(page.iter().map(|r| (r.created_at.clone(), r.id.clone())));
            match page.last() {
                Some(l) if page.len() == 7 => q.after = Some((l.created_at.clone(), l.id.clone())),
                _ => break,
            }
        }
        // GET /v1/stats's query: grouped by campaign and winner
        let stats = db
            .stats("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
            .await
            .unwrap();
        let none = db
            .stats("2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z")
            .await
            .unwrap();
        assert!(none.is_empty(), "{none:?}");
        // what the duplicate rules restore at start: acme rung first, bravo answered
        let history = db.dup_history(0).await.unwrap();
        assert_eq!(history.len(), 20);
        for h in &history {
            assert_eq!(
                (
                    h.routed_to.as_deref(),
                    h.connected_to.as_deref(),
                    h.caller.as_str()
                ),
                (Some("acme"), Some("bravo"), "13105551234"),
                "{h:?}"
            );
            assert!(h.at_s > 1_700_000_000, "{h:?}");
        }
        let later = db
            .dup_history(chrono::Utc::now().timestamp() + 60)
            .await
            .unwrap();
        assert!(later.is_empty(), "{later:?}");
        (r, seen, stats)
    });
    rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&admin),
    )
    .unwrap();
    assert_eq!(
        got,
        (20, 40, 20, 0),
        "calls, bids, answered by bravo, calls with wrong bids"
    );
    let mut sorted = paged.clone();
    sorted.sort();
    sorted.dedup();
    sorted.reverse();
    assert_eq!(paged.len(), 20, "{paged:?}");
    assert_eq!(paged, sorted, "newest first, no call twice");
    let calls: i64 = stats.iter().map(|r| r.calls).sum();
    let bravo = stats
        .iter()
        .find(|r| r.buyer_id.as_deref() == Some("bravo"))
        .expect("a row for bravo");
    assert_eq!(calls, 20, "{stats:?}");
    assert_eq!((bravo.answered, bravo.rejected), (20, 0), "{stats:?}");
    assert!(bravo.talk_ms > 0, "{stats:?}");
}

#[test]
fn sqlite_default_same_rows_and_migrate_and_export() {
    let Some(bin) = sipp::sipp() else { return };
    let (acme, bravo) = (free_port(), free_port());
    // the default database_url: sqlite://dce.db in the working directory (the test's temp dir)
    let dce = Dce::start_with(|port, dir| config(port, dir, "", acme, bravo));
    run_calls(&bin, &dce, acme, bravo, 10);
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let db = dir.0.join("dce.db");
    assert!(
        db.exists(),
        "the embedded database is in the working directory"
    );
    let rt = rt();
    let got = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let r = check_rows(&pool).await;
        pool.close().await;
        r
    });
    assert_eq!(got, (10, 20, 10, 0));

    let cfg = dir.0.join("dce.toml");
    let dce_bin = env!("CARGO_BIN_EXE_dce");
    let out = std::process::Command::new(dce_bin)
        .current_dir(&dir.0)
        .args(["migrate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate is idempotent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = |format: &str| {
        let out = std::process::Command::new(dce_bin)
            .current_dir(&dir.0)
            .args([
                "cdr",
                "export",
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01",
                "--format",
                format,
                "--config",
            ])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = export("csv");
    assert_eq!(csv.lines().count(), 11, "header + 10 calls:\n{csv}");
    assert!(csv.lines().nth(1).unwrap().contains(
        ",answered,carrier-a,auto,13105551234,18005550100,bravo,1200,1200,900,300,true,"
    ));
    assert!(csv.starts_with("id,created_at,disposition,carrier,campaign,caller,called,buyer_id,bid_cents,revenue_cents,payout_cents,margin_cents,billable,duration_ms\n"), "{csv}");
    let jsonl = export("jsonl");
    assert_eq!(jsonl.lines().count(), 10);
    let none = std::process::Command::new(dce_bin)
        .current_dir(&dir.0)
        .args([
            "cdr",
            "export",
            "--from",
            "2000-01-01",
            "--to",
            "2000-01-02",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&none.stdout).lines().count(),
        1,
        "only the header outside the range"
    );

    // GDPR: the caller's number disappears from every record, replaced by one stable pseudonym
    let out = std::process::Command::new(dce_bin)
        .current_dir(&dir.0)
        .args(["gdpr", "erase", "+1 310 555 1234", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("erased: 10 call record(s)"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GDPR erasure"),
        "the erasure is logged"
    );
    let csv = export("csv");
    assert!(!csv.contains("13105551234"));
    let pseudonyms: std::collections::HashSet<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap())
        .collect();
    assert_eq!(pseudonyms.len(), 1, "one caller's calls stay linkable");
    assert!(pseudonyms.iter().all(|p| p.starts_with("anon:")));

    // retention: calls older than the cutoff are anonymised (called numbers too)
    let changed = rt.block_on(async {
        let db = dce::store::Db::connect(&format!("sqlite://{}", db.display())).unwrap();
        db.anonymize_before(b"0123456789abcdef", "2100-01-01T00:00:00.000Z")
            .await
            .unwrap()
    });
    assert_eq!(changed, 10, "called numbers were still clear");
    assert!(!export("csv").contains("18005550100"));
}

/// Spool files (`cdr.spool*`) in `dir`; the lock, the key and the erasure list beside them
/// are not CDRs.
fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("cdr.spool"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn database_away_cdrs_spool_and_replay_exactly_once() {
    let Some(bin) = sipp::sipp() else { return };
    let rt = rt();
    let Some(admin) = pg_admin(&rt) else { return };
    // a database that does not exist yet: every write fails until the test creates it
    let name = format!("dce_spool_{}_{}", std::process::id(), free_port());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let (acme, bravo) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, &url, acme, bravo));
    run_calls(&bin, &dce, acme, bravo, 12);
    let spool = dce.dir().join("spool");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spool_files(&spool) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        spool_files(&spool) > 0,
        "CDRs are in the spool while the database is away"
    );
    // the database comes back
    rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin),
    )
    .unwrap();
    dce.wait_for_log("spool replayed", std::time::Duration::from_secs(15));
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let got = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let r = check_rows(&pool).await;
        pool.close().await;
        r
    });
    let left = spool_files(&dir.0.join("spool"));
    rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&admin),
    )
    .unwrap();
    assert_eq!(
        got,
        (12, 24, 12, 0),
        "every call exactly once, with its bids"
    );
    assert_eq!(left, 0, "the spool is empty after the replay");
}

#[test]
fn consent_comes_from_the_database_and_a_reload_refreshes_it() {
    let Some(bin) = sipp::sipp() else { return };
    let (acme, bravo) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        config(port, dir, "", acme, bravo).replace(
            "billable_after_s = 0\n",
            "billable_after_s = 0\nrequire_consent = true\n",
        )
    });
    // no consent yet: 603 CONSENT, no buyer rings
    let s = std::fs::read_to_string(sipp::scenario("uac_expect.xml")).unwrap().replace(
        "<recv response=\"EXPECTED_CODE\"/>",
        "<recv response=\"603\"><action><ereg regexp=\"text=.CONSENT.\" search_in=\"hdr\" header=\"Reason:\" check_it=\"true\" assign_to=\"r\"/></action></recv>\n  <Reference variables=\"r\"/>",
    );
    let p = dce.dir().join("expect_consent.xml");
    std::fs::write(&p, s).unwrap();
    let mut args = sipp::args(&p, free_port(), &["-s", "+18005550100", "-m", "1"]);
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    assert!(
        out.status.success(),
        "expected 603 CONSENT: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // consent is granted in the database; a reload picks it up
    let rt = rt();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dce.dir().join("dce.db").display())).await.unwrap();
        sqlx::query("INSERT INTO consent (number, campaign, granted_at, expires_at, source) VALUES ('3105551234', 'auto', '2020-01-01T00:00:00Z', NULL, 'web form')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    dce.signal("HUP");
    dce.wait_for_log(
        "consent loaded records=1",
        std::time::Duration::from_secs(5),
    );
    run_calls(&bin, &dce, acme, bravo, 1);
    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
}

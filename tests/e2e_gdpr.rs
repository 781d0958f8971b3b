//! GDPR erasure end to end, with the real binary and SIPp as carrier and buyer: an erasure
//! through the API while the number's CDRs are still being written (PostgreSQL held by a
//! trigger that waits on an advisory lock the test holds) leaves no copy anywhere with the
//! number in clear — database rows and bids, spool files, the JSON-lines file, the log — and
//! later CDRs, also those replayed from the spool after a restart, land anonymised. Without a
//! running node, `dce gdpr erase` covers the database, the spool and the JSON-lines file; with
//! one, it refuses (or goes through the API with a key).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce, TempDir};
use support::sipp::{self, Background};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";
const KEY: &str = "ops-secret";
/// The caller SIPp's scenarios send (`+13105551234`), in any form a copy could hold it.
const DIGITS: &str = "3105551234";
/// The trigger's advisory lock.
const HOLD: i64 = 4_242_001;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

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

/// DCE with its data (database file, spool, JSON lines) under `data`, which outlives it.
fn config(port: u16, data: &Path, database_url: &str, http: u16, buyer: u16) -> String {
    format!(
        "[node]\nid = \"gdpr\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\ndatabase_url = \"{database_url}\"\nspool_dir = \"{d}/spool\"\n\
         [cdr]\njsonl_path = \"{d}/cdr.jsonl\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 1500\n",
        d = data.display()
    )
}

/// `n` answered calls from +13105551234.
fn calls(bin: &PathBuf, dce: &Dce, buyer: u16, n: u32) {
    let m = n.to_string();
    let b = Background::start(
        bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), buyer, &["-m", &m]),
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
    assert!(b.finish(20).0);
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn jsonl_lines(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every file of the spool directory that holds the number in clear.
fn spool_files_with_number(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("spool"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    String::from_utf8_lossy(&bytes).contains(DIGITS)
                })
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A CDR of the number, as a node that died before the erasure left it in its spool.
fn late_cdr() -> dce::call::cdr::Cdr {
    dce::call::cdr::Cdr {
        id: "0badf00d-0000-4000-8000-00000000beef".into(),
        caller: "13105551234".into(),
        invite_at: chrono::Utc::now().to_rfc3339(),
        ..dce::call::cdr::Cdr::synthetic(1)
    }
}

#[test]
fn erasure_through_the_api_while_cdrs_are_written_reaches_every_copy() {
    let Some(bin) = sipp::sipp() else { return };
    let rt = rt();
    let Some(admin) = pg_admin(&rt) else { return };
    let name = format!("dce_gdpr_{}_{}", std::process::id(), free_port());
    rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin),
    )
    .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let data = TempDir::new("gdpr-data");
    let (http, buyer) = (free_port(), free_port());
    let dce = Dce::start_with(|port, _| config(port, &data.0, &url, http, buyer));

    // The test's own session holds an advisory lock; every INSERT into calls waits for it.
    let mut hold = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let t: Option<String> = sqlx::query_scalar("SELECT to_regclass('public.calls')::text")
                .fetch_one(&mut c)
                .await
                .unwrap();
            if t.is_some() {
                break;
            }
            assert!(Instant::now() < end, "DCE never migrated the database");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE FUNCTION dce_hold() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD}); RETURN NULL; END $$; \
             CREATE TRIGGER dce_hold BEFORE INSERT ON calls FOR EACH STATEMENT EXECUTE FUNCTION dce_hold();"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(HOLD)
            .execute(&mut c)
            .await
            .unwrap();
        c
    });

    // Five calls: their CDRs are in the JSON-lines file, and held on their way to the database.
    calls(&bin, &dce, buyer, 5);
    wait_until("5 CDRs in the JSON-lines file", 20, || {
        jsonl_lines(&data.0).len() == 5
    });
    assert!(jsonl_lines(&data.0).iter().all(|l| l.contains(DIGITS)));

    // The erasure, while they are held: it records the number at once, then waits for the
    // write in flight before changing the database.
    let post = std::thread::spawn(move || {
        support::http::request(
            http,
            "POST",
            "/v1/gdpr/erase",
            Some(KEY),
            r#"{"number": "+13105551234"}"#,
        )
    });
    wait_until("the erasure recorded", 20, || {
        data.0.join("spool/gdpr.erased").exists()
    });
    rt.block_on(async {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(HOLD)
            .execute(&mut hold)
            .await
            .unwrap();
    });
    let (code, body) = post.join().unwrap();
    assert_eq!(code, 200, "{body}");
    println!("erasure while held: {body}");
    let done: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pseudonym = done["pseudonym"].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("anon:"), "{body}");
    let list = std::fs::read_to_string(data.0.join("spool/gdpr.erased")).unwrap();
    assert_eq!(list.trim(), pseudonym, "the list holds the pseudonym only");

    // A later call from the erased number is anonymised on write.
    calls(&bin, &dce, buyer, 1);
    let db_count = |pattern: &str| -> i64 {
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(pattern.to_owned()))
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            n
        })
    };
    wait_until("6 calls in the database", 30, || {
        db_count("SELECT count(*) FROM calls") == 6
    });
    wait_until("6 CDRs in the JSON-lines file", 20, || {
        jsonl_lines(&data.0).len() == 6
    });
    let (ok, log1) = dce.stop();
    assert!(ok, "{log1}");

    // A spool file of the number in clear (left by a node that died before the erasure): the
    // next start replays it anonymised, because the list is on disk.
    dce::store::Spool::new(&data.0.join("spool"))
        .append(&[late_cdr()])
        .unwrap();
    let http = free_port();
    let dce = Dce::start_with(|port, _| config(port, &data.0, &url, http, buyer));
    wait_until("the late CDR replayed", 30, || {
        db_count("SELECT count(*) FROM calls") == 7
    });
    // Beside a running node the command line refuses without a key, and goes through the
    // API with one.
    let cfg = dce.dir().join("dce.toml");
    let cli = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dce"))
            .args(["gdpr", "erase", "+1 310 555 1234", "--config"])
            .arg(&cfg)
            .args(extra)
            .env_remove("DCE_API_KEY")
            .output()
            .unwrap()
    };
    let refused = cli(&[]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("POST /v1/gdpr/erase") && said.contains("Nothing was changed"),
        "{said}"
    );
    let through = cli(&["--api-key", KEY]);
    let said = String::from_utf8_lossy(&through.stdout);
    assert!(
        through.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&through.stderr)
    );
    assert!(said.contains("through the running node's API"), "{said}");
    assert!(said.contains(&pseudonym), "{said}");
    let (ok, log2) = dce.stop();
    assert!(ok, "{log2}");

    // Every copy, read back.
    let clear_calls = db_count(&format!(
        "SELECT count(*) FROM calls WHERE calls::text LIKE '%{DIGITS}%'"
    ));
    let clear_bids = db_count(&format!(
        "SELECT count(*) FROM bids WHERE bids::text LIKE '%{DIGITS}%'"
    ));
    let anon_calls = db_count(&format!(
        "SELECT count(*) FROM calls WHERE caller = '{pseudonym}'"
    ));
    let bids = db_count("SELECT count(*) FROM bids");
    let spool_hits = spool_files_with_number(&data.0);
    let lines = jsonl_lines(&data.0);
    rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&admin),
    )
    .unwrap();
    assert_eq!(clear_calls, 0, "no call row holds the number");
    assert_eq!(clear_bids, 0, "no bid row holds the number");
    assert_eq!(
        anon_calls, 7,
        "every call of the number, under its pseudonym"
    );
    assert!(bids >= 6, "the bids are there: {bids}");
    assert!(spool_hits.is_empty(), "{spool_hits:?}");
    assert_eq!(lines.len(), 6);
    for l in &lines {
        assert!(!l.contains(DIGITS), "{l}");
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["caller"], pseudonym.as_str(), "{l}");
        assert_eq!(v["called"], "18005550100", "the other number stays");
    }
    for log in [&log1, &log2] {
        assert!(
            !log.contains(DIGITS),
            "the log shows no number in clear:\n{log}"
        );
        assert!(log.contains("GDPR erasure done"), "{log}");
    }
}

#[test]
fn the_command_line_erases_database_spool_and_jsonl_file_when_no_node_runs() {
    let Some(bin) = sipp::sipp() else { return };
    let data = TempDir::new("gdpr-cli");
    let url = format!("sqlite://{}/dce.db", data.0.display());
    let (http, buyer) = (free_port(), free_port());
    let dce = Dce::start_with(|port, _| config(port, &data.0, &url, http, buyer));
    calls(&bin, &dce, buyer, 3);
    wait_until("3 CDRs in the JSON-lines file", 20, || {
        jsonl_lines(&data.0).len() == 3
    });
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    // a backlog waiting in the spool
    dce::store::Spool::new(&data.0.join("spool"))
        .append(&[late_cdr()])
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dce"))
        .args(["gdpr", "erase", "3105551234", "--config"])
        .arg(dir.0.join("dce.toml"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("erased: 3 call record(s)"), "{stdout}");
    assert!(stdout.contains("spool: 1 CDR(s)"), "{stdout}");
    assert!(stdout.contains("JSON lines: 3 line(s)"), "{stdout}");
    assert!(stderr.contains("GDPR erasure done"), "{stderr}");
    assert!(!stderr.contains(DIGITS), "{stderr}");

    let rows = rt().block_on(async {
        let db = dce::store::Db::connect(&url).unwrap();
        db.export("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
            .await
            .unwrap()
    });
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r.caller.starts_with("anon:")),
        "{rows:?}"
    );
    assert!(spool_files_with_number(&data.0).is_empty());
    let spooled = dce::store::Spool::new(&data.0.join("spool")).take();
    assert_eq!(spooled.iter().map(|b| b.cdrs.len()).sum::<usize>(), 1);
    assert!(spooled[0].cdrs[0].caller.starts_with("anon:"));
    let lines = jsonl_lines(&data.0);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| !l.contains(DIGITS)), "{lines:?}");
    // nor do the database's files: freed space is zeroed (secure_delete) and the write-ahead
    // log checkpointed
    for f in std::fs::read_dir(&data.0).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with("dce.db") {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(DIGITS),
                "{name} holds the number"
            );
        }
    }
}

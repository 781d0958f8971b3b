//! The outage test: a PostgreSQL instance of the test's own (initdb into a temp dir, its own
//! port) is stopped in the middle of a SIPp run of several hundred calls and started again;
//! afterwards every call has exactly one row. Then the same with DCE killed (`kill -9`) while
//! the database is away and started again: the spool it left is replayed exactly once. Then
//! `kill -9` in the middle of replaying a large spool: still exactly once.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce, TempDir};
use support::sipp::{self, Background};

/// A throwaway PostgreSQL cluster run as the `postgres` user.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    _tmp: TempDir,
}

impl Cluster {
    fn create() -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())?;
        let tmp = TempDir::new("pg");
        let dir = tmp.0.join("data");
        std::fs::create_dir_all(&dir).ok()?;
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&tmp.0)
            .status()
            .ok()?
            .success();
        let _ = Command::new("chmod").arg("755").arg(&tmp.0).status();
        if !owned {
            return None;
        }
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&dir)
            .output()
            .ok()?
            .status
            .success();
        ok.then(|| Cluster {
            bin,
            dir,
            port: free_port(),
            _tmp: tmp,
        })
    }

    fn ctl(&self, args: &[&str]) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn start(&self) {
        assert!(self.ctl(&["-w", "start"]), "pg_ctl start");
    }

    fn stop(&self) {
        assert!(self.ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn count(&self, sql: &str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            n
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl(&["-m", "immediate", "stop"]);
    }
}

fn cluster() -> Option<Cluster> {
    match Cluster::create() {
        Some(c) => Some(c),
        None => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot create a PostgreSQL cluster of the test's own (initdb as the postgres user)");
            }
            eprintln!("NOT RUN: cannot initdb a PostgreSQL cluster here (needs root and the postgres user)");
            None
        }
    }
}

fn config(port: u16, spool: &Path, url: &str, buyer: u16) -> String {
    format!(
        "[node]\nid = \"outage\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\ndatabase_url = \"{url}\"\nspool_dir = \"{}\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 1500\n",
        spool.display()
    )
}

fn wait_rows(pg: &Cluster, n: i64, secs: u64) -> i64 {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = pg.count("SELECT count(*) FROM calls");
        if got >= n || Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn postgres_stopped_mid_run_and_dce_killed_lose_nothing_and_duplicate_nothing() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(pg) = cluster() else { return };
    pg.start();
    let spool = TempDir::new("outage-spool");
    let bp = free_port();
    let url = pg.url();
    let dce = Dce::start_with(|port, _| config(port, &spool.0, &url, bp));

    // 300 calls at 30/s; the database goes away after 1 s and comes back 6 s later (longer than
    // the pool's 3 s connect timeout, so writes fail and go to the spool)
    let calls = 300;
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "300"]),
    );
    let mut args = sipp::args(
        &sipp::scenario("uac_call.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "300", "-r", "30", "-d", "100"],
    );
    args.push(dce.sip.to_string());
    let carrier = std::thread::spawn(move || sipp::run(&bin, &args));
    std::thread::sleep(Duration::from_secs(1));
    pg.stop();
    std::thread::sleep(Duration::from_secs(6));
    pg.start();
    let out = carrier.join().unwrap();
    assert!(
        out.status.success(),
        "carrier: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(buyer.finish(20).0);
    let got = wait_rows(&pg, calls, 20);
    let (ok, log) = dce.stop();
    assert!(ok);
    assert!(
        log.contains("spool replayed"),
        "the outage went through the spool:\n{log}"
    );
    assert_eq!(got, calls, "every call exactly once after the outage");
    assert_eq!(pg.count("SELECT count(*) FROM bids"), calls);

    // Now with DCE killed while the database is away: the spool survives and is replayed once
    // by the next DCE.
    let Some(bin) = sipp::sipp() else { return };
    pg.stop();
    let dce = Dce::start_with(|port, _| config(port, &spool.0, &url, bp));
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "40"]),
    );
    let mut args = sipp::args(
        &sipp::scenario("uac_call.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "40", "-r", "40", "-d", "100"],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    assert!(out.status.success());
    assert!(buyer.finish(20).0);
    // The node already knows the database is down (its start-up migration failed), so each
    // batch is spooled within the 100 ms linger; give it a second before the kill.
    std::thread::sleep(Duration::from_millis(1500));
    let killed_log = dce.log();
    drop(dce); // SIGKILL
    let spooled: Vec<_> = std::fs::read_dir(&spool.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cdr.spool"))
        .map(|e| e.path())
        .collect();
    assert!(
        !spooled.is_empty(),
        "the killed node left a spool:\n{killed_log}"
    );
    pg.start();
    let dce = Dce::start_with(|port, _| config(port, &spool.0, &url, bp));
    let got = wait_rows(&pg, calls + 40, 20);
    let (ok, log) = dce.stop();
    assert!(ok);

    assert_eq!(
        got,
        calls + 40,
        "the killed node's spool was replayed by the next one, exactly once:\n{log}"
    );
    assert_eq!(pg.count("SELECT count(*) FROM bids"), calls + 40);

    // And killed during replay: a large spool (100,000 CDRs, replayed in transactions of 500)
    // is part-way into the database when DCE is killed; the next DCE replays the file again and
    // the rows already in are skipped, so every CDR ends up exactly once.
    let before = calls + 40;
    let big = 100_000usize;
    let s = dce::store::Spool::new(&spool.0);
    let cdrs: Vec<dce::call::cdr::Cdr> = (0..big).map(dce::call::cdr::Cdr::synthetic).collect();
    for chunk in cdrs.chunks(10_000) {
        s.append(chunk).expect("spool append");
    }
    drop(cdrs);
    let dce = Dce::start_with(|port, _| config(port, &spool.0, &url, bp));
    let end = Instant::now() + Duration::from_secs(60);
    let mut at_kill = before;
    while Instant::now() < end {
        at_kill = pg.count("SELECT count(*) FROM calls");
        if at_kill >= before + 2_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(dce); // SIGKILL, mid-replay
    assert!(
        at_kill > before && at_kill < before + big as i64,
        "the kill came part-way through the replay ({at_kill} rows)"
    );
    let dce = Dce::start_with(|port, _| config(port, &spool.0, &url, bp));
    let got = wait_rows(&pg, before + big as i64, 60);
    let (ok, log) = dce.stop();
    assert!(ok);
    assert_eq!(
        got,
        before + big as i64,
        "replayed after the kill, exactly once:\n{log}"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM bids"),
        before + 3 * big as i64
    );
    assert!(
        std::fs::read_dir(&spool.0)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("cdr.spool")),
        "the spool is empty afterwards"
    );
}

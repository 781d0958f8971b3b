//! The fleet-wide caps' Redis side against a real Redis (issue #15, item 1): leases taken
//! atomically and given back, counts and budgets read in the buyer's period, a dead node's
//! leases expiring by themselves, the heartbeat counting nodes, and every key of one buyer
//! in one Cluster slot.

mod support;

use dce::call::lookup::{CapLimits, CapWrite, LeaseAnswer, LeaseAsk, LeaseResult};
use dce::call::{Answer, LookupId};
use dce::fleet::Caps;
use dce_routing::{Exclusion, Keys};
use std::time::Duration;
use support::redis_server::{clean, redis, REDIS};
use tokio::sync::mpsc;

const KEYS: Keys = Keys {
    hour: 17_800_000,
    day: 741_000,
    month: 24_312,
};

fn prefix(test: &str) -> String {
    format!("dce-test-fleet-{test}-{}", std::process::id())
}

async fn manager() -> redis::aio::ConnectionManager {
    redis::Client::open(REDIS)
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap()
}

fn ask(member: &str, limits: CapLimits, bid_cents: u32) -> LeaseAsk {
    LeaseAsk {
        member: member.into(),
        buyer: "acme".into(),
        limits,
        keys: KEYS,
        bid_cents,
    }
}

async fn take(caps: &Caps, a: LeaseAsk) -> LeaseAnswer {
    let (tx, mut rx) = mpsc::unbounded_channel();
    caps.take(a, LookupId(1), tx);
    let (_, answer, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an answer within 5 s")
        .unwrap();
    match answer {
        Answer::Lease(l) => l,
        other => panic!("{other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn leases_are_taken_up_to_the_cap_and_given_back() {
    let Some(mut con) = redis() else { return };
    let p = prefix("leases");
    rt().block_on(async {
        let caps = Caps::start(Some(manager().await), &p, Duration::from_secs(15), "n1");
        let two = CapLimits {
            concurrent: 2,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, ask("c1:0", two, 100)).await.result,
            LeaseResult::Granted
        );
        assert_eq!(
            take(&caps, ask("c2:0", two, 100)).await.result,
            LeaseResult::Granted
        );
        assert_eq!(
            take(&caps, ask("c3:0", two, 100)).await.result,
            LeaseResult::Full(Exclusion::Concurrency)
        );
        // asking again for a lease one holds is not a second slot
        assert_eq!(
            take(&caps, ask("c2:0", two, 100)).await.result,
            LeaseResult::Granted
        );
        caps.write(CapWrite::Release {
            member: "c1:0".into(),
            buyer: "acme".into(),
        });
        let a = take(&caps, ask("c3:0", two, 100)).await;
        assert_eq!(a.result, LeaseResult::Granted);
        // the heartbeat ran at start: one node
        assert_eq!(a.nodes, 1);
    });
    let slots: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{p}:cap:{{acme}}:slots"))
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(slots, ["c2:0", "c3:0"]);
    clean(&mut con, &p);
}

#[test]
fn answered_counts_and_spend_are_read_in_the_buyers_period() {
    let Some(mut con) = redis() else { return };
    let p = prefix("counts");
    rt().block_on(async {
        let caps = Caps::start(Some(manager().await), &p, Duration::from_secs(15), "n1");
        let count = |calls, cents| CapWrite::Count {
            buyer: "acme".into(),
            keys: KEYS,
            calls,
            cents,
        };
        caps.write(count(1, 1500));
        caps.write(count(1, 1500));
        let caps_of = |limits: CapLimits| ask("x:0", limits, 1500);
        let daily = CapLimits {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, caps_of(daily)).await.result,
            LeaseResult::Full(Exclusion::DailyCap)
        );
        let hourly = CapLimits {
            hourly: 3,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, caps_of(hourly)).await.result,
            LeaseResult::Granted
        );
        let monthly = CapLimits {
            monthly: 2,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, caps_of(monthly)).await.result,
            LeaseResult::Full(Exclusion::MonthlyCap)
        );
        // 3000 spent: a 1500 bid fits a 4500 budget, not a 4000 one
        let budget = |cents| CapLimits {
            daily_budget: cents,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, caps_of(budget(4500))).await.result,
            LeaseResult::Granted
        );
        assert_eq!(
            take(&caps, caps_of(budget(4000))).await.result,
            LeaseResult::Full(Exclusion::Budget)
        );
        // a refund gives the bid back to the day and the month
        caps.write(count(0, -1500));
        assert_eq!(
            take(&caps, caps_of(budget(4000))).await.result,
            LeaseResult::Granted
        );
        let monthly_budget = CapLimits {
            monthly_budget: 2000,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, caps_of(monthly_budget)).await.result,
            LeaseResult::Full(Exclusion::MonthlyBudget)
        );
    });
    // the hour's count expires after the hour (with room for the buyer's zone)
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{p}:cap:{{acme}}:h:{}", KEYS.hour))
        .query(&mut con)
        .unwrap();
    assert!((3000..=3 * 3600).contains(&ttl), "{ttl}");
    clean(&mut con, &p);
}

/// A node that stops renewing (it died) loses its leases within the lease time; one that
/// lives keeps them however long its calls last.
#[test]
fn a_dead_nodes_leases_expire_and_a_live_nodes_are_renewed() {
    let Some(mut con) = redis() else { return };
    let p = prefix("expiry");
    rt().block_on(async {
        let one = CapLimits {
            concurrent: 1,
            ..Default::default()
        };
        let lease = Duration::from_secs(3);
        let live = Caps::start(Some(manager().await), &p, lease, "live");
        assert_eq!(
            take(&live, ask("kept:0", one, 0)).await.result,
            LeaseResult::Granted
        );
        let other = CapLimits {
            concurrent: 1,
            ..Default::default()
        };
        let dying = Caps::start(Some(manager().await), &p, lease, "dying");
        let mut gone = ask("gone:0", other, 0);
        gone.buyer = "bravo".into();
        assert_eq!(
            take(&dying, gone.clone()).await.result,
            LeaseResult::Granted
        );
        // the live node's next heartbeat sees both
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let a = take(&live, ask("kept:0", one, 0)).await;
        assert_eq!(a.nodes, 2, "both heartbeats seen");
        drop(dying); // its task ends: no more renewals, as when the process is killed
        let mut next = gone.clone();
        next.member = "next:0".into();
        assert_eq!(
            take(&live, next.clone()).await.result,
            LeaseResult::Full(Exclusion::Concurrency)
        );
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        assert_eq!(
            take(&live, next).await.result,
            LeaseResult::Granted,
            "freed"
        );
        // renewed all along: still held past two lease times
        let mut rival = ask("rival:0", one, 0);
        rival.member = "rival:0".into();
        assert_eq!(
            take(&live, rival).await.result,
            LeaseResult::Full(Exclusion::Concurrency)
        );
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let a = take(&live, ask("late:0", one, 0)).await;
        assert_eq!(a.result, LeaseResult::Full(Exclusion::Concurrency));
        assert_eq!(a.nodes, 1, "the dead node's heartbeat expired");
    });
    clean(&mut con, &p);
}

/// Redis away: a lease fails at once, a count is kept and sent when Redis answers again, and
/// a slot held on this node's share reaches Redis with the next renewal.
#[test]
fn writes_made_while_redis_is_away_reach_it_when_it_returns() {
    let Some(mut con) = redis() else { return };
    let p = prefix("away");
    // a Redis of our own on a free port, stopped and started again
    let port = support::dce_process::free_port();
    let dir = support::dce_process::TempDir::new("fleet-redis");
    let start = || {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&dir.0)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let mut server = start();
    let wait_up = |url: &str| {
        for _ in 0..100 {
            if let Ok(mut c) = redis::Client::open(url).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return c;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {url} did not start");
    };
    drop(wait_up(&url));
    rt().block_on(async {
        let m = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let caps = Caps::start(Some(m), &p, Duration::from_secs(3), "n1");
        let one = CapLimits {
            concurrent: 1,
            ..Default::default()
        };
        assert_eq!(
            take(&caps, ask("a:0", one, 0)).await.result,
            LeaseResult::Granted
        );
        server.kill().unwrap();
        server.wait().unwrap();
        match take(&caps, ask("b:0", one, 0)).await.result {
            LeaseResult::Error(_) => {}
            other => panic!("{other:?}"),
        }
        caps.write(CapWrite::HoldLocal {
            member: "b:0".into(),
            buyer: "acme".into(),
        });
        caps.write(CapWrite::Count {
            buyer: "acme".into(),
            keys: KEYS,
            calls: 1,
            cents: 700,
        });
        // a lease asked while the writes wait pushes them at Redis once more (still away)
        let _ = take(&caps, ask("c:0", one, 0)).await;
        server = start();
        drop(wait_up(&url));
        // the next renewal (a third of the lease) sends them
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    });
    let mut own = wait_up(&url);
    let spent: Option<i64> = redis::cmd("GET")
        .arg(format!("{p}:cap:{{acme}}:sd:{}", KEYS.day))
        .query(&mut own)
        .unwrap();
    assert_eq!(spent, Some(700), "the count made while Redis was away");
    let slots: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{p}:cap:{{acme}}:slots"))
        .arg(0)
        .arg(-1)
        .query(&mut own)
        .unwrap();
    // a:0 (granted before, lost with the restarted Redis's memory) and b:0 (held locally)
    // are both renewed back into it
    assert_eq!(slots, ["a:0", "b:0"]);
    let _ = server.kill();
    let _ = server.wait();
    clean(&mut con, &p);
}

/// One script's keys share a Cluster slot: every key of a buyer carries the hash tag.
#[test]
fn every_key_of_a_buyer_has_its_hash_tag() {
    let Some(mut con) = redis() else { return };
    let p = prefix("tags");
    rt().block_on(async {
        let caps = Caps::start(Some(manager().await), &p, Duration::from_secs(15), "n1");
        let all = CapLimits {
            concurrent: 1,
            hourly: 9,
            daily: 9,
            monthly: 9,
            daily_budget: 9_000,
            monthly_budget: 9_000,
        };
        assert_eq!(
            take(&caps, ask("t:0", all, 10)).await.result,
            LeaseResult::Granted
        );
        caps.write(CapWrite::Count {
            buyer: "acme".into(),
            keys: KEYS,
            calls: 1,
            cents: 10,
        });
        let _ = take(&caps, ask("t:0", all, 10)).await;
    });
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:cap:*"))
        .query(&mut con)
        .unwrap();
    assert_eq!(keys.len(), 6, "{keys:?}");
    let mut slot = |k: &str| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query(&mut con)
            .unwrap_or_else(|_| {
                // CLUSTER KEYSLOT needs cluster mode on some servers: check the tag instead
                assert!(k.contains("{acme}"), "{k}");
                0
            })
    };
    let slots: std::collections::BTreeSet<i64> = keys.iter().map(|k| slot(k)).collect();
    assert_eq!(slots.len(), 1, "{keys:?}");
    clean(&mut con, &p);
}

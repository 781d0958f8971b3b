//! What the fleet-wide state must do on any Redis, a single server or a Cluster: the buyer
//! caps' leases, counts and budgets, a dead node's leases expiring, one buyer's keys in one
//! slot, one batch mixing buyers of different nodes, and the fleet-wide compliance check.
//! `tests/fleet_redis.rs` runs it on the shared Redis, `tests/fleet_cluster.rs` on a
//! Cluster of its own. Included by those two with `#[path]` (not in `support/mod.rs`, which
//! every test binary compiles).
#![allow(dead_code)]

use crate::support::redis_cluster::RedisCluster;
use dce::call::lookup::{
    CapLimits, CapWrite, DupCheck, DupWrite, LeaseAnswer, LeaseAsk, LeaseResult,
};
use dce::call::{Answer, LookupId, RemoteCheck, RemoteResult};
use dce::fleet::Caps;
use dce::redis_conn::{RedisConn, RedisTarget};
use dce::shared::Shared;
use dce_routing::{DupStage, Exclusion, Keys};
use redis::ConnectionLike;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

pub const KEYS: Keys = Keys {
    hour: 17_800_000,
    day: 741_000,
    month: 24_312,
};

/// A Redis to run the contract on, with a blocking connection to look at what it holds.
pub enum Backend {
    /// The shared single server.
    Single(String, redis::Connection),
    /// A Cluster of the test's own (`cluster-aware connection`).
    Cluster(Box<(RedisCluster, redis::cluster::ClusterConnection)>),
}

impl Backend {
    /// The shared server, or `None` (NOT RUN) when it is away outside CI.
    pub fn single() -> Option<Backend> {
        let con = crate::support::redis_server::redis()?;
        Some(Backend::Single(
            crate::support::redis_server::REDIS.into(),
            con,
        ))
    }

    /// A Cluster of three masters, or `None` (NOT RUN) without redis-server outside CI.
    pub fn cluster(test: &str) -> Option<Backend> {
        let c = RedisCluster::start(test)?;
        let con = c.connection();
        Some(Backend::Cluster(Box::new((c, con))))
    }

    pub fn target(&self) -> RedisTarget {
        match self {
            Backend::Single(url, _) => RedisTarget::Single(url.clone()),
            Backend::Cluster(b) => RedisTarget::Cluster(b.0.seeds()),
        }
    }

    /// An async connection as `dce` makes it.
    pub async fn conn(&self) -> RedisConn {
        RedisConn::connect(&self.target(), Duration::from_secs(5))
            .await
            .expect("connect")
    }

    /// The blocking connection (a Cluster's routes each command by its key).
    pub fn admin(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Backend::Single(_, c) => c,
            Backend::Cluster(b) => &mut b.1,
        }
    }

    /// Keys matching `pattern` (on every node of a Cluster).
    pub fn keys(&mut self, pattern: &str) -> Vec<String> {
        match self {
            Backend::Single(_, c) => {
                let mut k: Vec<String> = redis::cmd("KEYS").arg(pattern).query(c).unwrap();
                k.sort();
                k
            }
            Backend::Cluster(b) => b.0.keys(pattern),
        }
    }

    /// The master port holding `key` (`None` on a single server).
    pub fn node_of(&self, key: &str) -> Option<u16> {
        match self {
            Backend::Single(..) => None,
            Backend::Cluster(b) => Some(b.0.port_of(key)),
        }
    }

    /// Remove every key under `prefix`.
    pub fn clean(&mut self, prefix: &str) {
        match self {
            Backend::Single(_, c) => crate::support::redis_server::clean(c, prefix),
            Backend::Cluster(b) => b.0.clean(prefix),
        }
    }

    fn zrange(&mut self, key: &str) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(self.admin())
            .unwrap()
    }

    fn get(&mut self, key: &str) -> Option<i64> {
        redis::cmd("GET").arg(key).query(self.admin()).unwrap()
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn ask(member: &str, limits: CapLimits, bid_cents: u32) -> LeaseAsk {
    LeaseAsk {
        member: member.into(),
        buyer: "acme".into(),
        limits,
        keys: KEYS,
        bid_cents,
    }
}

pub async fn take(caps: &Caps, a: LeaseAsk) -> LeaseAnswer {
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

fn concurrent(n: u32) -> CapLimits {
    CapLimits {
        concurrent: n,
        ..Default::default()
    }
}

/// Leases taken up to the cap and given back.
pub fn leases_are_taken_up_to_the_cap_and_given_back(b: &mut Backend, p: &str) {
    rt().block_on(async {
        let caps = Caps::start(Some(b.conn().await), p, Duration::from_secs(15), "n1");
        let two = concurrent(2);
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
    assert_eq!(
        b.zrange(&format!("{p}:cap:{{acme}}:slots")),
        ["c2:0", "c3:0"]
    );
    b.clean(p);
}

/// Answered counts and spend read in the buyer's hour, day and month.
pub fn answered_counts_and_spend_are_read_in_the_buyers_period(b: &mut Backend, p: &str) {
    rt().block_on(async {
        let caps = Caps::start(Some(b.conn().await), p, Duration::from_secs(15), "n1");
        let count = |calls, cents| CapWrite::Count {
            buyer: "acme".into(),
            keys: KEYS,
            calls,
            cents,
        };
        caps.write(count(1, 1500));
        caps.write(count(1, 1500));
        let caps_of = |limits: CapLimits| ask("x:0", limits, 1500);
        let limits = |f: fn(&mut CapLimits)| {
            let mut l = CapLimits::default();
            f(&mut l);
            l
        };
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.daily = 2))).await.result,
            LeaseResult::Full(Exclusion::DailyCap)
        );
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.hourly = 3))).await.result,
            LeaseResult::Granted
        );
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.monthly = 2))).await.result,
            LeaseResult::Full(Exclusion::MonthlyCap)
        );
        // 3000 spent: a 1500 bid fits a 4500 budget, not a 4000 one
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.daily_budget = 4500)))
                .await
                .result,
            LeaseResult::Granted
        );
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.daily_budget = 4000)))
                .await
                .result,
            LeaseResult::Full(Exclusion::Budget)
        );
        // a refund gives the bid back to the day and the month
        caps.write(count(0, -1500));
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.daily_budget = 4000)))
                .await
                .result,
            LeaseResult::Granted
        );
        assert_eq!(
            take(&caps, caps_of(limits(|l| l.monthly_budget = 2000)))
                .await
                .result,
            LeaseResult::Full(Exclusion::MonthlyBudget)
        );
    });
    // the hour's count expires after the hour (with room for the buyer's zone)
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{p}:cap:{{acme}}:h:{}", KEYS.hour))
        .query(b.admin())
        .unwrap();
    assert!((3000..=3 * 3600).contains(&ttl), "{ttl}");
    b.clean(p);
}

/// A node that stops renewing (it died) loses its leases within the lease time; one that
/// lives keeps them however long its calls last.
pub fn a_dead_nodes_leases_expire_and_a_live_nodes_are_renewed(b: &mut Backend, p: &str) {
    rt().block_on(async {
        let one = concurrent(1);
        let lease = Duration::from_secs(3);
        let live = Caps::start(Some(b.conn().await), p, lease, "live");
        assert_eq!(
            take(&live, ask("kept:0", one, 0)).await.result,
            LeaseResult::Granted
        );
        let dying = Caps::start(Some(b.conn().await), p, lease, "dying");
        let mut gone = ask("gone:0", one, 0);
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
        assert_eq!(
            take(&live, ask("rival:0", one, 0)).await.result,
            LeaseResult::Full(Exclusion::Concurrency)
        );
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let a = take(&live, ask("late:0", one, 0)).await;
        assert_eq!(a.result, LeaseResult::Full(Exclusion::Concurrency));
        assert_eq!(a.nodes, 1, "the dead node's heartbeat expired");
    });
    b.clean(p);
}

/// One script's keys share a Cluster slot: every key of a buyer carries the hash tag.
pub fn every_key_of_a_buyer_has_its_hash_tag(b: &mut Backend, p: &str) {
    rt().block_on(async {
        let caps = Caps::start(Some(b.conn().await), p, Duration::from_secs(15), "n1");
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
    let keys = b.keys(&format!("{p}:cap:*"));
    assert_eq!(keys.len(), 6, "{keys:?}");
    let mut slots = std::collections::BTreeSet::new();
    for k in &keys {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query(b.admin())
            .unwrap_or_else(|_| {
                // CLUSTER KEYSLOT needs cluster mode on some servers: check the tag instead
                assert!(matches!(b, Backend::Single(..)), "a Cluster knows KEYSLOT");
                assert!(k.contains("{acme}"), "{k}");
                0
            });
        slots.insert(slot);
    }
    assert_eq!(slots.len(), 1, "{keys:?}");
    b.clean(p);
}

/// One batch (everything queued before the caps task wakes) mixes buyers whose keys are on
/// different nodes of a Cluster: each buyer's takes, counts and releases are applied in the
/// order queued, and each lease gets its own answer.
pub fn one_batch_of_buyers_on_different_nodes_keeps_each_buyers_order(b: &mut Backend, p: &str) {
    // three buyers on three different nodes (on a single server: any three)
    let mut buyers: Vec<String> = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..1000 {
        let name = format!("buyer-{i}");
        let node = b.node_of(&format!("{p}:cap:{{{name}}}:slots"));
        if node.is_none() || !nodes.contains(&node) {
            nodes.push(node);
            buyers.push(name);
        }
        if buyers.len() == 3 {
            break;
        }
    }
    assert_eq!(buyers.len(), 3, "{nodes:?}");
    let answers = rt().block_on(async {
        let caps = Caps::start(Some(b.conn().await), p, Duration::from_secs(15), "n1");
        // the heartbeat's batch first, so what follows is one batch of its own
        let _ = take(&caps, ask("warm:0", CapLimits::default(), 0)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut id = 0;
        let mut asked = HashMap::new();
        for buyer in &buyers {
            let mut take = |member: &str| {
                id += 1;
                let mut a = ask(member, concurrent(1), 100);
                a.buyer = buyer.clone();
                caps.take(a, LookupId(id), tx.clone());
                asked.insert(id, (buyer.clone(), member.to_owned()));
            };
            take("first:0");
            take("second:0"); // full: the first holds the only slot
            caps.write(CapWrite::Release {
                member: "first:0".into(),
                buyer: buyer.clone(),
            });
            caps.write(CapWrite::Count {
                buyer: buyer.clone(),
                keys: KEYS,
                calls: 1,
                cents: 100,
            });
            let mut take = |member: &str| {
                id += 1;
                let mut a = ask(member, concurrent(1), 100);
                a.buyer = buyer.clone();
                caps.take(a, LookupId(id), tx.clone());
                asked.insert(id, (buyer.clone(), member.to_owned()));
            };
            take("second:0"); // granted: the release went first
        }
        let mut answers = Vec::new();
        for _ in 0..id {
            let (id, answer, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an answer within 5 s")
                .unwrap();
            let Answer::Lease(l) = answer else {
                panic!("{answer:?}")
            };
            answers.push((id.0, asked[&id.0].clone(), l.result));
        }
        answers.sort_by_key(|(id, ..)| *id);
        answers
    });
    for (i, buyer) in buyers.iter().enumerate() {
        let of: Vec<&LeaseResult> = answers
            .iter()
            .filter(|(_, (b, _), _)| b == buyer)
            .map(|(.., r)| r)
            .collect();
        assert_eq!(
            of,
            [
                &LeaseResult::Granted,
                &LeaseResult::Full(Exclusion::Concurrency),
                &LeaseResult::Granted
            ],
            "{buyer} (node {:?}): {answers:?}",
            nodes[i]
        );
        assert_eq!(
            b.zrange(&format!("{p}:cap:{{{buyer}}}:slots")),
            ["second:0"]
        );
        assert_eq!(
            b.get(&format!("{p}:cap:{{{buyer}}}:d:{}", KEYS.day)),
            Some(1)
        );
        assert_eq!(
            b.get(&format!("{p}:cap:{{{buyer}}}:sm:{}", KEYS.month)),
            Some(100)
        );
    }
    b.clean(p);
}

fn remote(caller: &str, check_dnc: bool, max: u32) -> RemoteCheck {
    RemoteCheck {
        caller: caller.into(),
        campaign: "auto".into(),
        check_dnc,
        max_calls_per_day: max,
    }
}

/// The fleet-wide compliance check: the shared DNC refuses a listed caller without counting
/// it, the frequency counter counts the others, EVALSHA survives a script cache flushed
/// everywhere, callers of any shape are counted, and the duplicate rules' records are read
/// back.
pub fn fleet_wide_compliance(b: &mut Backend, p: &str) {
    let flush = |b: &Backend| {
        if let Backend::Cluster(cl) = b {
            let c = &cl.0;
            c.flush_scripts()
        }
    };
    rt().block_on(async {
        let s = Shared::with(Some(b.conn().await), p, Duration::from_secs(2));
        assert_eq!(s.ping().await, Ok(()));
        let caller = "+13105551234";
        assert_eq!(
            s.check(&remote(caller, true, 5)).await,
            RemoteResult::Count(1)
        );
        assert_eq!(
            s.check(&remote(caller, true, 5)).await,
            RemoteResult::Count(2)
        );
        assert_eq!(s.dnc_contains(caller).await, Ok(false));
        assert_eq!(s.dnc_add(caller).await, Ok(true));
        assert_eq!(s.dnc_add("3105551234").await, Ok(false), "already listed");
        assert_eq!(s.dnc_contains("3105551234").await, Ok(true));
        // listed: refused, and not counted
        assert_eq!(
            s.check(&remote(caller, true, 5)).await,
            RemoteResult::Listed
        );
        // a campaign that does not check the DNC counts the call
        assert_eq!(
            s.check(&remote(caller, false, 5)).await,
            RemoteResult::Count(3)
        );
        // not counted (a quote): the DNC only
        assert_eq!(
            s.check(&remote(caller, false, 0)).await,
            RemoteResult::Count(0)
        );
        // the scripts gone from every node: loaded again where the call's keys are
        flush(b);
        assert_eq!(
            s.check(&remote(caller, true, 5)).await,
            RemoteResult::Listed
        );
        assert_eq!(s.dnc_remove(caller).await, Ok(true));
        assert_eq!(s.dnc_remove(caller).await, Ok(false));
        flush(b);
        assert_eq!(
            s.check(&remote(caller, true, 5)).await,
            RemoteResult::Count(4)
        );
        // callers of any shape (braces would be hash tags) are counted, each on its own
        for odd in ["anonymous", "", "}", "{a}b", "+44 20 7946 0000"] {
            assert_eq!(
                s.check(&remote(odd, true, 5)).await,
                RemoteResult::Count(1),
                "{odd:?}"
            );
        }
        assert_eq!(s.check(&remote("}", true, 5)).await, RemoteResult::Count(2));
        assert!(s.dnc_add("anonymous").await.is_err(), "not a NANP number");
        // the duplicate rules' records, campaign and buyer, read back in one pipeline
        let now = 1_750_000_000;
        let write = DupWrite {
            stage: DupStage::Routed,
            campaign: Some("auto".into()),
            buyer: "acme".into(),
            buyer_record: true,
            caller: "13105551234".into(),
            at_s: now,
            keep_s: 60,
        };
        assert_eq!(s.dup_record(&write).await, Ok(()));
        let seen = s
            .dup_check(&DupCheck {
                caller: "13105551234".into(),
                campaign: Some("auto".into()),
                buyers: vec![(0, "acme".into()), (1, "bravo".into())],
            })
            .await
            .expect("dup_check");
        let campaign = seen.campaign.expect("the campaign's record");
        assert_eq!(campaign.within(DupStage::Routed, 60, now + 1), ["acme"]);
        assert_eq!(seen.buyers.len(), 1, "acme only");
        assert_eq!(seen.buyers[0].0, 0);
    });
    let freq = b.keys(&format!("{p}:freq:*"));
    assert_eq!(freq.len(), 6, "{freq:?}");
    if let Backend::Cluster(cl) = b {
        let c = &cl.0;
        // the counter and the DNC key of a number are on one node (one slot)
        let counter = format!("{p}:freq:{{3105551234}}:auto");
        assert!(freq.contains(&counter), "{freq:?}");
        assert_eq!(
            c.port_of(&counter),
            c.port_of(&format!("{p}:dnc:{{3105551234}}"))
        );
        // and the checks spread over the nodes: not every number is on one
        let ports: std::collections::BTreeSet<u16> = (0..50)
            .map(|i| c.port_of(&format!("{p}:dnc:{{31055500{i:02}}}")))
            .collect();
        assert!(ports.len() > 1, "{ports:?}");
    } else {
        assert!(
            freq.contains(&format!("{p}:freq:auto:3105551234")),
            "{freq:?}"
        );
    }
    b.clean(p);
}

//! The fleet-wide caps' Redis side against a real Redis (issue #15, item 1): leases taken
//! atomically and given back, counts and budgets read in the buyer's period, a dead node's
//! leases expiring by themselves, the heartbeat counting nodes, every key of one buyer in one
//! Cluster slot, and the fleet-wide compliance check. The contract is
//! `support/fleet_contract.rs`, which `tests/fleet_cluster.rs` runs on a Redis Cluster.

#[path = "support/fleet_contract.rs"]
mod fleet_contract;
mod support;

use dce::call::lookup::{CapLimits, CapWrite, LeaseResult};
use dce::fleet::Caps;
use fleet_contract::{ask, rt, take, Backend, KEYS};
use std::time::Duration;
use support::redis_server::{clean, redis};

fn prefix(test: &str) -> String {
    format!("dce-test-fleet-{test}-{}", std::process::id())
}

#[test]
fn leases_are_taken_up_to_the_cap_and_given_back() {
    let Some(mut b) = Backend::single() else {
        return;
    };
    fleet_contract::leases_are_taken_up_to_the_cap_and_given_back(&mut b, &prefix("leases"));
}

#[test]
fn answered_counts_and_spend_are_read_in_the_buyers_period() {
    let Some(mut b) = Backend::single() else {
        return;
    };
    fleet_contract::answered_counts_and_spend_are_read_in_the_buyers_period(
        &mut b,
        &prefix("counts"),
    );
}

/// A node that stops renewing (it died) loses its leases within the lease time; one that
/// lives keeps them however long its calls last.
#[test]
fn a_dead_nodes_leases_expire_and_a_live_nodes_are_renewed() {
    let Some(mut b) = Backend::single() else {
        return;
    };
    fleet_contract::a_dead_nodes_leases_expire_and_a_live_nodes_are_renewed(
        &mut b,
        &prefix("expiry"),
    );
}

/// One script's keys share a Cluster slot: every key of a buyer carries the hash tag.
#[test]
fn every_key_of_a_buyer_has_its_hash_tag() {
    let Some(mut b) = Backend::single() else {
        return;
    };
    fleet_contract::every_key_of_a_buyer_has_its_hash_tag(&mut b, &prefix("tags"));
}

#[test]
fn one_batch_of_several_buyers_keeps_each_buyers_order() {
    let Some(mut b) = Backend::single() else {
        return;
    };
    fleet_contract::one_batch_of_buyers_on_different_nodes_keeps_each_buyers_order(
        &mut b,
        &prefix("batch"),
    );
}

#[test]
fn fleet_wide_compliance_check() {
    let Some(mut b) = Backend::single() else {
        return;
    };
    fleet_contract::fleet_wide_compliance(&mut b, &prefix("compliance"));
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
    let start =
        || support::redis_server::spawn(port, &dir.0, &["--save", "", "--appendonly", "no"]);
    let wait_up = support::redis_server::wait_up;
    let url = format!("redis://127.0.0.1:{port}/");
    let mut server = start();
    drop(wait_up(&url));
    rt().block_on(async {
        let m = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let caps = Caps::start(Some(m.into()), &p, Duration::from_secs(3), "n1");
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

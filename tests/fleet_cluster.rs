//! The fleet-wide state against a real Redis Cluster (issue #15, item 1: "work against a
//! Redis Cluster too"): three masters of the test's own on loopback, made with
//! `redis-cli --cluster create`. The same contract as `tests/fleet_redis.rs`
//! (`support/fleet_contract.rs`): leases up to the cap, counts and budgets, a dead node's
//! leases expiring, one buyer's keys in one slot, a batch of buyers on different nodes kept
//! in each buyer's order, and the fleet-wide compliance check (DNC, counter, EVALSHA after
//! `SCRIPT FLUSH` on every node).

#[path = "support/fleet_contract.rs"]
mod fleet_contract;
mod support;

use fleet_contract::Backend;

fn prefix(test: &str) -> String {
    format!("dce-test-cluster-{test}-{}", std::process::id())
}

#[test]
fn leases_are_taken_up_to_the_cap_and_given_back() {
    let Some(mut b) = Backend::cluster("cluster leases") else {
        return;
    };
    fleet_contract::leases_are_taken_up_to_the_cap_and_given_back(&mut b, &prefix("leases"));
}

#[test]
fn answered_counts_and_spend_are_read_in_the_buyers_period() {
    let Some(mut b) = Backend::cluster("cluster counts") else {
        return;
    };
    fleet_contract::answered_counts_and_spend_are_read_in_the_buyers_period(
        &mut b,
        &prefix("counts"),
    );
}

#[test]
fn a_dead_nodes_leases_expire_and_a_live_nodes_are_renewed() {
    let Some(mut b) = Backend::cluster("cluster expiry") else {
        return;
    };
    fleet_contract::a_dead_nodes_leases_expire_and_a_live_nodes_are_renewed(
        &mut b,
        &prefix("expiry"),
    );
}

#[test]
fn every_key_of_a_buyer_is_in_one_slot() {
    let Some(mut b) = Backend::cluster("cluster tags") else {
        return;
    };
    fleet_contract::every_key_of_a_buyer_has_its_hash_tag(&mut b, &prefix("tags"));
}

/// The batch is split per slot: three buyers on three nodes in one batch.
#[test]
fn one_batch_of_buyers_on_different_nodes_keeps_each_buyers_order() {
    let Some(mut b) = Backend::cluster("cluster batch") else {
        return;
    };
    fleet_contract::one_batch_of_buyers_on_different_nodes_keeps_each_buyers_order(
        &mut b,
        &prefix("batch"),
    );
}

#[test]
fn fleet_wide_compliance_check() {
    let Some(mut b) = Backend::cluster("cluster compliance") else {
        return;
    };
    fleet_contract::fleet_wide_compliance(&mut b, &prefix("compliance"));
}

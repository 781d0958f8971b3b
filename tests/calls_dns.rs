//! Buyers by host name in simulated time (RFC 3263 §4.3): the attempt walks the targets the
//! DNS table gives — on `503`, and on silence past `target_timeout_ms` — in the same dialog;
//! a host with no answer makes its buyer `excluded:dns`. The simulation's drop asserts that
//! nothing (transactions, timers, router entries, media, slots) is left behind.

mod support;

use dce::dns::{Answer, Table, Target, Transport};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::sim::{config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

/// `buyer.test` → 127.0.0.1:5091 (priority 10), 127.0.0.1:5092 (priority 20).
fn table() -> Arc<Table> {
    let t = Arc::new(Table::default());
    let target = |port: u16, priority: u16| Target {
        name: format!("t{port}.buyer.test"),
        priority,
        weight: 10,
        addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        transport: Transport::Udp,
    };
    t.record(
        "buyer.test",
        Ok(Answer {
            targets: vec![target(5092, 20), target(5091, 10)],
            ttl: Duration::from_secs(60),
            via: "srv",
        }),
        SystemTime::now(),
    );
    t
}

fn sim(extra_sip: &str, ghost_first: bool) -> Sim {
    let mut buyers = String::from(
        "[[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{called}@buyer.test\"\nbid_cents = 900\n",
    );
    if ghost_first {
        buyers.push_str("[[buyer]]\nid = \"ghost\"\ncampaigns = [\"auto\"]\nuri = \"sip:{called}@nowhere.test\"\nbid_cents = 1000\n");
    }
    buyers.push_str(&support::sim::buyer("bravo", 5093, 100, ""));
    Sim::with_dns(&config(extra_sip, &buyers), Some(table()))
}

fn outcomes(sim: &Sim) -> Vec<String> {
    sim.cdrs()[0]
        .bids
        .iter()
        .map(|b| format!("{}={}", b.buyer_id, b.outcome))
        .collect()
}

fn branch(m: &dce_sip::Message) -> String {
    m.via().branch().unwrap_or_default().to_owned()
}

#[test]
fn a_503_moves_the_attempt_to_the_next_target_in_the_same_dialog() {
    let mut sim = sim("", false);
    sim.add_buyer(5091, Mode::Reject(503));
    sim.add_buyer(5092, Mode::Answer(S));
    sim.add_buyer(5093, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    let first = sim
        .buyer(5091)
        .calls
        .values()
        .next()
        .expect("priority 10 rung first")
        .clone();
    let second = sim
        .buyer(5092)
        .calls
        .values()
        .next()
        .expect("then priority 20")
        .clone();
    assert_eq!(
        first.invite.call_id(),
        second.invite.call_id(),
        "one dialog"
    );
    assert_ne!(
        branch(&first.invite),
        branch(&second.invite),
        "a new transaction"
    );
    assert!(
        sim.buyer(5093).calls.is_empty(),
        "the next buyer was not needed"
    );
    assert_eq!(sim.counters.get(dce::counters::Counter::TargetFailover), 1);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(outcomes(&sim), ["acme=won", "bravo=lost"]);
}

#[test]
fn a_silent_target_is_left_after_target_timeout_and_never_retried() {
    let mut sim = sim("target_timeout_ms = 700", false);
    sim.add_buyer(5091, Mode::Silent);
    sim.add_buyer(5092, Mode::Answer(S));
    sim.add_buyer(5093, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(S / 2);
    assert!(
        sim.buyer(5092).calls.is_empty(),
        "still waiting for the first target"
    );
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    assert_eq!(sim.buyer(5092).calls.len(), 1);
    // The silent target got its INVITE and one Timer A retransmission (at 500 ms), nothing
    // after it was left at 700 ms.
    let silent = sim.buyer(5091).calls.values().next().unwrap().clone();
    let more = sim.buyer_responses().len();
    sim.run_for(10 * S);
    assert_eq!(sim.buyer(5091).calls.len(), 1);
    assert_eq!(
        sim.buyer(5091)
            .calls
            .values()
            .next()
            .unwrap()
            .requests
            .len(),
        silent.requests.len(),
        "no CANCEL or retransmission to a target that was left"
    );
    assert_eq!(sim.buyer_responses().len(), more);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(outcomes(&sim), ["acme=won", "bravo=lost"]);
}

#[test]
fn every_target_failing_fails_the_attempt_once_and_the_next_buyer_rings() {
    let mut sim = sim("", false);
    sim.add_buyer(5091, Mode::Reject(503));
    sim.add_buyer(5092, Mode::Reject(503));
    sim.add_buyer(5093, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(outcomes(&sim), ["acme=attempted:503", "bravo=won"]);
    assert_eq!(sim.counters.get(dce::counters::Counter::TargetFailover), 1);
}

#[test]
fn a_host_that_never_resolved_excludes_its_buyer_not_the_call() {
    let mut sim = sim("", true);
    sim.add_buyer(5091, Mode::Answer(S));
    sim.add_buyer(5092, Mode::Answer(S));
    sim.add_buyer(5093, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(
        outcomes(&sim),
        ["ghost=excluded:dns", "acme=won", "bravo=lost"]
    );
}

//! Buyer trunk health (issue #13, item 5) in simulated time: OPTIONS pings mark a silent trunk
//! down within `down_after` intervals and it is skipped (`excluded:down`) with no ring timeout
//! to wait out; answered pings bring it back by itself. Failed calls open the breaker for its
//! cool-down. The simulation's drop asserts nothing is left.

mod support;

use dce::counters::Counter;
use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

fn sim(health: &str) -> Sim {
    let buyers = format!(
        "{}{}",
        buyer("acme", 5090, 900, &format!("health = {{ {health} }}")),
        buyer("bravo", 5091, 100, "")
    );
    let mut sim = Sim::new(&config("ring_timeout_s = 10", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim
}

fn outcomes(sim: &Sim, i: usize) -> Vec<String> {
    sim.cdrs()[i]
        .bids
        .iter()
        .map(|b| format!("{}={}", b.buyer_id, b.outcome))
        .collect()
}

/// One call, hung up by the carrier after it connects; how long until the answer.
fn one_call(sim: &mut Sim) -> Duration {
    let call = sim.place_call("+13105551234");
    let t0 = sim.now;
    let mut waited = Duration::ZERO;
    while sim.finals(&call).is_empty() && waited < Duration::from_secs(30) {
        sim.run_for(S / 10);
        waited = sim.now - t0;
    }
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    waited
}

#[test]
fn a_trunk_that_stops_answering_options_is_skipped_and_comes_back() {
    let mut sim = sim("interval_s = 2, down_after = 2, up_after = 2");
    sim.start_pinging();
    sim.run_for(5 * S);
    assert!(sim.buyer(5090).options >= 2, "pinged every 2 s");
    assert!(
        sim.buyer(5091).options == 0,
        "only buyers with health are pinged"
    );
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 0), ["acme=won", "bravo=lost"]);

    // Silent: two failed pings (each given up after its 2 s) mark it down.
    sim.set_mode(5090, Mode::Silent);
    sim.run_for(7 * S);
    assert_eq!(sim.counters.get(Counter::BuyerDown), 1);
    let waited = one_call(&mut sim);
    assert!(
        waited < 2 * S,
        "straight to the next bidder, no ring timeout: {waited:?}"
    );
    assert_eq!(outcomes(&sim, 1), ["bravo=won", "acme=excluded:down"]);
    let view = sim.core.calls().buyers_view();
    let h = view[0].health.as_ref().unwrap();
    assert_eq!(
        (h.state.as_str(), h.reason.as_deref()),
        ("down", Some("options"))
    );

    // It answers again: up after two answered pings, and it gets calls again.
    sim.set_mode(5090, Mode::Answer(S));
    sim.run_for(5 * S);
    assert_eq!(sim.counters.get(Counter::BuyerUp), 1);
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 2), ["acme=won", "bravo=lost"]);
    sim.shutdown();
}

#[test]
fn failed_calls_open_the_breaker_for_its_cooldown() {
    let mut sim = sim("interval_s = 0, fail_calls = 2, cooldown_s = 20");
    sim.set_mode(5090, Mode::Reject(503));
    one_call(&mut sim);
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 1), ["acme=attempted:503", "bravo=won"]);
    assert_eq!(sim.counters.get(Counter::BuyerDown), 1);
    sim.set_mode(5090, Mode::Answer(S));
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 2), ["bravo=won", "acme=excluded:down"]);
    let view = sim.core.calls().buyers_view();
    let h = view[0].health.as_ref().unwrap();
    assert_eq!(h.reason.as_deref(), Some("calls"));
    assert!(h.breaker_open_until.is_some());
    // The cool-down passes (on the wall clock the auction reads): it is tried again.
    sim.advance_wall(Duration::from_secs(21));
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 3), ["acme=won", "bravo=lost"]);
    assert_eq!(sim.buyer(5090).options, 0, "interval_s = 0: no pings");
}

/// A buyer by host name with two SRV targets (5091 first, 5092 second): a round of pings walks
/// the targets as a call's attempt does, so a silent first target alone does not take the
/// buyer down — only both silent do — and calls still reach it through the second target.
#[test]
fn pings_walk_the_dns_targets_and_the_buyer_is_down_only_when_none_answers() {
    use dce::dns::{Answer, Table, Target, Transport};
    let table = std::sync::Arc::new(Table::default());
    let target = |port: u16, priority: u16| Target {
        name: format!("t{port}.buyer.test"),
        priority,
        weight: 10,
        addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        transport: Transport::Udp,
    };
    table.record(
        "buyer.test",
        Ok(Answer {
            targets: vec![target(5092, 20), target(5091, 10)],
            ttl: Duration::from_secs(3600),
            via: "srv",
        }),
        std::time::SystemTime::now(),
    );
    let buyers = format!(
        "[[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@buyer.test\"\nbid_cents = 900\n\
         health = {{ interval_s = 2, down_after = 2, up_after = 1 }}\n{}",
        buyer("bravo", 5093, 100, "")
    );
    let mut sim = Sim::with_dns(
        &config("ring_timeout_s = 10\ntarget_timeout_ms = 500", &buyers),
        Some(table),
    );
    sim.add_buyer(5091, Mode::Silent);
    sim.add_buyer(5092, Mode::Answer(S));
    sim.add_buyer(5093, Mode::Answer(S));
    sim.start_pinging();
    sim.run_for(12 * S);
    assert!(
        sim.buyer(5091).options >= 3,
        "the first target is pinged each round"
    );
    assert!(
        sim.buyer(5092).options >= 3,
        "and the second when the first is silent"
    );
    assert_eq!(
        sim.counters.get(Counter::BuyerDown),
        0,
        "one target answers: the buyer is up"
    );
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 0), ["acme=won", "bravo=lost"]);

    // Both silent: down, and the call goes straight to bravo.
    sim.set_mode(5092, Mode::Silent);
    sim.run_for(15 * S);
    assert_eq!(sim.counters.get(Counter::BuyerDown), 1);
    one_call(&mut sim);
    assert_eq!(outcomes(&sim, 1), ["bravo=won", "acme=excluded:down"]);

    // The second answers again: up after one answered round.
    sim.set_mode(5092, Mode::Answer(S));
    sim.run_for(8 * S);
    assert_eq!(sim.counters.get(Counter::BuyerUp), 1);
    sim.shutdown();
}

//! 100,000 seeded random mutations of the torture corpus thrown at the parser, the stream
//! framer, the transaction layer and the edge policy (through `EdgeCore`, with simulated time).
//! Nothing may panic, and everything DCE sends must be a framed SIP response to a loopback
//! peer. The seed is printed so a failure can be replayed: `DCE_MUTATION_SEED=<n>`.

mod support;

use bytes::Bytes;
use dce::counters::Counters;

use dce_sip::framing::{frame, Frame};
use dce_sip::transaction::{Peer, Transport};
use dce_sip::Method;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ITERATIONS: usize = 100_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\"",
    b"<",
    b">",
    b"%",
    b"%00",
    b"\0",
    b"\xff",
    b"@",
    b"[",
    b"]",
    b"=",
    b"\\",
    b"\r\n ",
    b"\r\n\r\n",
    b"SIP/2.0",
    b"z9hG4bK",
    b"4294967296",
    b"36893488147419103232",
    b"-1",
    b"0",
    b"65536",
    b"Content-Length: 99999\r\n",
    b"l: 4294967295\r\n",
    b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx;rport\r\n",
    b"CSeq: 1 ACK\r\n",
    b"To: <sip:a@b>;tag=x\r\n",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = m.len().max(1);
        match rng.below(9) {
            0 => {
                let i = rng.below(len);
                if i < m.len() {
                    m[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                if i < m.len() {
                    m[i] = rng.next() as u8;
                }
            }
            2 => {
                let i = rng.below(m.len() + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                m.splice(i..i, ins.iter().copied());
            }
            3 => {
                let i = rng.below(m.len() + 1);
                let j = (i + rng.below(40)).min(m.len());
                m.drain(i..j);
            }
            4 => {
                let cut = rng.below(m.len() + 1);
                m.truncate(cut);
            }
            5 => {
                // duplicate a line
                let lines: Vec<usize> = m
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"\r\n")
                    .map(|(i, _)| i + 2)
                    .collect();
                if lines.len() > 2 {
                    let a = lines[rng.below(lines.len() - 1)];
                    let b = lines.iter().copied().find(|&x| x > a).unwrap_or(m.len());
                    let line: Vec<u8> = m[a..b].to_vec();
                    m.splice(a..a, line);
                }
            }
            6 => {
                // splice a slice of another seed
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(other.len());
                let b = (a + rng.below(200)).min(other.len());
                let i = rng.below(m.len() + 1);
                m.splice(i..i, other[a..b].iter().copied());
            }
            7 => {
                // swap case of a run (header names are case-insensitive, methods are not)
                let i = rng.below(len);
                for b in m.iter_mut().skip(i).take(8) {
                    b.make_ascii_uppercase();
                }
            }
            _ => {
                // replace a digit run with a huge number
                if let Some(i) = m.iter().position(|b| b.is_ascii_digit()) {
                    let j = m[i..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map(|k| i + k)
                        .unwrap_or(m.len());
                    m.splice(i..j, b"99999999999999999999999".iter().copied());
                }
            }
        }
    }
    m
}

#[test]
fn hundred_thousand_mutations_never_panic_and_every_answer_is_framed() {
    let Some(cases) = support::load_corpus() else {
        return;
    };
    let mut seeds: Vec<Vec<u8>> = cases.into_iter().map(|c| c.wire).collect();
    seeds.push(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKm;rport\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: m\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_vec());
    let seed: u64 = std::env::var("DCE_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_D0CE);
    eprintln!("mutation seed {seed} ({ITERATIONS} iterations)");
    let mut rng = Rng(seed);
    let counters = Arc::new(Counters::default());
    let mut core = support::bare_edge(counters.clone());
    let t0 = Instant::now();
    let mut now = t0;
    let mut sent = 0usize;
    for i in 0..ITERATIONS {
        let msg = mutate(&mut rng, &seeds);
        // the stream framer must classify anything without panicking, within bounds
        match frame(&msg, 65_535) {
            Frame::Message(n) | Frame::Ping(n) | Frame::Skip(n) => assert!(n <= msg.len()),
            Frame::Incomplete | Frame::Invalid(_) => {}
        }
        let transport = if i % 3 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let from = Peer {
            transport,
            addr: "127.0.0.9:40000".parse().unwrap(),
            conn: Some(1),
        };
        support::feed(&mut core, Bytes::from(msg), from, now);
        if i % 500 == 0 {
            now += Duration::from_millis(700);
            core.handle_timeout(now);
        }
        while let Some(t) = support::next_transmit(&mut core) {
            sent += 1;
            assert!(
                t.to.addr.ip().is_loopback(),
                "answer left for {}",
                t.to.addr
            );
            assert!(
                t.bytes.starts_with(b"SIP/2.0 "),
                "only responses go out: {:?}",
                String::from_utf8_lossy(&t.bytes)
            );
            assert_eq!(
                frame(&t.bytes, 1 << 20),
                Frame::Message(t.bytes.len()),
                "answer is framed by its Content-Length"
            );
        }
    }
    // let every transaction run out
    now += Duration::from_secs(120);
    core.handle_timeout(now);
    while support::next_transmit(&mut core).is_some() {}
    assert_eq!(core.poll_timeout(), None, "all transactions ended");
    eprintln!("{sent} answers; counters: {}", counters.report());
    assert!(sent > 1000, "the mutations exercised the answer paths");
}

/// The same mutations, thrown at an edge with a real carrier, campaign and buyers while calls
/// are up: seeds are the live traffic of the simulated carrier and buyers (INVITEs from the
/// carrier's address get past `403` into admission, the auction and the ring tree; mutated
/// ACK/BYE/re-INVITE/INFO/CANCEL and responses carry live dialog ids). Nothing may panic,
/// everything DCE sends must parse (the simulated parties parse it), and afterwards DCE must
/// hold nothing (the simulation's leak check).
#[test]
fn mutated_dialog_traffic_reaches_the_call_logic_and_leaves_nothing_behind() {
    use support::sim::{buyer, config, Mode, Sim};
    const ROUNDS: usize = 20_000;
    let buyers = format!(
        "{}{}{}",
        buyer("acme", 5090, 1500, ""),
        buyer("bravo", 5091, 1200, ""),
        buyer("cobalt", 5092, 900, "")
    );
    let cfg = config("ring_timeout_s = 3", &buyers);
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Reject(486));
    sim.add_buyer(5091, Mode::Answer(Duration::from_millis(300)));
    sim.add_buyer(5092, Mode::Ring);
    sim.sent_log = Some(Vec::new());
    let seed: u64 = std::env::var("DCE_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xCA11_5EED);
    eprintln!("call-logic mutation seed {seed} ({ROUNDS} rounds)");
    let mut rng = Rng(seed);
    let mut calls = Vec::new();
    for i in 0..ROUNDS {
        if i % 40 == 0 {
            calls.push(sim.place_call("+13105551234"));
        }
        if i % 40 == 20 {
            // live traffic to mutate: in-dialog requests, a CANCEL, a hangup
            if let Some(c) = calls.iter().rev().find(|c| sim.finals(c) == [200]).cloned() {
                match rng.below(3) {
                    0 => sim.carrier_in_dialog(
                        &c,
                        Method::Info,
                        10 + i as u32,
                        Some(("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")),
                    ),
                    1 => sim.carrier_in_dialog(
                        &c,
                        Method::Invite,
                        10 + i as u32,
                        Some(("application/sdp", SDP)),
                    ),
                    _ => sim.carrier_bye(&c),
                }
            }
            if let Some(c) = calls
                .iter()
                .rev()
                .find(|c| sim.finals(c).is_empty())
                .cloned()
            {
                if rng.below(4) == 0 {
                    sim.cancel(&c);
                }
            }
        }
        let recent: Vec<(std::net::SocketAddr, Vec<u8>)> = {
            let log = sim.sent_log.as_ref().unwrap();
            log[log.len().saturating_sub(200)..]
                .iter()
                .map(|(a, b)| (*a, b.to_vec()))
                .collect()
        };
        if recent.is_empty() {
            continue;
        }
        let seeds: Vec<Vec<u8>> = recent.iter().map(|(_, b)| b.clone()).collect();
        let pick = rng.below(recent.len());
        let from = recent[pick].0;
        let one = [seeds[pick].clone()];
        let msg = mutate(&mut rng, &one);
        sim.send_raw(from, Bytes::from(msg));
        if i % 10 == 0 {
            sim.run_for(Duration::from_millis(50));
        }
        if let Some(log) = sim.sent_log.as_mut() {
            if log.len() > 10_000 {
                log.drain(..5_000);
            }
        }
    }
    sim.sent_log = None;
    let rung: usize = [5090, 5091, 5092]
        .iter()
        .map(|p| sim.buyer(*p).calls.len())
        .sum();
    let answered = sim.counters.get(dce::counters::Counter::CallAnswered);
    eprintln!(
        "{} calls placed, {rung} buyer INVITEs, {answered} answered; counters: {}",
        calls.len(),
        sim.counters.report()
    );
    assert!(
        rung >= calls.len(),
        "INVITEs got past admission to the ring tree"
    );
    assert!(
        answered > 100,
        "calls were answered while mutated traffic flowed"
    );
    // Dropping `sim` runs every timer out and asserts nothing is held.
}

const SDP: &str = support::sim::SDP;

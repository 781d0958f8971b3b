//! 100,000 seeded random mutations of the torture corpus thrown at the parser, the stream
//! framer, the transaction layer and the edge policy (through `EdgeCore`, with simulated time).
//! Nothing may panic, and everything DCE sends must be a framed SIP response to a loopback
//! peer. The seed is printed so a failure can be replayed: `DCE_MUTATION_SEED=<n>`.

mod support;

use bytes::Bytes;
use dce::counters::Counters;

use dce_sip::framing::{frame, Frame};
use dce_sip::transaction::{Peer, Transport};
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

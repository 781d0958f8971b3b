//! Relay load: `calls` calls, each with a carrier and a buyer sending 50 RTP packets/s to DCE's
//! ports (so 2 streams per call), for `seconds`. Prints packets relayed per second, packets
//! lost inside the relay, and the relay's CPU time per 1,000 streams (its thread only, `dce-rtp`;
//! the traffic generator runs on a runtime of its own).
//!
//! With `--record`, every call is recorded (a stereo WAV each, in a temporary directory removed
//! afterwards): the recorder thread's CPU (`dce-rec`), the bytes written per call-minute and
//! the packets the recorder had to leave out are printed too.
//!
//!     cargo run --release -p dce-media --example relay_load -- [calls] [seconds] [pps] [--record]

use dce_media::stats::rtp_packet;
use dce_media::{MediaEngine, MediaEvent, Relay, RelayConfig, Side, Stream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

fn stream(addr: SocketAddr) -> Stream {
    Stream {
        kind: "audio".into(),
        rtp: Some(addr),
        rtcp: None,
        rtcp_mux: false,
        codec: Some("PCMU".into()),
        clock_rate: 8000,
        telephone_event: None,
    }
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            if f.len() > 13 {
                total += f[11].parse::<f64>().unwrap_or(0.0) / tick
                    + f[12].parse::<f64>().unwrap_or(0.0) / tick;
            }
        }
    }
    total
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = *args.first().unwrap_or(&1000) as usize;
    let seconds = *args.get(1).unwrap_or(&10);
    let pps = *args.get(2).unwrap_or(&50);
    let record = std::env::args().any(|a| a == "--record");
    let rec_dir = std::env::temp_dir().join(format!("dce-relay-load-{}", std::process::id()));

    let relay_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gen_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gen")
        .enable_all()
        .build()
        .expect("runtime");

    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut relay = Relay::new(
        RelayConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            // below the ephemeral range the generator's own sockets come from
            port_min: 10000,
            port_max: 10000 + (calls as u16) * 4 + 400,
            rtp_timeout: Duration::from_secs(3600),
            strict_source: true,
            latch_any_source: false,
        },
        tx,
    )
    .expect("relay thread starts");
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut ids = Vec::new();
    let mut pairs = Vec::new();
    for _ in 0..calls {
        let (carrier, buyer) = gen_rt.block_on(async {
            (
                UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let id = relay_rt.block_on(async { relay.open(1) }).expect("ports");
        relay.set_remote(id, Side::A, &[stream(carrier.local_addr().unwrap())]);
        relay.set_remote(id, Side::B, &[stream(buyer.local_addr().unwrap())]);
        relay.answered(id);
        if record {
            relay.record(id, rec_dir.join(format!("{id}.wav")));
        }
        relay.flush();
        let a: SocketAddr = format!("127.0.0.1:{}", relay.ports(id, Side::A)[0])
            .parse()
            .unwrap();
        let b: SocketAddr = format!("127.0.0.1:{}", relay.ports(id, Side::B)[0])
            .parse()
            .unwrap();
        ids.push(id);
        pairs.push((carrier, a, buyer, b));
    }
    println!(
        "{calls} calls ({} streams) at {pps} packets/s each for {seconds} s",
        calls * 2
    );
    let cpu0 = thread_cpu("dce-rtp");
    let rec0 = thread_cpu("dce-rec");
    let t0 = Instant::now();
    gen_rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, (carrier, a, buyer, b)) in pairs.into_iter().enumerate() {
            let (sent, received) = (sent.clone(), received.clone());
            tasks.push(tokio::spawn(async move {
                let (carrier, buyer) = (Arc::new(carrier), Arc::new(buyer));
                for (sock, from_dce) in [(carrier.clone(), a), (buyer.clone(), b)] {
                    let received = received.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 512];
                        while let Ok((_, src)) = sock.recv_from(&mut buf).await {
                            if src.ip() == from_dce.ip() {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                // stagger the calls over one packet interval
                tokio::time::sleep(Duration::from_micros(
                    (i as u64 * 1_000_000 / pps) / calls as u64,
                ))
                .await;
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / pps));
                for seq in 0..(seconds * pps) as u16 {
                    tick.tick().await;
                    let p = rtp_packet(0, seq, seq as u32 * 160, i as u32, 160);
                    if carrier.send_to(&p, a).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if buyer.send_to(&p, b).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu("dce-rtp") - cpu0;
    let mut relayed = 0;
    let (mut rec_bytes, mut rec_secs, mut rec_dropped) = (0u64, 0.0f64, 0u64);
    relay_rt.block_on(async {
        for id in &ids {
            relay.close(*id);
        }
        relay.flush();
        let mut closed = 0;
        while closed < ids.len() {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(MediaEvent::Closed { report, .. })) => {
                    closed += 1;
                    relayed += report.to_buyer + report.to_carrier;
                    rec_dropped += report.recording_dropped;
                    if let Some((path, secs)) = &report.recording {
                        rec_bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                        rec_secs += secs;
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    });
    let (s, r) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    println!(
        "sent {s}, relayed by DCE {relayed}, received {r}, lost {} ({:.3}%)",
        s.saturating_sub(r),
        (s.saturating_sub(r)) as f64 * 100.0 / s.max(1) as f64
    );
    println!("relay rate {:.0} packets/s", relayed as f64 / wall);
    println!(
        "relay CPU {:.2} s over {:.1} s = {:.1}% of one core; {:.1}% of a core per 1,000 streams",
        cpu,
        wall,
        cpu * 100.0 / wall,
        cpu * 100.0 / wall / (calls as f64 * 2.0 / 1000.0)
    );
    if record {
        let rec_cpu = thread_cpu("dce-rec") - rec0;
        println!(
            "recorder CPU {:.2} s = {:.1}% of one core; {} recordings, {:.0} s in all, {:.0} bytes per call-minute, {rec_dropped} packets left out of recordings",
            rec_cpu,
            rec_cpu * 100.0 / wall,
            ids.len(),
            rec_secs,
            rec_bytes as f64 / (rec_secs / 60.0).max(1e-9)
        );
        let _ = std::fs::remove_dir_all(&rec_dir);
    }
}

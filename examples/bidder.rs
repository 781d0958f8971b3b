//! A load-test bidder for real-time bidding benchmarks (`scripts/load.py --rtb N`): an HTTP/1.1
//! server on loopback that answers every POST after a uniformly random delay in
//! [`MIN_MS`, `MAX_MS`] with `{"bid_cents": …}` (the bid from the path: `/b7` bids 700), and
//! prints how many requests it answered and its slowest delay when stopped (SIGTERM/SIGINT).
//!
//!     cargo run --release --example bidder -- PORT [MIN_MS MAX_MS]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(9500);
    let min_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let max_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let answered = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let seed = Arc::new(AtomicU64::new(0x9e37_79b9_7f4a_7c15));
    let (a, c) = (answered.clone(), connections.clone());
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            c.fetch_add(1, Ordering::Relaxed);
            let (a, seed) = (a.clone(), seed.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (a, seed) = (a.clone(), seed.clone());
                        async move {
                            let bid: u32 = req
                                .uri()
                                .path()
                                .trim_start_matches("/b")
                                .parse()
                                .unwrap_or(1);
                            let _ = req.into_body().collect().await;
                            // xorshift: a delay per request, uniform in [min, max]
                            let mut x = seed.load(Ordering::Relaxed);
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            seed.store(x, Ordering::Relaxed);
                            let ms = min_ms + x % (max_ms - min_ms + 1);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            a.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(format!("{{\"bid_cents\": {}}}", bid * 100)),
                            )))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = serve => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!(
        "bidder: answered={} connections={} delay_ms={min_ms}..{max_ms}",
        answered.load(Ordering::Relaxed),
        connections.load(Ordering::Relaxed)
    );
    Ok(())
}

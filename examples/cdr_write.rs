//! CDR write rates: batched inserts into PostgreSQL (a database created for the run, dropped
//! after), and spool append and replay.
//!
//!     cargo run --release --example cdr_write -- [cdrs]

use dce::call::cdr::Cdr;
use dce::store::{Db, Spool};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let cdrs: Vec<Cdr> = (0..n).map(Cdr::synthetic).collect();
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    let name = format!("dce_bench_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let db = Db::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))?;
    db.migrate().await?;
    let t = Instant::now();
    for chunk in cdrs.chunks(500) {
        db.insert(chunk).await?;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "PostgreSQL: {n} CDRs (+{} bids) in {s:.2} s = {:.0} CDRs/s",
        n * 3,
        n as f64 / s
    );
    let t = Instant::now();
    db.insert(&cdrs[..10_000.min(n)]).await?;
    println!(
        "replay of 10,000 already stored (ON CONFLICT DO NOTHING): {:.2} s; rows still {}",
        t.elapsed().as_secs_f64(),
        db.count_calls().await?
    );
    if let Db::Pg(p) = &db {
        p.close().await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;

    let dir = std::env::temp_dir().join(format!("dce-spool-bench-{}", std::process::id()));
    let spool = Spool::new(&dir);
    let t = Instant::now();
    for chunk in cdrs.chunks(100) {
        spool.append(chunk)?;
    }
    let s = t.elapsed().as_secs_f64();
    println!("spool append (fsync per 100): {:.0} CDRs/s", n as f64 / s);
    let t = Instant::now();
    let batches = spool.take();
    let read: usize = batches.iter().map(|b| b.cdrs.len()).sum();
    println!(
        "spool read back: {read} CDRs at {:.0} CDRs/s",
        read as f64 / t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

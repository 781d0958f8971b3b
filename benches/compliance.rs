//! The whole compliance check (national DNC + internal DNC + calling hours + in-process
//! frequency cap) on one call; goal ≤ 1 µs median.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use dce_compliance::{CallingHours, CampaignRules, Compliance, NationalDnc, Window};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        2_000_000_000 + x % 7_999_999_999
    };
    let listed: Vec<u64> = (0..10_000_000).map(|_| next()).collect();
    let national =
        NationalDnc::from_bytes(NationalDnc::build(listed), std::path::Path::new("bench")).unwrap();
    let mut states = HashMap::new();
    states.insert("FL".to_owned(), Window::parse("08:00", "20:00").unwrap());
    let mut comp = Compliance::default();
    comp.national = Some(Arc::new(national));
    comp.hours = Some(CallingHours {
        default: Window::parse("08:00", "21:00").unwrap(),
        states,
    });
    comp.max_calls_per_day = 3;
    let now = Utc.with_ymd_and_hms(2026, 7, 15, 18, 0, 0).unwrap();
    let callers: Vec<String> = (0..100_000u64)
        .map(|i| format!("1310{:07}", (i * 7919) % 10_000_000))
        .collect();
    let mut i = 0;
    c.bench_function("compliance_check_dnc_hours_frequency", |b| {
        b.iter(|| {
            i = (i + 1) % callers.len();
            black_box(comp.check(
                &callers[i],
                Some("CA"),
                "auto",
                CampaignRules::default(),
                now,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The auction over 1,000 eligible buyers (goal ≤ 20 µs median), and over a realistic mix
//! where filters exclude some.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use dce_routing::{auction, Buyer, Campaign, Live, Schedule, Snapshot, State, StateSet};
use std::hint::black_box;

fn buyers(n: usize, filtered: bool) -> Vec<Buyer> {
    let tzs = [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Los_Angeles",
    ];
    (0..n)
        .map(|i| {
            let mut states = StateSet::default();
            if filtered && i % 3 == 0 {
                states.insert(State::parse(["CA", "TX", "NY", "FL"][i % 4]).unwrap());
            }
            Buyer {
                id: format!("buyer-{i}"),
                campaigns: vec![0],
                uri: "sip:{called}@127.0.0.1:5090".into(),
                bid_cents: 500 + (i as u32 * 7919) % 2000,
                max_concurrent: 10,
                hourly_cap: if filtered { 100 } else { 0 },
                daily_cap: if filtered { 1000 } else { 0 },
                daily_budget_cents: if filtered { 1_000_000 } else { 0 },
                monthly_cap: 0,
                monthly_budget_cents: 0,
                pause_after_unanswered: Default::default(),
                duplicates: None,
                states,
                schedule: filtered
                    .then(|| Schedule::parse(tzs[i % 4], "mon-fri", "08:00", "20:00").unwrap()),
                priority: (i % 5) as i32,
                auth: None,
                headers: Vec::new(),
                codecs: Vec::new(),
                from_user: None,
                health: None,
                tls_ca: None,
                rtb: None,
                min_attestation: dce_routing::Trust::None,
                record: false,
                attestation_bid: Default::default(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let campaign = Campaign {
        id: "auto".into(),
        numbers: vec!["18005550100".into()],
        billable_after_s: 90,
        floor_cents: 0,
        max_duration_s: 7200,
        bill_one_way_audio: true,
        dnc: true,
        tcpa_hours: true,
        require_consent: false,
        auction_deadline_ms: 250,
        publisher_margin_ppm: 0,
        reservation_s: 60,
        duplicates: None,
        reroute_within_s: 0,
        max_reroutes: 2,
        stir: Default::default(),
        record: false,
    };
    let now = Utc.with_ymd_and_hms(2026, 7, 15, 16, 0, 0).unwrap();
    let ca = State::parse("CA");
    for (name, filtered) in [
        ("auction_1000_all_eligible", false),
        ("auction_1000_with_filters", true),
    ] {
        let live = Live::default();
        let snap = Snapshot::new(vec![campaign.clone()], buyers(1000, filtered), &live).unwrap();
        let mut out = Vec::with_capacity(1000);
        let ranked = auction(&snap, 0, ca, now, &mut out);
        eprintln!("{name}: {ranked} of 1000 ranked");
        c.bench_function(name, |b| {
            b.iter(|| auction(black_box(&snap), 0, ca, now, &mut out))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

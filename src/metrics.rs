//! Labelled figures for `/metrics` beyond the per-reason [`crate::counters::Counters`]: calls by
//! outcome, compliance rejections by rule, SIP messages by method and code, the auction
//! latency histogram, RTP packets and loss, active calls and calls per second.
//!
//! Everything is cheap to bump from the core task: atomics, or a short uncontended lock on a
//! small map whose keys are a handful of strings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds of the auction latency buckets, in microseconds.
pub const AUCTION_BUCKETS_US: [u64; 10] = [5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 10_000];

/// Upper bounds of the bid-request latency buckets, in milliseconds.
pub const RTB_BUCKETS_MS: [u32; 10] = [5, 10, 20, 50, 100, 150, 250, 500, 1_000, 2_000];

/// One real-time bidder's pings.
#[derive(Debug, Default)]
struct RtbStats {
    /// By outcome kind (`bid`, `timeout`, `error`, `malformed`, `rejected`).
    outcomes: BTreeMap<&'static str, u64>,
    buckets: [u64; RTB_BUCKETS_MS.len()],
    count: u64,
    sum_ms: u64,
}

/// The figures. One per process, shared by the core task and the HTTP API.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: Mutex<BTreeMap<String, u64>>,
    compliance: Mutex<BTreeMap<String, u64>>,
    /// STIR/SHAKEN verdicts: `A`, `B`, `C`, `no_identity`, `failed:<reason>`.
    stir: Mutex<BTreeMap<String, u64>>,
    /// In requests, in responses, out requests, out responses: by method or code.
    sip: Mutex<[BTreeMap<String, u64>; 4]>,
    auction_buckets: [AtomicU64; AUCTION_BUCKETS_US.len()],
    auction_count: AtomicU64,
    auction_sum_ns: AtomicU64,
    rtp_packets: AtomicU64,
    rtp_lost: AtomicU64,
    active_calls: AtomicU64,
    calls_started: AtomicU64,
    rate: Mutex<RateWindow>,
    rtb: Mutex<BTreeMap<String, RtbStats>>,
}

#[derive(Debug, Default)]
struct RateWindow {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    match m.get_mut(key) {
        Some(v) => *v += 1,
        None => {
            m.insert(key.to_owned(), 1);
        }
    }
}

/// Escape a Prometheus label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// A call ended (or was refused) with `disposition`.
    pub fn call_outcome(&self, disposition: &str) {
        bump(&self.outcomes, disposition);
    }

    /// A call refused by compliance rule `rule` (`DNC`, `TCPA_HOURS`, …).
    pub fn compliance_rejection(&self, rule: &str) {
        bump(&self.compliance, rule);
    }

    /// A call's STIR/SHAKEN verdict (`A`, `B`, `C`, `no_identity`, `failed:<reason>`).
    pub fn stir_verdict(&self, verdict: &str) {
        bump(&self.stir, verdict);
    }

    /// An INVITE reached the call controller (calls per second counts these).
    pub fn call_offered(&self) {
        self.calls_started.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls in progress now.
    pub fn set_active_calls(&self, n: usize) {
        self.active_calls.store(n as u64, Ordering::Relaxed);
    }

    /// A call entered a SIP worker's table (the gauge is node-wide: every worker counts into it).
    pub fn call_added(&self) {
        self.active_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A call left a SIP worker's table.
    pub fn call_removed(&self) {
        self.active_calls.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls in progress, as last set.
    pub fn active_calls(&self) -> u64 {
        self.active_calls.load(Ordering::Relaxed)
    }

    /// One auction took `d`.
    pub fn auction(&self, d: Duration) {
        let us = d.as_micros() as u64;
        if let Some(i) = AUCTION_BUCKETS_US.iter().position(|&b| us <= b) {
            self.auction_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.auction_count.fetch_add(1, Ordering::Relaxed);
        self.auction_sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A bid request to `buyer` ended with `kind` after `latency_ms`.
    pub fn rtb_ping(&self, buyer: &str, kind: &'static str, latency_ms: u32) {
        let mut m = self.rtb.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(buyer) {
            m.insert(buyer.to_owned(), RtbStats::default());
        }
        if let Some(st) = m.get_mut(buyer) {
            *st.outcomes.entry(kind).or_insert(0) += 1;
            if let Some(i) = RTB_BUCKETS_MS.iter().position(|&b| latency_ms <= b) {
                st.buckets[i] += 1;
            }
            st.count += 1;
            st.sum_ms += u64::from(latency_ms);
        }
    }

    /// RTP received over a call (both directions).
    pub fn rtp(&self, packets: u64, lost: u64) {
        self.rtp_packets.fetch_add(packets, Ordering::Relaxed);
        self.rtp_lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// A SIP message in (`"in"`) or out: a request by its method, a response by its code.
    /// Allocates only the first time a method or code is seen (this is the SIP hot path).
    pub fn sip(&self, dir: &'static str, first_line: &[u8]) {
        let Some((response, name)) = sip_label(first_line) else {
            return;
        };
        let i = usize::from(dir != "in") * 2 + usize::from(response);
        let mut maps = self.sip.lock().unwrap_or_else(|p| p.into_inner());
        match maps[i].get_mut(name) {
            Some(v) => *v += 1,
            None => {
                maps[i].insert(name.to_owned(), 1);
            }
        }
    }

    /// Calls offered per second over the last ten seconds; the caller samples about once a
    /// second (the metrics endpoint and the live page do).
    pub fn calls_per_second(&self) -> f64 {
        let now = Instant::now();
        let total = self.calls_started.load(Ordering::Relaxed);
        let mut w = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        if w.samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(500))
        {
            w.samples.push_back((now, total));
        }
        while w.samples.len() > 2 && now.duration_since(w.samples[0].0) > Duration::from_secs(10) {
            w.samples.pop_front();
        }
        match w.samples.front() {
            Some((t, n)) if now.duration_since(*t) >= Duration::from_millis(200) => {
                (total - n) as f64 / now.duration_since(*t).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Calls offered since start.
    pub fn calls_offered(&self) -> u64 {
        self.calls_started.load(Ordering::Relaxed)
    }

    /// The Prometheus text of these figures.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP dce_calls_total Calls by outcome (answered, failed, cancelled, rejected).\n# TYPE dce_calls_total counter\n");
        for (k, v) in self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "dce_calls_total{{outcome=\"{}\"}} {v}", label(k));
        }
        out.push_str("# HELP dce_compliance_rejections_total Calls refused by compliance, by rule.\n# TYPE dce_compliance_rejections_total counter\n");
        for (k, v) in self
            .compliance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "dce_compliance_rejections_total{{rule=\"{}\"}} {v}",
                label(k)
            );
        }
        out.push_str("# HELP dce_stir_verdicts_total Calls' STIR/SHAKEN verdicts (attestation A, B, C; no_identity; failed:<reason>).\n# TYPE dce_stir_verdicts_total counter\n");
        for (k, v) in self.stir.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "dce_stir_verdicts_total{{verdict=\"{}\"}} {v}",
                label(k)
            );
        }
        out.push_str("# HELP dce_sip_messages_total SIP messages received and sent: requests by method, responses by code.\n# TYPE dce_sip_messages_total counter\n");
        let maps = self.sip.lock().unwrap_or_else(|p| p.into_inner());
        for (i, m) in maps.iter().enumerate() {
            let dir = if i < 2 { "in" } else { "out" };
            let (kind, what) = if i % 2 == 1 {
                ("response", "code")
            } else {
                ("request", "method")
            };
            for (name, v) in m {
                let _ = writeln!(
                    out,
                    "dce_sip_messages_total{{direction=\"{dir}\",kind=\"{kind}\",{what}=\"{}\"}} {v}",
                    label(name)
                );
            }
        }
        drop(maps);
        let _ = writeln!(
            out,
            "# HELP dce_active_calls Calls in progress.\n# TYPE dce_active_calls gauge\ndce_active_calls {}",
            self.active_calls()
        );
        let _ = writeln!(
            out,
            "# HELP dce_calls_offered_total INVITEs that reached the call controller.\n# TYPE dce_calls_offered_total counter\ndce_calls_offered_total {}",
            self.calls_offered()
        );
        let _ = writeln!(
            out,
            "# HELP dce_calls_per_second Calls offered per second over the last ten seconds (or since the previous scrape, when scrapes are further apart).\n# TYPE dce_calls_per_second gauge\ndce_calls_per_second {:.3}",
            self.calls_per_second()
        );
        out.push_str("# HELP dce_auction_duration_seconds Time to run one auction.\n# TYPE dce_auction_duration_seconds histogram\n");
        let mut cum = 0;
        for (i, b) in AUCTION_BUCKETS_US.iter().enumerate() {
            cum += self.auction_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "dce_auction_duration_seconds_bucket{{le=\"{}\"}} {cum}",
                *b as f64 / 1e6
            );
        }
        let count = self.auction_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "dce_auction_duration_seconds_bucket{{le=\"+Inf\"}} {count}\ndce_auction_duration_seconds_sum {}\ndce_auction_duration_seconds_count {count}",
            self.auction_sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let rtb = self.rtb.lock().unwrap_or_else(|p| p.into_inner());
        if !rtb.is_empty() {
            out.push_str("# HELP dce_rtb_pings_total Bid requests to real-time bidders, by buyer and outcome.\n# TYPE dce_rtb_pings_total counter\n");
            for (buyer, st) in rtb.iter() {
                for (kind, v) in &st.outcomes {
                    let _ = writeln!(
                        out,
                        "dce_rtb_pings_total{{buyer=\"{}\",outcome=\"{kind}\"}} {v}",
                        label(buyer)
                    );
                }
            }
            out.push_str("# HELP dce_rtb_ping_duration_seconds Bid request to answer (or to the deadline), by buyer.\n# TYPE dce_rtb_ping_duration_seconds histogram\n");
            for (buyer, st) in rtb.iter() {
                let b = label(buyer);
                let mut cum = 0;
                for (i, le) in RTB_BUCKETS_MS.iter().enumerate() {
                    cum += st.buckets[i];
                    let _ = writeln!(
                        out,
                        "dce_rtb_ping_duration_seconds_bucket{{buyer=\"{b}\",le=\"{}\"}} {cum}",
                        f64::from(*le) / 1e3
                    );
                }
                let _ = writeln!(
                    out,
                    "dce_rtb_ping_duration_seconds_bucket{{buyer=\"{b}\",le=\"+Inf\"}} {}\ndce_rtb_ping_duration_seconds_sum{{buyer=\"{b}\"}} {}\ndce_rtb_ping_duration_seconds_count{{buyer=\"{b}\"}} {}",
                    st.count,
                    st.sum_ms as f64 / 1e3,
                    st.count
                );
            }
        }
        drop(rtb);
        let _ = writeln!(
            out,
            "# HELP dce_rtp_packets_total RTP packets received on ended calls (both legs).\n# TYPE dce_rtp_packets_total counter\ndce_rtp_packets_total {}",
            self.rtp_packets.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP dce_rtp_lost_total RTP packets lost (sequence gaps) on ended calls.\n# TYPE dce_rtp_lost_total counter\ndce_rtp_lost_total {}",
            self.rtp_lost.load(Ordering::Relaxed)
        );
    }
}

/// `(false, "INVITE")` for a request or `(true, "200")` for a response, from a message's
/// first line.
fn sip_label(first: &[u8]) -> Option<(bool, &str)> {
    let line = first.split(|&b| b == b'\r' || b == b'\n').next()?;
    let (response, name) = match line.strip_prefix(b"SIP/2.0 ") {
        Some(rest) => (true, rest.get(..3)?),
        None => (false, line.split(|&b| b == b' ').next()?),
    };
    let ok = if response {
        name.iter().all(u8::is_ascii_digit)
    } else {
        !name.is_empty() && name.len() <= 16 && name.iter().all(u8::is_ascii_uppercase)
    };
    // ASCII by the checks above
    ok.then(|| (response, std::str::from_utf8(name).unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sip_first_lines() {
        assert_eq!(
            sip_label(b"INVITE sip:x@y SIP/2.0\r\n"),
            Some((false, "INVITE"))
        );
        assert_eq!(sip_label(b"SIP/2.0 486 Busy Here\r\n"), Some((true, "486")));
        assert_eq!(sip_label(b"\x00garbage"), None);
        assert_eq!(sip_label(b"SIP/2.0 4x6 Busy\r\n"), None);
    }

    #[test]
    fn renders_histogram_and_labels() {
        let m = Metrics::default();
        m.auction(Duration::from_micros(7));
        m.auction(Duration::from_micros(70));
        m.auction(Duration::from_millis(50));
        m.call_outcome("answered");
        m.call_outcome("answered");
        m.compliance_rejection("DNC");
        m.sip("in", b"INVITE sip:a@b SIP/2.0");
        m.sip("out", b"SIP/2.0 200 OK");
        m.rtp(100, 3);
        m.set_active_calls(4);
        let mut s = String::new();
        m.render(&mut s);
        for want in [
            "dce_calls_total{outcome=\"answered\"} 2",
            "dce_compliance_rejections_total{rule=\"DNC\"} 1",
            "dce_sip_messages_total{direction=\"in\",kind=\"request\",method=\"INVITE\"} 1",
            "dce_sip_messages_total{direction=\"out\",kind=\"response\",code=\"200\"} 1",
            "dce_auction_duration_seconds_bucket{le=\"0.000005\"} 0",
            "dce_auction_duration_seconds_bucket{le=\"0.00001\"} 1",
            "dce_auction_duration_seconds_bucket{le=\"0.0001\"} 2",
            "dce_auction_duration_seconds_bucket{le=\"0.01\"} 2",
            "dce_auction_duration_seconds_bucket{le=\"+Inf\"} 3",
            "dce_auction_duration_seconds_count 3",
            "dce_rtp_packets_total 100",
            "dce_rtp_lost_total 3",
            "dce_active_calls 4",
        ] {
            assert!(s.contains(want), "missing {want} in\n{s}");
        }
    }

    #[test]
    fn calls_per_second_over_a_window() {
        let m = Metrics::default();
        assert_eq!(m.calls_per_second(), 0.0);
        for _ in 0..50 {
            m.call_offered();
        }
        std::thread::sleep(Duration::from_millis(600));
        let r = m.calls_per_second();
        // 50 calls arrived after the first sample; none since then is the honest reading of
        // a window that began before them.
        assert!(r > 0.0 && r <= 50.0 / 0.6 + 1.0, "rate {r}");
    }
}

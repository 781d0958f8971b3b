//! `[[carrier]]`, `[[campaign]]` and `[[buyer]]`: who may send calls, which numbers reach which
//! campaign, and who buys them.

use super::walk::{Table, Walk};
use dce_routing::{normalize, Buyer, BuyerAuth, Campaign, Schedule, State, StateSet};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a host route).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("prefix length `{l}` must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }

    /// Does the prefix contain `ip`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// One `[[carrier]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierConfig {
    /// Name.
    pub id: String,
    /// Source prefixes calls may come from.
    pub sources: Vec<Cidr>,
    /// New calls per second allowed; 0 = unlimited.
    pub max_cps: u32,
    /// `trust_verstat`: this carrier verifies STIR/SHAKEN itself; its `verstat` (and
    /// `P-Attestation-Indicator`) is taken instead of DCE verifying again.
    pub trust_verstat: bool,
}

/// Campaigns and buyers as read (buyers refer to campaigns by index).
#[derive(Debug, Clone, Default)]
pub struct RoutingConfig {
    /// Carriers.
    pub carriers: Vec<CarrierConfig>,
    /// Campaigns.
    pub campaigns: Vec<Campaign>,
    /// Buyers.
    pub buyers: Vec<Buyer>,
    /// The buyers' and carriers' `webhook = { … }`, by target (`buyer:<id>`, `carrier:<id>`).
    pub webhooks: crate::webhooks::Webhooks,
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn read_id(
    w: &mut Walk<'_>,
    t: Table<'_, '_>,
    what: &str,
    seen: &mut HashMap<String, usize>,
) -> Option<String> {
    let (id, span) = w.string(t, "id", true)?;
    if !id_ok(&id) {
        w.error(
            span,
            format!("{what} id `{id}` must be letters, digits, '-', '_' or '.'"),
        );
        return None;
    }
    if let Some(line) = seen.insert(id.clone(), w.line_of(span.start)) {
        w.error(
            span,
            format!("{what} `{id}` is defined twice (first on line {line})"),
        );
    }
    Some(id)
}

fn u32_key(w: &mut Walk<'_>, t: Table<'_, '_>, key: &str, default: u32) -> u32 {
    w.int(t, key, 0, u32::MAX as i64)
        .map(|(v, _)| v as u32)
        .unwrap_or(default)
}

/// Read `[[carrier]]`, `[[campaign]]`, `[[buyer]]` from the root table.
pub fn read(w: &mut Walk<'_>, root: Table<'_, '_>) -> RoutingConfig {
    let mut cfg = RoutingConfig::default();
    let mut seen = HashMap::new();
    for t in w.tables(root, "carrier", "carrier") {
        w.unknown_keys(t, &["id", "sources", "max_cps", "webhook", "trust_verstat"]);
        let id = read_id(w, t, "carrier", &mut seen);
        let hook = w
            .table(t, "webhook", "carrier.webhook", false)
            .and_then(|h| webhook(w, h, "carrier"));
        if let (Some(id), Some(hook)) = (&id, hook) {
            cfg.webhooks.insert(format!("carrier:{id}"), hook);
        }
        let mut sources = Vec::new();
        for (s, span) in w.strings(t, "sources", true).unwrap_or_default() {
            match Cidr::parse(&s) {
                Ok(c) => sources.push(c),
                Err(e) => w.error(span, format!("bad CIDR `{s}`: {e}")),
            }
        }
        let max_cps = u32_key(w, t, "max_cps", 0);
        let trust_verstat = w.boolean(t, "trust_verstat").unwrap_or(false);
        if let Some(id) = id {
            cfg.carriers.push(CarrierConfig {
                id,
                sources,
                max_cps,
                trust_verstat,
            });
        }
    }

    let mut seen = HashMap::new();
    let mut number_owner: HashMap<String, (String, usize)> = HashMap::new();
    let mut campaign_index = HashMap::new();
    for t in w.tables(root, "campaign", "campaign") {
        w.unknown_keys(
            t,
            &[
                "id",
                "numbers",
                "billable_after_s",
                "floor_cents",
                "max_duration_s",
                "bill_one_way_audio",
                "dnc",
                "tcpa_hours",
                "require_consent",
                "auction_deadline_ms",
                "publisher_margin",
                "reservation_s",
                "duplicates",
                "reroute_if_buyer_hangs_up_within_s",
                "max_reroutes",
                "stir",
                "record",
            ],
        );
        let id = read_id(w, t, "campaign", &mut seen);
        let mut numbers = Vec::new();
        for (n, span) in w.strings(t, "numbers", true).unwrap_or_default() {
            match normalize(&n) {
                Some(e164) => {
                    let line = w.line_of(span.start);
                    if let Some((other, first_line)) = number_owner.get(&e164) {
                        w.error(
                            span.clone(),
                            format!(
                                "number `{n}` is already in campaign `{other}` (line {first_line})"
                            ),
                        );
                    } else {
                        number_owner.insert(e164.clone(), (id.clone().unwrap_or_default(), line));
                    }
                    numbers.push(e164);
                }
                None => w.error(
                    span,
                    format!("`{n}` is not a phone number (E.164 or 10-digit NANP)"),
                ),
            }
        }
        let billable_after_s = u32_key(w, t, "billable_after_s", 90);
        let floor_cents = u32_key(w, t, "floor_cents", 0);
        let bill_one_way_audio = w.boolean(t, "bill_one_way_audio").unwrap_or(true);
        let dnc = w.boolean(t, "dnc").unwrap_or(true);
        let tcpa_hours = w.boolean(t, "tcpa_hours").unwrap_or(true);
        let require_consent = w.boolean(t, "require_consent").unwrap_or(false);
        let max_duration_s = w
            .int(t, "max_duration_s", 1, 86_400)
            .map(|(v, _)| v as u32)
            .unwrap_or(7200);
        let auction_deadline_ms = w
            .int(t, "auction_deadline_ms", 10, 10_000)
            .map(|(v, _)| v as u32)
            .unwrap_or(250);
        let publisher_margin_ppm = w
            .fraction(t, "publisher_margin")
            .map(|(f, _)| (f * 1_000_000.0).round() as u32)
            .unwrap_or(0);
        let reservation_s = w
            .int(t, "reservation_s", 1, 3600)
            .map(|(v, _)| v as u32)
            .unwrap_or(60);
        let duplicates = duplicate_rule(w, t, "campaign");
        let reroute_within_s = w
            .int(t, "reroute_if_buyer_hangs_up_within_s", 0, 3600)
            .map(|(v, _)| v as u32)
            .unwrap_or(0);
        let max_reroutes = w
            .int(t, "max_reroutes", 0, 10)
            .map(|(v, _)| v as u32)
            .unwrap_or(2);
        let record = w.boolean(t, "record").unwrap_or(false);
        let stir = w
            .table(t, "stir", "campaign.stir", false)
            .map(|st| super::stir::campaign_policy(w, st))
            .unwrap_or_default();
        if let Some(id) = id {
            campaign_index.insert(id.clone(), cfg.campaigns.len());
            cfg.campaigns.push(Campaign {
                id,
                numbers,
                billable_after_s,
                floor_cents,
                max_duration_s,
                bill_one_way_audio,
                dnc,
                tcpa_hours,
                require_consent,
                auction_deadline_ms,
                publisher_margin_ppm,
                reservation_s,
                duplicates,
                reroute_within_s,
                max_reroutes,
                stir,
                record,
            });
        }
    }

    let mut seen = HashMap::new();
    for t in w.tables(root, "buyer", "buyer") {
        w.unknown_keys(
            t,
            &[
                "id",
                "campaigns",
                "uri",
                "bid_cents",
                "max_concurrent",
                "hourly_cap",
                "daily_cap",
                "daily_budget_cents",
                "monthly_cap",
                "monthly_budget_cents",
                "pause_after_unanswered",
                "duplicates",
                "states",
                "schedule",
                "priority",
                "auth",
                "headers",
                "codecs",
                "from_user",
                "health",
                "tls_ca",
                "rtb",
                "expose_caller",
                "webhook",
                "min_attestation",
                "record",
                "attestation_bid",
            ],
        );
        let id = read_id(w, t, "buyer", &mut seen);
        let hook = w
            .table(t, "webhook", "buyer.webhook", false)
            .and_then(|h| webhook(w, h, "buyer"));
        if let (Some(id), Some(hook)) = (&id, hook) {
            cfg.webhooks.insert(format!("buyer:{id}"), hook);
        }
        let mut campaigns = Vec::new();
        for (c, span) in w.strings(t, "campaigns", true).unwrap_or_default() {
            match campaign_index.get(&c) {
                Some(&i) => campaigns.push(i),
                None => w.error(
                    span,
                    format!("buyer campaign `{c}` is not a [[campaign]] id"),
                ),
            }
        }
        let uri = match w.string(t, "uri", true) {
            Some((u, span)) => {
                if let Err(e) = target_of(&u, "18005550100", "13105551234") {
                    w.error(span, e);
                }
                u
            }
            None => String::new(),
        };
        let bid_cents = u32_key(w, t, "bid_cents", 0);
        let max_concurrent = u32_key(w, t, "max_concurrent", 0);
        let hourly_cap = u32_key(w, t, "hourly_cap", 0);
        let daily_cap = u32_key(w, t, "daily_cap", 0);
        let daily_budget_cents = w
            .int(t, "daily_budget_cents", 0, i64::MAX)
            .map(|(v, _)| v as u64)
            .unwrap_or(0);
        let monthly_cap = u32_key(w, t, "monthly_cap", 0);
        let monthly_budget_cents = w
            .int(t, "monthly_budget_cents", 0, i64::MAX)
            .map(|(v, _)| v as u64)
            .unwrap_or(0);
        let pause_after_unanswered = w
            .table(
                t,
                "pause_after_unanswered",
                "buyer.pause_after_unanswered",
                false,
            )
            .map(|pt| {
                w.unknown_keys(pt, &["in_hour", "in_day"]);
                let rule = dce_routing::PauseRule {
                    in_hour: w
                        .int(pt, "in_hour", 0, 100_000)
                        .map_or(0, |(v, _)| v as u32),
                    in_day: w
                        .int(pt, "in_day", 0, 1_000_000)
                        .map_or(0, |(v, _)| v as u32),
                };
                if !rule.is_set() {
                    w.error(
                        w.span_of(t, "pause_after_unanswered"),
                        "buyer pause_after_unanswered needs in_hour or in_day above 0",
                    );
                }
                rule
            })
            .unwrap_or_default();
        let duplicates = duplicate_rule(w, t, "buyer");
        let mut states = StateSet::default();
        for (s, span) in w.strings(t, "states", false).unwrap_or_default() {
            match State::parse(&s) {
                Some(st) => states.insert(st),
                None => w.error(span, format!("`{s}` is not a US state code")),
            }
        }
        let schedule = w
            .table(t, "schedule", "buyer.schedule", false)
            .and_then(|st| {
                w.unknown_keys(st, &["tz", "days", "open", "close"]);
                let tz = w.string(st, "tz", true);
                let days = w
                    .string(st, "days", false)
                    .map(|d| d.0)
                    .unwrap_or_else(|| "daily".into());
                let open = w.string(st, "open", true);
                let close = w.string(st, "close", true);
                let (tz, open, close) = (tz?, open?, close?);
                match Schedule::parse(&tz.0, &days, &open.0, &close.0) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        w.error(w.span_of(t, "schedule"), format!("buyer schedule: {e}"));
                        None
                    }
                }
            });
        let priority = w
            .int(t, "priority", i32::MIN as i64, i32::MAX as i64)
            .map(|(v, _)| v as i32)
            .unwrap_or(0);
        let auth = w
            .table(t, "auth", "buyer.auth", false)
            .and_then(|at| buyer_auth(w, at, w.span_of(t, "auth")));
        let (headers, codecs, from_user) = buyer_profile(w, t);
        let tls_ca = w.string(t, "tls_ca", false).and_then(|(p, span)| {
            match crate::transport::pki::client_config(Some(std::path::Path::new(&p))) {
                Ok(_) => Some(p),
                Err(e) => {
                    w.error(span, format!("buyer tls_ca: {e}"));
                    None
                }
            }
        });
        let health = w.table(t, "health", "buyer.health", false).map(|ht| {
            w.unknown_keys(
                ht,
                &[
                    "interval_s",
                    "down_after",
                    "up_after",
                    "fail_calls",
                    "cooldown_s",
                ],
            );
            let mut int = |k: &str, min: i64, max: i64, d: u32| {
                w.int(ht, k, min, max).map_or(d, |(v, _)| v as u32)
            };
            dce_routing::BuyerHealth {
                interval_s: int("interval_s", 0, 3_600, 30),
                down_after: int("down_after", 1, 100, 3),
                up_after: int("up_after", 1, 100, 2),
                fail_calls: int("fail_calls", 0, 1_000, 5),
                cooldown_s: int("cooldown_s", 1, 86_400, 30),
            }
        });
        let expose_caller = w.boolean(t, "expose_caller").unwrap_or(false);
        let rtb = w
            .table(t, "rtb", "buyer.rtb", false)
            .and_then(|rt| buyer_rtb(w, rt, expose_caller))
            .map(std::sync::Arc::new);
        let min_attestation = super::stir::min_attestation(w, t);
        let record = w.boolean(t, "record").unwrap_or(false);
        let attestation_bid = w
            .table(t, "attestation_bid", "buyer.attestation_bid", false)
            .map(|at| super::stir::attestation_bid(w, at))
            .unwrap_or_default();
        if let Some(id) = id {
            cfg.buyers.push(Buyer {
                id,
                campaigns,
                uri,
                bid_cents,
                max_concurrent,
                hourly_cap,
                daily_cap,
                daily_budget_cents,
                monthly_cap,
                monthly_budget_cents,
                pause_after_unanswered,
                duplicates,
                states,
                schedule,
                priority,
                auth,
                headers,
                codecs,
                from_user,
                health,
                tls_ca,
                rtb,
                min_attestation,
                record,
                attestation_bid,
            });
        }
    }
    cfg
}

/// `duplicates = { window_days, after = "routed"|"connected"|"billable",
/// action = "reject"|"same_buyer"|"not_billable"|"next_buyer" }` of a campaign or a buyer.
fn duplicate_rule(
    w: &mut Walk<'_>,
    t: Table<'_, '_>,
    of: &str,
) -> Option<dce_routing::DuplicateRule> {
    let what = format!("{of}.duplicates");
    let dt = w.table(t, "duplicates", &what, false)?;
    w.unknown_keys(dt, &["window_days", "after", "action"]);
    let window_days = w.int(dt, "window_days", 1, 3_650).map(|(v, _)| v as u32);
    if !w.has(dt, "window_days") {
        w.error(
            w.span_of(t, "duplicates"),
            format!("{what} needs window_days (1 to 3650)"),
        );
    }
    let after = match w.string(dt, "after", false) {
        None => Some(dce_routing::DupStage::Routed),
        Some((s, span)) => {
            let st = dce_routing::DupStage::parse(&s);
            if st.is_none() {
                w.error(
                    span,
                    format!("{what}.after `{s}` is not one of routed, connected, billable"),
                );
            }
            st
        }
    };
    let action = match w.string(dt, "action", true) {
        None => None,
        Some((s, span)) => {
            let a = dce_routing::DupAction::parse(&s);
            if a.is_none() {
                w.error(
                    span,
                    format!(
                        "{what}.action `{s}` is not one of reject, same_buyer, not_billable, next_buyer"
                    ),
                );
            }
            a
        }
    };
    Some(dce_routing::DuplicateRule {
        window_days: window_days?,
        after: after?,
        action: action?,
    })
}

/// The required `url` of table `t`: an http:// or https:// URL with a host (`label` names it
/// in the error).
fn http_url(w: &mut Walk<'_>, t: Table<'_, '_>, label: &str) -> Option<String> {
    let (u, span) = w.string(t, "url", true)?;
    match u.parse::<hyper::Uri>() {
        Ok(p) if matches!(p.scheme_str(), Some("http" | "https")) && p.host().is_some() => Some(u),
        _ => {
            w.error(
                span,
                format!("{label} `{u}` must be an http:// or https:// URL"),
            );
            None
        }
    }
}

/// `webhook = { url, secret, events = [ … ] }` of a buyer or a carrier (`what`).
fn webhook(w: &mut Walk<'_>, h: Table<'_, '_>, what: &str) -> Option<crate::webhooks::Webhook> {
    w.unknown_keys(h, &["url", "secret", "events"]);
    let url = http_url(w, h, &format!("{what} webhook url"));
    let secret = match w.string(h, "secret", true) {
        Some((s, span)) if s.len() < 16 => {
            w.error(
                span,
                format!("{what} webhook secret must be at least 16 characters"),
            );
            None
        }
        Some((s, _)) => Some(s),
        None => None,
    };
    let mut events = Vec::new();
    for (e, span) in w.strings(h, "events", true).unwrap_or_default() {
        match crate::webhooks::Event::parse(&e) {
            Some(e) => events.push(e),
            None => w.error(
                span,
                format!(
                    "unknown webhook event `{e}` (call.routed, call.answered, call.completed, call.billable, call.converted)"
                ),
            ),
        }
    }
    Some(crate::webhooks::Webhook::new(&url?, &secret?, &events))
}

/// `rtb = { url = "https://…", timeout_ms = 200, format = "dce"|"ringba"|"retreaver",
/// headers = { "Authorization" = "…" } }`.
fn buyer_rtb(w: &mut Walk<'_>, rt: Table<'_, '_>, expose_caller: bool) -> Option<dce_routing::Rtb> {
    w.unknown_keys(
        rt,
        &[
            "url",
            "timeout_ms",
            "format",
            "headers",
            "max_in_flight",
            "max_pings_per_s",
        ],
    );
    // A default cap: a bidder slower than the deadline must not get a new connection per call
    // without bound (decision 0014, the 1,000 calls/s run).
    let max_in_flight = w
        .int(rt, "max_in_flight", 0, 100_000)
        .map_or(100, |(v, _)| v as u32);
    let max_pings_per_s = w
        .int(rt, "max_pings_per_s", 0, 1_000_000)
        .map_or(0, |(v, _)| v as u32);
    let url = http_url(w, rt, "buyer rtb url");
    let timeout_ms = w
        .int(rt, "timeout_ms", 10, 10_000)
        .map_or(250, |(v, _)| v as u32);
    let format = match w.string(rt, "format", false) {
        None => Some(dce_routing::RtbFormat::Dce),
        Some((f, fspan)) => {
            let parsed = dce_routing::RtbFormat::parse(&f);
            if parsed.is_none() {
                w.error(
                    fspan,
                    format!("buyer rtb format `{f}` is not one of dce, ringba, retreaver"),
                );
            }
            parsed
        }
    };
    let mut headers = Vec::new();
    if let Some(ht) = w.table(rt, "headers", "buyer.rtb.headers", false) {
        for name in w.keys(ht) {
            let Some((value, vspan)) = w.string(ht, &name, true) else {
                continue;
            };
            let ok_name = hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
            let ok_value = hyper::header::HeaderValue::from_str(&value).is_ok();
            if !ok_name {
                w.error(
                    vspan,
                    format!("buyer rtb headers: `{name}` is not a header name"),
                );
            } else if !ok_value {
                w.error(
                    vspan,
                    format!("buyer rtb headers: `{name}` has a value HTTP cannot carry"),
                );
            } else if headers.len() == 16 {
                w.error(vspan, "buyer rtb headers: at most 16");
            } else {
                headers.push((name, value));
            }
        }
    }
    Some(dce_routing::Rtb {
        url: url?,
        timeout_ms,
        format: format?,
        headers,
        expose_caller,
        max_in_flight,
        max_pings_per_s,
    })
}

/// The buyer's SIP profile: `headers = { "X-Name" = "template" }`, `codecs = ["PCMU", …]`,
/// `from_user = "template"` — every template checked (fields, control characters), every header
/// name a token that DCE does not own.
#[allow(clippy::type_complexity)]
fn buyer_profile(
    w: &mut Walk<'_>,
    t: Table<'_, '_>,
) -> (Vec<(String, String)>, Vec<String>, Option<String>) {
    use super::template;
    let mut headers = Vec::new();
    if let Some(ht) = w.table(t, "headers", "buyer.headers", false) {
        for name in w.keys(ht) {
            let Some((value, span)) = w.string(ht, &name, true) else {
                continue;
            };
            if !template::header_name_ok(&name) {
                w.error(
                    span,
                    format!("buyer headers: `{name}` is not a header name"),
                );
            } else if template::reserved_header(&name) {
                w.error(
                    span,
                    format!("buyer headers: `{name}` is set by DCE and cannot be configured"),
                );
            } else if let Err(e) = template::check(&value) {
                w.error(span, format!("buyer headers: `{name}` {e}"));
            } else if value.len() > 512 {
                w.error(
                    span,
                    format!("buyer headers: `{name}` is over 512 characters"),
                );
            } else if headers.len() == 16 {
                w.error(span, "buyer headers: at most 16");
            } else {
                headers.push((name, value));
            }
        }
    }
    let mut codecs = Vec::new();
    for (c, span) in w.strings(t, "codecs", false).unwrap_or_default() {
        if c.is_empty()
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            w.error(
                span,
                format!("buyer codecs: `{c}` is not an encoding name (PCMU, PCMA, G729, opus …)"),
            );
        } else if ["telephone-event", "cn"].contains(&c.to_ascii_lowercase().as_str()) {
            w.error(
                span,
                format!("buyer codecs: `{c}` is always kept; list audio codecs only"),
            );
        } else {
            codecs.push(c);
        }
    }
    let from_user = w.string(t, "from_user", false).and_then(|(f, span)| {
        let literal_ok = template::expand(
            &f,
            &template::Fields {
                caller: "1",
                called: "1",
                carrier: "c",
                campaign: "c",
                buyer: "b",
                call_id: "i",
            },
        )
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b));
        match template::check(&f) {
            Err(e) => {
                w.error(span, format!("buyer from_user {e}"));
                None
            }
            Ok(()) if f.is_empty() || !literal_ok => {
                w.error(span, "buyer from_user must be a SIP user part (letters, digits, -_.!~*'() …) with template fields");
                None
            }
            Ok(()) => Some(f),
        }
    });
    (headers, codecs, from_user)
}

/// `auth = { user = "…", password_env = "VAR" }` or `password_file = "FILE"`: the password
/// comes from the environment or a file, never from the config itself, and it must be there
/// when the config is loaded (`dce check-config` says so, naming the variable or file, never
/// the value).
fn buyer_auth(
    w: &mut Walk<'_>,
    at: Table<'_, '_>,
    span: std::ops::Range<usize>,
) -> Option<BuyerAuth> {
    w.unknown_keys(at, &["user", "password_env", "password_file"]);
    let user = w.string(at, "user", true);
    let env = w.string(at, "password_env", false);
    let file = w.string(at, "password_file", false);
    let password = match (env, file) {
        (Some(_), Some(_)) => {
            w.error(
                span,
                "buyer auth: set password_env or password_file, not both",
            );
            return None;
        }
        (None, None) => {
            w.error(
                span,
                "buyer auth needs password_env (an environment variable) or password_file; a password is never written in the config",
            );
            return None;
        }
        (Some((var, vspan)), None) => match std::env::var(&var) {
            Ok(p) if !p.is_empty() => p,
            _ => {
                w.error(
                    vspan,
                    format!("buyer auth: environment variable {var} is not set"),
                );
                return None;
            }
        },
        (None, Some((path, fspan))) => match std::fs::read_to_string(&path) {
            Ok(p) if !p.trim_end_matches(['\r', '\n']).is_empty() => {
                p.trim_end_matches(['\r', '\n']).to_string()
            }
            Ok(_) => {
                w.error(fspan, format!("buyer auth: password file {path} is empty"));
                return None;
            }
            Err(e) => {
                w.error(
                    fspan,
                    format!("buyer auth: cannot read password file {path}: {e}"),
                );
                return None;
            }
        },
    };
    let (user, uspan) = user?;
    if user.is_empty() || user.contains(['"', '\\']) || user.chars().any(char::is_control) {
        w.error(uspan, "buyer auth: user must be a non-empty name without quotes, backslashes or control characters");
        return None;
    }
    Some(BuyerAuth::new(user, password))
}

/// Where a buyer's calls go: an address, or a host name the resolver looks up in the
/// background (RFC 3263; [`crate::dns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal (with the URI's port, or 5060) and the transport the URI names.
    Ip(SocketAddr, crate::dns::Transport),
    /// A host name: its targets come from the DNS table under [`crate::dns::Dest::key`].
    Name(crate::dns::Dest),
}

/// Where a buyer URI template sends a call: the URI and its host. The host must not depend on
/// the call (`{called}`/`{caller}` belong in the user part), so its lookup can be made before
/// any call needs it.
pub fn target_of(
    template: &str,
    called: &str,
    caller: &str,
) -> Result<(String, TargetHost), String> {
    let uri = template
        .replace("{called}", called)
        .replace("{caller}", caller);
    if uri.contains(['{', '}']) {
        return Err(format!(
            "buyer uri `{template}`: only `{{called}}` and `{{caller}}` can be filled in a URI"
        ));
    }
    let parsed = dce_sip::Uri::parse(&uri)
        .map_err(|e| format!("buyer uri `{template}` does not parse ({e:?})"))?;
    if !parsed.is_sip() {
        return Err(format!("buyer uri `{template}` must be sip: or sips:"));
    }
    // The template's host part: after the scheme and any user part, before port and params.
    let rest = template.split_once(':').map_or(template, |(_, r)| r);
    let host_part = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_part = host_part.split([';', '?', '>']).next().unwrap_or("");
    if host_part.contains(['{', '}']) {
        return Err(format!(
            "buyer uri `{template}`: the host cannot hold a template field (`{{called}}` and `{{caller}}` go in the user part)"
        ));
    }
    let transport = match parsed.param("transport").flatten() {
        None => None,
        Some(t) if t.eq_ignore_ascii_case("udp") => Some(crate::dns::Transport::Udp),
        Some(t) if t.eq_ignore_ascii_case("tcp") => Some(crate::dns::Transport::Tcp),
        Some(t) if t.eq_ignore_ascii_case("tls") => Some(crate::dns::Transport::Tls),
        Some(t) => {
            return Err(format!(
                "buyer uri `{template}`: transport `{t}` is not supported towards buyers (udp, tcp, tls)"
            ))
        }
    };
    let sips = uri
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("sips:"));
    if sips && matches!(transport, Some(t) if t != crate::dns::Transport::Tls) {
        return Err(format!(
            "buyer uri `{template}`: a sips: URI goes over TLS only"
        ));
    }
    let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((
            uri.clone(),
            TargetHost::Ip(
                SocketAddr::new(
                    ip,
                    parsed.port.unwrap_or(
                        if sips || transport == Some(crate::dns::Transport::Tls) {
                            5061
                        } else {
                            5060
                        },
                    ),
                ),
                if sips {
                    crate::dns::Transport::Tls
                } else {
                    transport.unwrap_or(crate::dns::Transport::Udp)
                },
            ),
        ));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !valid {
        return Err(format!(
            "buyer uri `{template}`: `{host}` is not a valid host name"
        ));
    }
    let dest = crate::dns::Dest {
        host: name,
        port: parsed.port,
        transport: if sips { None } else { transport },
        sips,
    };
    Ok((uri, TargetHost::Name(dest)))
}

/// The host names the buyers of `buyers` need resolved (each once).
pub fn dests(buyers: &[dce_routing::Buyer]) -> Vec<crate::dns::Dest> {
    let mut v: Vec<crate::dns::Dest> = Vec::new();
    for b in buyers {
        if let Ok((_, TargetHost::Name(d))) = target_of(&b.uri, "1", "1") {
            if !v.contains(&d) {
                v.push(d);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense/8").is_err());
        assert!(Cidr::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
    }

    #[test]
    fn buyer_targets() {
        let (uri, host) = target_of("sip:{called}@127.0.0.1:5090", "18005550100", "1310").unwrap();
        assert_eq!(uri, "sip:18005550100@127.0.0.1:5090");
        assert_eq!(
            host,
            TargetHost::Ip(
                "127.0.0.1:5090".parse().unwrap(),
                crate::dns::Transport::Udp
            )
        );
        let (_, host) = target_of("sip:{called}@127.0.0.1:5090;transport=tcp", "1", "2").unwrap();
        assert_eq!(
            host,
            TargetHost::Ip(
                "127.0.0.1:5090".parse().unwrap(),
                crate::dns::Transport::Tcp
            )
        );
        let (_, host) = target_of("sip:{called}@SIP.Buyer.example.com.", "1", "2").unwrap();
        let TargetHost::Name(d) = host else {
            panic!("a name")
        };
        assert_eq!(
            (d.host.as_str(), d.port, d.transport),
            ("sip.buyer.example.com", None, None)
        );
        let (_, host) =
            target_of("sip:{called}@buyer.example:5080;transport=UDP", "1", "2").unwrap();
        assert_eq!(
            host,
            TargetHost::Name(crate::dns::Dest {
                host: "buyer.example".into(),
                port: Some(5080),
                transport: Some(crate::dns::Transport::Udp),
                sips: false,
            })
        );
        for (bad, says) in [
            ("sip:{called}@127.0.0.1;transport=sctp", "transport `sctp`"),
            ("sips:{called}@buyer.example;transport=tcp", "TLS only"),
            ("sip:1@{called}.example", "template field"),
            ("sip:{calld}@127.0.0.1", "only `{called}` and `{caller}`"),
            ("sip:1@bad_-.ex-", "does not parse"),
            ("sip:1@a..b", "not a valid host name"),
        ] {
            let e = target_of(bad, "1", "2").unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

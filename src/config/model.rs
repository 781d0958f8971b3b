//! The typed configuration and its checks.

use super::routing::{self, RoutingConfig};
use super::walk::{parse_root, ConfigError, Table, Walk};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything DCE runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[node]`
    pub node: NodeConfig,
    /// `[sip]`
    pub sip: SipConfig,
    /// `[[carrier]]`, `[[campaign]]`, `[[buyer]]`
    pub routing: RoutingConfig,
    /// `[cdr]`
    pub cdr: CdrConfig,
    /// `[media]`
    pub media: MediaConfig,
    /// `[compliance]`
    pub compliance: super::ComplianceConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[http]`
    pub http: super::HttpConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[dns]`
    pub dns: DnsConfig,
    /// `[stir]`: verify callers' `Identity` (none: not verified).
    pub stir: Option<super::StirConfig>,
}

/// `[dns]`: how buyer host names are resolved (RFC 3263, in the background).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers (`IP:PORT`); empty = the system's (`/etc/resolv.conf`).
    pub servers: Vec<std::net::SocketAddr>,
    /// One query's timeout (each is tried twice).
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_millis(2000),
        }
    }
}

fn dns(w: &mut Walk<'_>, root: Table<'_, '_>) -> DnsConfig {
    let mut c = DnsConfig::default();
    let Some(t) = w.table(root, "dns", "dns", false) else {
        return c;
    };
    w.unknown_keys(t, &["servers", "timeout_ms"]);
    for (s, span) in w.strings(t, "servers", false).unwrap_or_default() {
        match s.parse() {
            Ok(a) => c.servers.push(a),
            Err(_) => w.error(
                span,
                format!(
                    "`dns.servers`: `{s}` is not IP:PORT (e.g. \"127.0.0.1:53\" or \"[::1]:53\")"
                ),
            ),
        }
    }
    if let Some((v, _)) = w.int(t, "timeout_ms", 50, 30_000) {
        c.timeout = Duration::from_millis(v as u64);
    }
    c
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `format = "json"`: one JSON object per line (default `"text"`).
    pub json: bool,
    /// Mask phone numbers in logs and live events (default true).
    pub mask_numbers: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            json: false,
            mask_numbers: true,
        }
    }
}

fn log(w: &mut Walk<'_>, root: Table<'_, '_>) -> LogConfig {
    let Some(t) = w.table(root, "log", "log", false) else {
        return LogConfig::default();
    };
    w.unknown_keys(t, &["format", "mask_numbers"]);
    let json = match w.string(t, "format", false) {
        None => false,
        Some((f, span)) => match f.as_str() {
            "text" => false,
            "json" => true,
            _ => {
                w.error(span, "`log.format` must be \"text\" or \"json\"");
                false
            }
        },
    };
    LogConfig {
        json,
        mask_numbers: w.boolean(t, "mask_numbers").unwrap_or(true),
    }
}

/// `[storage]` (the parts in use so far: the shared state in Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `redis://…`; none = single node, in-process state.
    pub redis_url: Option<String>,
    /// A Redis Cluster's seed nodes (`redis://host:port` each); empty = none. Exclusive with
    /// `redis_url`.
    pub redis_cluster: Vec<String>,
    /// Prefix of every key DCE writes (several fleets can share one Redis).
    pub redis_key_prefix: String,
    /// Deadline of a Redis round trip on the call path.
    pub redis_timeout: Duration,
    /// `sqlite://…` (default `sqlite://dce.db`) or `postgres://…`.
    pub database_url: String,
    /// Where CDRs wait while the database is away.
    pub spool_dir: PathBuf,
    /// Apply migrations at start.
    pub auto_migrate: bool,
    /// Anonymise caller and called numbers older than this many days (0 = never).
    pub anonymize_after_days: u32,
    /// What a capped buyer's attempt does when Redis cannot read its fleet-wide caps.
    pub on_cap_error: crate::call::CapPolicy,
    /// How long a fleet-wide concurrency slot outlives its last renewal (`cap_lease_s`): a
    /// node that dies gives its slots back within this.
    pub cap_lease: Duration,
}

impl StorageConfig {
    /// Where the fleet's Redis is, if anywhere.
    pub fn redis(&self) -> Option<crate::redis_conn::RedisTarget> {
        use crate::redis_conn::RedisTarget;
        match &self.redis_url {
            Some(url) => Some(RedisTarget::Single(url.clone())),
            None if !self.redis_cluster.is_empty() => {
                Some(RedisTarget::Cluster(self.redis_cluster.clone()))
            }
            None => None,
        }
    }
}

fn storage(w: &mut Walk<'_>, root: Table<'_, '_>) -> StorageConfig {
    let mut c = StorageConfig {
        redis_url: None,
        redis_cluster: Vec::new(),
        redis_key_prefix: "dce".into(),
        redis_timeout: Duration::from_millis(5),
        database_url: "sqlite://dce.db".into(),
        spool_dir: "spool".into(),
        auto_migrate: true,
        anonymize_after_days: 180,
        on_cap_error: crate::call::CapPolicy::Local,
        cap_lease: Duration::from_secs(15),
    };
    let Some(t) = w.table(root, "storage", "storage", false) else {
        return c;
    };
    w.unknown_keys(
        t,
        &[
            "redis_url",
            "redis_cluster",
            "redis_key_prefix",
            "redis_timeout_ms",
            "database_url",
            "spool_dir",
            "auto_migrate",
            "retention",
            "on_cap_error",
            "cap_lease_s",
        ],
    );
    if let Some((url, span)) = w.string(t, "database_url", false) {
        if url.is_empty() {
            // keep the default
        } else if url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            c.database_url = url;
        } else {
            w.error(
                span,
                "`storage.database_url` must be sqlite://FILE or postgres://…",
            );
        }
    }
    if let Some((d, _)) = w.string(t, "spool_dir", false) {
        c.spool_dir = d.into();
    }
    if let Some(b) = w.boolean(t, "auto_migrate") {
        c.auto_migrate = b;
    }
    if let Some(r) = w.table(t, "retention", "storage.retention", false) {
        w.unknown_keys(r, &["anonymize_after_days"]);
        if let Some((d, _)) = w.int(r, "anonymize_after_days", 0, 36_500) {
            c.anonymize_after_days = d as u32;
        }
    }
    if let Some((url, span)) = w.string(t, "redis_url", false) {
        if !url.is_empty() {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                w.error(
                    span,
                    "`storage.redis_url` must start with redis:// (or be empty)",
                );
            }
            c.redis_url = Some(url);
        }
    }
    if let Some(seeds) = w.strings(t, "redis_cluster", false) {
        if c.redis_url.is_some() && !seeds.is_empty() {
            let span = w.span_of(t, "redis_cluster");
            w.error(
                span,
                "`storage.redis_cluster` and `storage.redis_url` exclude each other: set one (a Cluster's seed nodes, or one server)",
            );
        }
        for (url, span) in seeds {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                w.error(
                    span,
                    format!("`storage.redis_cluster` node `{url}` must start with redis://"),
                );
                continue;
            }
            match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                Ok(_) => c.redis_cluster.push(url),
                Err(e) => w.error(
                    span,
                    format!("`storage.redis_cluster` node `{url}` is not a usable Redis URL: {e}"),
                ),
            }
        }
    }
    if let Some((p, span)) = w.string(t, "redis_key_prefix", false) {
        if !c.redis_cluster.is_empty() && p.contains(['{', '}']) {
            w.error(
                span,
                "`storage.redis_key_prefix` must not contain `{` or `}` with `redis_cluster`: DCE writes the keys' hash tags itself",
            );
        }
        c.redis_key_prefix = p;
    }
    if let Some((ms, _)) = w.int(t, "redis_timeout_ms", 1, 10_000) {
        c.redis_timeout = Duration::from_millis(ms as u64);
    }
    if let Some((v, span)) = w.string(t, "on_cap_error", false) {
        c.on_cap_error = match v.as_str() {
            "local" => crate::call::CapPolicy::Local,
            "skip_buyer" => crate::call::CapPolicy::SkipBuyer,
            _ => {
                w.error(
                    span,
                    "`storage.on_cap_error` must be \"local\" or \"skip_buyer\"",
                );
                crate::call::CapPolicy::Local
            }
        };
    }
    if let Some((s, _)) = w.int(t, "cap_lease_s", 3, 3600) {
        c.cap_lease = Duration::from_secs(s as u64);
    }
    c
}

/// `[media]`: the RTP relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Address media sockets bind to.
    pub bind_ip: std::net::IpAddr,
    /// Address written into SDP `c=` lines.
    pub advertised_ip: std::net::IpAddr,
    /// Lowest RTP port.
    pub port_min: u16,
    /// Highest RTP port.
    pub port_max: u16,
    /// No RTP either way this long after answer: both legs get BYE.
    pub rtp_timeout: Duration,
    /// With `latch_any_source`: after latching, drop packets from any other address.
    pub strict_source: bool,
    /// Latch to the first packet from anywhere (peers behind NAT); without it only the
    /// address and port the SDP signalled are accepted (decision 0005).
    pub latch_any_source: bool,
    /// Where recordings go (`recordings_dir`, default `recordings`): one WAV per recorded
    /// call, under a directory per UTC day.
    pub recordings_dir: PathBuf,
}

/// `[cdr]`: an optional JSON-lines copy of every CDR (the database is the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrConfig {
    /// JSON-lines file, appended to; none by default.
    pub jsonl_path: Option<PathBuf>,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node id, written into CDRs and logs.
    pub id: String,
    /// SIGTERM: how long active calls may go on (new calls get 503) before they get BYE.
    pub drain_timeout: Duration,
}

/// Transport protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenProto {
    /// `udp://`
    Udp,
    /// `tcp://`
    Tcp,
    /// `tls://` (needs `[sip.tls]`)
    Tls,
}

/// One `[sip] listen` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    /// Protocol.
    pub proto: ListenProto,
    /// Address and port.
    pub addr: SocketAddr,
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            ListenProto::Udp => "udp",
            ListenProto::Tcp => "tcp",
            ListenProto::Tls => "tls",
        };
        write!(f, "{p}://{}", self.addr)
    }
}

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// Sockets to listen on.
    pub listen: Vec<ListenAddr>,
    /// Host DCE puts in Via and Contact.
    pub advertised_host: String,
    /// Largest SIP message accepted on any transport (bytes).
    pub max_message_bytes: usize,
    /// A TCP connection that sends nothing for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Open TCP connections allowed from one source IP.
    pub tcp_max_connections_per_ip: usize,
    /// Open TCP connections allowed in total.
    pub tcp_max_connections: usize,
    /// RFC 3261 T1.
    pub t1: Duration,
    /// How long one buyer may ring before the next is tried.
    pub ring_timeout: Duration,
    /// Buyers tried per call (ring-tree depth).
    pub max_attempts: u32,
    /// Calls at once; more get 503.
    pub max_calls: usize,
    /// Largest request sent to a buyer over UDP (RFC 3261 §18.1.1).
    pub max_udp_request_bytes: usize,
    /// A TCP message must arrive whole this long after its first byte, or the connection closes.
    pub tcp_message_timeout: Duration,
    /// Messages per second one source (IPv4 address, IPv6 /64) that is no carrier or buyer may
    /// send; more are dropped before the core queue. 0 = no limit.
    pub source_rate_per_s: u32,
    /// Messages such a source may send at once after a quiet spell.
    pub source_burst: u32,
    /// The same for carriers' sources and buyers' addresses; 0 = exempt (the default).
    pub trusted_source_rate_per_s: u32,
    /// Messages waiting for the core task above which new INVITEs get a stateless 503.
    pub overload_queue_depth: usize,
    /// Age of the message the core task last took from its queue above which new INVITEs get
    /// a stateless 503.
    pub overload_queue_delay: Duration,
    /// `Retry-After` of that 503, seconds.
    pub overload_retry_after_s: u32,
    /// SIP worker threads (shards); each owns its share of the calls and of the media ports.
    pub workers: usize,
    /// A buyer target (one of several its DNS gives) that has sent no response at all this long
    /// after the INVITE is given up for the next target, within the same attempt.
    pub target_timeout: Duration,
    /// `[sip.tls]`: the certificate for `tls://` listeners.
    pub tls: Option<TlsConfig>,
}

/// `[sip.tls]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// PEM CA certificates: when set, carriers must present a certificate they signed (mTLS).
    pub client_ca: Option<std::path::PathBuf>,
    /// A connection must finish its TLS handshake this long after it is accepted.
    pub handshake_timeout: Duration,
}

impl SipConfig {
    /// The per-source limits these keys ask for.
    pub fn source_limits(&self) -> crate::edge::LimitConfig {
        crate::edge::LimitConfig {
            untrusted: crate::edge::Rate {
                per_s: self.source_rate_per_s,
                burst: self.source_burst,
            },
            trusted: crate::edge::Rate {
                per_s: self.trusted_source_rate_per_s,
                burst: self.trusted_source_rate_per_s.saturating_mul(2),
            },
            ..crate::edge::LimitConfig::default()
        }
    }
}

/// Defaults for the optional `[sip]` keys.
pub mod defaults {
    /// 64 KiB: the UDP limit; large enough for any SDP a carrier sends.
    pub const MAX_MESSAGE_BYTES: i64 = 65_535;
    /// Two minutes of silence closes a TCP connection (carriers keep-alive more often).
    pub const TCP_IDLE_TIMEOUT_S: i64 = 120;
    /// Per-IP TCP connection limit.
    pub const TCP_MAX_CONNECTIONS_PER_IP: i64 = 64;
    /// Global TCP connection limit.
    pub const TCP_MAX_CONNECTIONS: i64 = 10_000;
    /// RFC 3261 T1 in milliseconds.
    pub const T1_MS: i64 = 500;
    /// One SIP worker: on a small machine one thread that never hands a message to another
    /// is the cheapest per call (docs/decisions/0010-sip-workers.md).
    pub const WORKERS: i64 = 1;
    /// Seconds one buyer may ring.
    pub const RING_TIMEOUT_S: i64 = 20;
    /// Buyers tried per call.
    pub const MAX_ATTEMPTS: i64 = 3;
    /// Calls at once.
    pub const MAX_CALLS: i64 = 10_000;
    /// RFC 3261 §18.1.1: over 1300 bytes (path MTU unknown) a request must not go over UDP.
    pub const MAX_UDP_REQUEST_BYTES: i64 = 1300;
    /// Seconds a TCP message may take to arrive whole (like `http.header_timeout_s`).
    pub const TCP_MESSAGE_TIMEOUT_S: i64 = 10;
    /// Untrusted source: messages per second (OPTIONS probes, stray traffic, scanners).
    pub const SOURCE_RATE_PER_S: i64 = 100;
    /// Untrusted source: burst.
    pub const SOURCE_BURST: i64 = 200;
    /// Carriers and buyers: exempt.
    pub const TRUSTED_SOURCE_RATE_PER_S: i64 = 0;
    /// Queue depth (messages) that sheds new INVITEs.
    pub const OVERLOAD_QUEUE_DEPTH: i64 = 2_000;
    /// Time (ms) a new INVITE waited in the socket before its worker read it that sheds it:
    /// below T1, so carriers do not retransmit yet. (50 ms was tried in issue #12, to act
    /// before the socket's receive buffer overflows: no better in `compare.sh cps` on this
    /// 2-core VM, and it shed an INVITE of 2,000 relayed calls in `compare.sh media`.)
    pub const OVERLOAD_QUEUE_DELAY_MS: i64 = 200;
    /// Retry-After of the shedding 503.
    pub const OVERLOAD_RETRY_AFTER_S: i64 = 5;
    /// Milliseconds without any response before the next DNS target is tried (a live SIP
    /// server sends 100 Trying within 200 ms, RFC 3261 §17.2.1).
    pub const TARGET_TIMEOUT_MS: i64 = 2_000;
}

pub(super) fn from_toml(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut w = Walk::new(file, text);
    let root = parse_root(&mut w, text);
    let root = Table {
        table: root.get_ref(),
        span: (0, 0),
        path: "",
    };
    w.unknown_keys(
        root,
        &[
            "node",
            "sip",
            "carrier",
            "campaign",
            "buyer",
            "cdr",
            "media",
            "compliance",
            "storage",
            "http",
            "log",
            "dns",
            "stir",
        ],
    );
    let node = w
        .table(root, "node", "node", true)
        .and_then(|t| node(&mut w, t));
    let sip = w
        .table(root, "sip", "sip", true)
        .and_then(|t| sip(&mut w, t));
    let routing = routing::read(&mut w, root);
    let cdr = match w.table(root, "cdr", "cdr", false) {
        Some(t) => {
            w.unknown_keys(t, &["jsonl_path"]);
            CdrConfig {
                jsonl_path: w.string(t, "jsonl_path", false).map(|(p, _)| p.into()),
            }
        }
        None => CdrConfig { jsonl_path: None },
    };
    let media = media(&mut w, root, sip.as_ref());
    let compliance = super::compliance::read(&mut w, root);
    let storage = storage(&mut w, root);
    let carrier_ids: Vec<&str> = routing.carriers.iter().map(|c| c.id.as_str()).collect();
    let buyer_ids: Vec<&str> = routing.buyers.iter().map(|b| b.id.as_str()).collect();
    let http = super::http::read(&mut w, root, &carrier_ids, &buyer_ids);
    let log = log(&mut w, root);
    let dns = dns(&mut w, root);
    let stir = super::stir::read(&mut w, root);
    if let Some(sip) = &sip {
        for b in &routing.buyers {
            let t = match routing::target_of(&b.uri, "1", "1") {
                Ok((_, routing::TargetHost::Ip(_, t))) => Some(t),
                Ok((_, routing::TargetHost::Name(d))) => d.transport,
                Err(_) => None,
            };
            let (want, name) = match t {
                Some(crate::dns::Transport::Tcp) => (ListenProto::Tcp, "tcp"),
                Some(crate::dns::Transport::Tls) => (ListenProto::Tls, "tls"),
                _ => continue,
            };
            if !sip.listen.iter().any(|l| l.proto == want) {
                w.error(
                    0..0,
                    format!(
                        "buyer `{}` is reached over {}: add a {name}:// address to `sip.listen` (the Contact DCE gives it, for its in-dialog requests)",
                        b.id,
                        name.to_ascii_uppercase()
                    ),
                );
            }
        }
    }
    match (node, sip, media) {
        (Some(node), Some(sip), Some(media)) if w.errors.is_empty() => Ok(Config {
            node,
            sip,
            routing,
            cdr,
            media,
            compliance,
            storage,
            http,
            log,
            dns,
            stir,
        }),
        _ => {
            let mut errors = w.errors;
            errors.sort_by_key(|e| e.line);
            Err(errors)
        }
    }
}

fn media(w: &mut Walk<'_>, root: Table<'_, '_>, sip: Option<&SipConfig>) -> Option<MediaConfig> {
    let t = w.table(root, "media", "media", false);
    let ip = |w: &mut Walk<'_>, key: &str| -> Option<Option<std::net::IpAddr>> {
        let t = t?;
        let (v, span) = w.string(t, key, false)?;
        match v.parse() {
            Ok(ip) => Some(Some(ip)),
            Err(_) => {
                w.error(span, format!("`media.{key}` must be an IP address"));
                Some(None)
            }
        }
    };
    if let Some(t) = t {
        w.unknown_keys(
            t,
            &[
                "bind_ip",
                "advertised_ip",
                "port_min",
                "port_max",
                "rtp_timeout_s",
                "strict_source",
                "latch_any_source",
                "recordings_dir",
            ],
        );
    }
    let bind_ip = ip(w, "bind_ip")
        .flatten()
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let advertised_ip = match ip(w, "advertised_ip").flatten() {
        Some(a) => a,
        None => match sip.and_then(|s| {
            s.advertised_host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        }) {
            Some(a) => a,
            None => {
                if sip.is_some() {
                    w.error(0..0, "`media.advertised_ip` is required when `sip.advertised_host` is not an IP address");
                }
                return None;
            }
        },
    };
    let (mut port_min, mut port_max, mut timeout, mut strict, mut latch_any) =
        (20_000, 29_999, 30, true, false);
    let mut recordings_dir = PathBuf::from("recordings");
    if let Some(t) = t {
        port_min = w
            .int(t, "port_min", 1024, 65_534)
            .map(|(v, _)| v as u16)
            .unwrap_or(port_min);
        port_max = w
            .int(t, "port_max", 1025, 65_535)
            .map(|(v, _)| v as u16)
            .unwrap_or(port_max);
        timeout = w
            .int(t, "rtp_timeout_s", 1, 86_400)
            .map(|(v, _)| v as u64)
            .unwrap_or(timeout);
        strict = w.boolean(t, "strict_source").unwrap_or(strict);
        latch_any = w.boolean(t, "latch_any_source").unwrap_or(latch_any);
        if let Some((d, span)) = w.string(t, "recordings_dir", false) {
            if d.trim().is_empty() {
                w.error(span, "`media.recordings_dir` must name a directory");
            }
            recordings_dir = d.into();
        }
        if port_max < port_min + 3 {
            w.error(
                w.span_of(t, "port_max"),
                "`media.port_max` must leave room for two RTP/RTCP pairs above `port_min`",
            );
        }
    }
    Some(MediaConfig {
        bind_ip,
        advertised_ip,
        port_min,
        port_max,
        rtp_timeout: Duration::from_secs(timeout),
        strict_source: strict,
        latch_any_source: latch_any,
        recordings_dir,
    })
}

fn node(w: &mut Walk<'_>, t: Table<'_, '_>) -> Option<NodeConfig> {
    w.unknown_keys(t, &["id", "drain_timeout_s"]);
    let drain_timeout = w
        .int(t, "drain_timeout_s", 0, 86_400)
        .map_or(Duration::from_secs(30), |(n, _)| {
            Duration::from_secs(n as u64)
        });
    let (id, span) = w.string(t, "id", true)?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        w.error(
            span,
            "`node.id` must be non-empty letters, digits, '-', '_' or '.'",
        );
        return None;
    }
    Some(NodeConfig { id, drain_timeout })
}

/// A host as it goes into SIP (Via, Contact, Call-IDs): an IPv6 address in brackets (RFC 3261
/// §25.1 `IPv6reference`), whether the config wrote `::1` or `[::1]`.
fn sip_host(h: &str) -> String {
    match h.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => h.to_owned(),
    }
}

fn sip(w: &mut Walk<'_>, t: Table<'_, '_>) -> Option<SipConfig> {
    w.unknown_keys(
        t,
        &[
            "listen",
            "advertised_host",
            "max_message_bytes",
            "tcp_idle_timeout_s",
            "tcp_max_connections_per_ip",
            "tcp_max_connections",
            "t1_ms",
            "ring_timeout_s",
            "max_attempts",
            "max_calls",
            "max_udp_request_bytes",
            "tcp_message_timeout_s",
            "source_rate_per_s",
            "source_burst",
            "trusted_source_rate_per_s",
            "overload_queue_depth",
            "overload_queue_delay_ms",
            "overload_retry_after_s",
            "workers",
            "target_timeout_ms",
            "tls",
        ],
    );
    // Problems are recorded in `w`; `from_toml` refuses the config if there are any.
    let mut listen = Vec::new();
    let items = w.strings(t, "listen", true).unwrap_or_default();
    if items.is_empty() {
        w.error(
            t.span.0..t.span.1,
            "`sip.listen` must name at least one address",
        );
    }
    for (s, span) in items {
        match parse_listen(&s) {
            Ok(l) if listen.contains(&l) => w.error(span, format!("`{s}` is listed twice")),
            Ok(l) => listen.push(l),
            Err(e) => w.error(span, format!("bad listen address `{s}`: {e}")),
        }
    }
    let advertised_host = match w.string(t, "advertised_host", true) {
        Some((h, span)) => {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
                w.error(
                    span,
                    "`sip.advertised_host` must be a host name or IP address",
                );
            }
            sip_host(&h)
        }
        None => String::new(),
    };
    let mut int = |key: &str, min: i64, max: i64, default: i64| -> i64 {
        w.int(t, key, min, max).map(|(v, _)| v).unwrap_or(default)
    };
    let max_message_bytes = int(
        "max_message_bytes",
        1024,
        1 << 20,
        defaults::MAX_MESSAGE_BYTES,
    ) as usize;
    let idle = int(
        "tcp_idle_timeout_s",
        1,
        86_400,
        defaults::TCP_IDLE_TIMEOUT_S,
    ) as u64;
    let per_ip = int(
        "tcp_max_connections_per_ip",
        1,
        1_000_000,
        defaults::TCP_MAX_CONNECTIONS_PER_IP,
    ) as usize;
    let total = int(
        "tcp_max_connections",
        1,
        1_000_000,
        defaults::TCP_MAX_CONNECTIONS,
    ) as usize;
    let t1 = int("t1_ms", 50, 10_000, defaults::T1_MS) as u64;
    let ring_timeout = int("ring_timeout_s", 1, 600, defaults::RING_TIMEOUT_S) as u64;
    let max_attempts = int("max_attempts", 1, 20, defaults::MAX_ATTEMPTS) as u32;
    let max_calls = int("max_calls", 1, 1_000_000, defaults::MAX_CALLS) as usize;
    let max_udp_request_bytes = int(
        "max_udp_request_bytes",
        512,
        65_535,
        defaults::MAX_UDP_REQUEST_BYTES,
    ) as usize;
    let message_timeout = int(
        "tcp_message_timeout_s",
        1,
        3_600,
        defaults::TCP_MESSAGE_TIMEOUT_S,
    ) as u64;
    let source_rate = int(
        "source_rate_per_s",
        0,
        1_000_000,
        defaults::SOURCE_RATE_PER_S,
    ) as u32;
    let source_burst = int("source_burst", 1, 1_000_000, defaults::SOURCE_BURST) as u32;
    let trusted_rate = int(
        "trusted_source_rate_per_s",
        0,
        10_000_000,
        defaults::TRUSTED_SOURCE_RATE_PER_S,
    ) as u32;
    let queue_depth = int(
        "overload_queue_depth",
        1,
        crate::transport::CORE_QUEUE as i64,
        defaults::OVERLOAD_QUEUE_DEPTH,
    ) as usize;
    let queue_delay = int(
        "overload_queue_delay_ms",
        1,
        60_000,
        defaults::OVERLOAD_QUEUE_DELAY_MS,
    ) as u64;
    let retry_after = int(
        "overload_retry_after_s",
        0,
        3_600,
        defaults::OVERLOAD_RETRY_AFTER_S,
    ) as u32;
    let workers = int("workers", 1, 64, defaults::WORKERS) as usize;
    let target_timeout = int(
        "target_timeout_ms",
        100,
        60_000,
        defaults::TARGET_TIMEOUT_MS,
    ) as u64;
    let tls = w.table(t, "tls", "sip.tls", false).and_then(|tt| {
        w.unknown_keys(tt, &["cert", "key", "client_ca", "handshake_timeout_s"]);
        let cert = w.string(tt, "cert", true);
        let key = w.string(tt, "key", true);
        let client_ca = w.string(tt, "client_ca", false).map(|(p, _)| p.into());
        let handshake = w
            .int(tt, "handshake_timeout_s", 1, 600)
            .map_or(10, |(v, _)| v as u64);
        let (cert, key) = (cert?, key?);
        let c = TlsConfig {
            cert: cert.0.into(),
            key: key.0.into(),
            client_ca,
            handshake_timeout: Duration::from_secs(handshake),
        };
        // check-config loads the files as the listener will: a bad file is named here.
        if let Err(e) =
            crate::transport::pki::server_config(&c.cert, &c.key, c.client_ca.as_deref())
        {
            w.error(cert.1, format!("sip.tls: {e}"));
            return None;
        }
        Some(c)
    });
    if tls.is_none() && listen.iter().any(|l| l.proto == ListenProto::Tls) {
        w.error(
            t.span.0..t.span.1,
            "a tls:// listener needs `[sip.tls]` with `cert` and `key` (PEM files)",
        );
    }
    Some(SipConfig {
        listen,
        advertised_host,
        max_message_bytes,
        tcp_idle_timeout: Duration::from_secs(idle),
        tcp_max_connections_per_ip: per_ip,
        tcp_max_connections: total,
        t1: Duration::from_millis(t1),
        ring_timeout: Duration::from_secs(ring_timeout),
        max_attempts,
        max_calls,
        max_udp_request_bytes,
        tcp_message_timeout: Duration::from_secs(message_timeout),
        source_rate_per_s: source_rate,
        source_burst,
        trusted_source_rate_per_s: trusted_rate,
        overload_queue_depth: queue_depth,
        overload_queue_delay: Duration::from_millis(queue_delay),
        overload_retry_after_s: retry_after,
        workers,
        target_timeout: Duration::from_millis(target_timeout),
        tls,
    })
}

/// `udp://IP:PORT` or `tcp://IP:PORT` (IPv6 as `[::1]:5060`).
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    let (proto, rest) = s
        .split_once("://")
        .ok_or_else(|| "expected udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT".to_owned())?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "udp" => ListenProto::Udp,
        "tcp" => ListenProto::Tcp,
        "tls" => ListenProto::Tls,
        other => {
            return Err(format!(
                "transport `{other}` is not supported (udp, tcp, tls)"
            ))
        }
    };
    let addr: SocketAddr = rest
        .parse()
        .map_err(|_| format!("`{rest}` is not IP:PORT"))?;
    Ok(ListenAddr { proto, addr })
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const GOOD: &str = r#"
[node]
id = "edge-1"

[sip]
listen = ["udp://127.0.0.1:5060", "tcp://127.0.0.1:5060"]
advertised_host = "127.0.0.1"
"#;

    #[test]
    fn good_config_with_defaults() {
        let c = parse("dce.toml", GOOD).unwrap();
        assert_eq!(c.node.id, "edge-1");
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.max_message_bytes, 65_535);
        assert_eq!(c.sip.t1.as_millis(), 500);
    }

    #[test]
    fn every_error_has_its_line() {
        let bad = r#"[node]
id = "edge-1"
colour = "blue"

[sip]
listen = ["udp://127.0.0.1:5060", "sctp://127.0.0.1:5060", "tcp://nonsense"]
advertised_host = "127.0.0.1"
max_message_bytes = 12
"#;
        let errs = parse("dce.toml", bad).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(
            text[0].starts_with("dce.toml:3: unknown key `colour` in [node]"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("dce.toml:6: bad listen address `sctp://"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("dce.toml:6: bad listen address `tcp://nonsense`"),
            "{text:#?}"
        );
        assert!(
            text[3].starts_with("dce.toml:8: `sip.max_message_bytes` must be between"),
            "{text:#?}"
        );
    }

    #[test]
    fn redis_a_single_server_or_a_cluster() {
        use crate::redis_conn::RedisTarget;
        let c = parse("dce.toml", GOOD).unwrap();
        assert_eq!(c.storage.redis(), None);
        let single = format!("{GOOD}[storage]\nredis_url = \"redis://127.0.0.1:6379/\"\n");
        let c = parse("dce.toml", &single).unwrap();
        assert_eq!(
            c.storage.redis(),
            Some(RedisTarget::Single("redis://127.0.0.1:6379/".into()))
        );
        let cluster = format!(
            "{GOOD}[storage]\nredis_cluster = [\"redis://127.0.0.1:7000\", \"redis://10.0.0.2:7001/\"]\nredis_key_prefix = \"fleet-a\"\n"
        );
        let c = parse("dce.toml", &cluster).unwrap();
        assert_eq!(
            c.storage.redis(),
            Some(RedisTarget::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://10.0.0.2:7001/".into()
            ]))
        );
        // an empty list is no cluster, and does not conflict with redis_url
        let empty = format!(
            "{GOOD}[storage]\nredis_url = \"redis://127.0.0.1:6379/\"\nredis_cluster = []\n"
        );
        let c = parse("dce.toml", &empty).unwrap();
        assert!(matches!(c.storage.redis(), Some(RedisTarget::Single(_))));
        // braces are allowed in a single server's prefix (nothing splits its keys)
        let braces =
            format!("{GOOD}[storage]\nredis_url = \"redis://h/\"\nredis_key_prefix = \"a{{b}}\"\n");
        assert!(parse("dce.toml", &braces).is_ok());
    }

    #[test]
    fn redis_cluster_errors_have_their_lines() {
        let first = GOOD.lines().count() + 2;
        let cases = [
            (
                "redis_url = \"redis://127.0.0.1:6379/\"\nredis_cluster = [\"redis://127.0.0.1:7000\"]\n",
                first + 1,
                "`storage.redis_cluster` and `storage.redis_url` exclude each other",
            ),
            (
                "redis_cluster = [\"redis://127.0.0.1:7000\", \"http://127.0.0.1:7001\"]\n",
                first,
                "`storage.redis_cluster` node `http://127.0.0.1:7001` must start with redis://",
            ),
            (
                "redis_cluster = [\"redis://127.0.0.1:notaport\"]\n",
                first,
                "`storage.redis_cluster` node `redis://127.0.0.1:notaport` is not a usable Redis URL",
            ),
            (
                "redis_cluster = \"redis://127.0.0.1:7000\"\n",
                first,
                "redis_cluster",
            ),
            (
                "redis_cluster = [7000]\n",
                first,
                "redis_cluster",
            ),
            (
                "redis_cluster = [\"redis://127.0.0.1:7000\"]\nredis_key_prefix = \"dce{a}\"\n",
                first + 1,
                "`storage.redis_key_prefix` must not contain `{` or `}` with `redis_cluster`",
            ),
        ];
        for (storage, line, text) in cases {
            let src = format!("{GOOD}[storage]\n{storage}");
            let errs: Vec<String> = parse("e.toml", &src)
                .unwrap_err()
                .iter()
                .map(|e| e.to_string())
                .collect();
            assert_eq!(errs.len(), 1, "{storage}: {errs:#?}");
            let want = format!("e.toml:{line}: ");
            assert!(
                errs[0].starts_with(&want) && errs[0].contains(text),
                "{storage}: {errs:#?} should be at line {line} and say {text}"
            );
        }
    }

    #[test]
    fn edge_limit_keys_defaults_and_errors() {
        let c = parse("dce.toml", GOOD).unwrap();
        assert_eq!(c.sip.tcp_message_timeout.as_secs(), 10);
        assert_eq!((c.sip.source_rate_per_s, c.sip.source_burst), (100, 200));
        assert_eq!(c.sip.trusted_source_rate_per_s, 0, "carriers exempt");
        assert_eq!(c.sip.overload_queue_depth, 2_000);
        assert_eq!(c.sip.overload_queue_delay.as_millis(), 200);
        assert_eq!(c.sip.overload_retry_after_s, 5);
        let set = format!("{GOOD}tcp_message_timeout_s = 2\nsource_rate_per_s = 0\ntrusted_source_rate_per_s = 50000\noverload_queue_depth = 100\n");
        let c = parse("dce.toml", &set).unwrap();
        assert_eq!(c.sip.tcp_message_timeout.as_secs(), 2);
        assert_eq!(c.sip.source_limits().untrusted.per_s, 0);
        assert_eq!(c.sip.source_limits().trusted.burst, 100_000);
        assert_eq!(c.sip.overload_queue_depth, 100);
        let bad = format!("{GOOD}tcp_message_timeout_s = 0\nsource_burst = -1\noverload_queue_depth = 100000\noverload_queue_delay_ms = \"x\"\n");
        let errs: Vec<String> = parse("e.toml", &bad)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        let first = GOOD.lines().count() + 1;
        let expect = [
            format!("e.toml:{first}: `sip.tcp_message_timeout_s` must be between"),
            format!("e.toml:{}: `sip.source_burst` must be between", first + 1),
            format!(
                "e.toml:{}: `sip.overload_queue_depth` must be between",
                first + 2
            ),
            format!(
                "e.toml:{}: `sip.overload_queue_delay_ms` must be",
                first + 3
            ),
        ];
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        for (e, x) in errs.iter().zip(&expect) {
            assert!(e.starts_with(x.as_str()), "{e} should start with {x}");
        }
    }

    #[test]
    fn routing_sections_every_problem_with_its_line() {
        let text = r#"[node]
id = "edge-1"
[sip]
listen = ["udp://127.0.0.1:5060"]
advertised_host = "127.0.0.1"

[[carrier]]
id = "carrier-a"
sources = ["127.0.0.1/32", "300.0.0.1/8"]

[[campaign]]
id = "auto"
numbers = ["+18005550100"]

[[campaign]]
id = "home"
numbers = ["(800) 555-0100", "12"]

[[buyer]]
id = "acme"
campaigns = ["auto", "pets"]
uri = "sip:{called}@buyer.example.com;transport=sctp"
states = ["CA", "XX"]
schedule = { tz = "America/Nowhere", days = "mon-fri", open = "09:00", close = "18:00" }

[[buyer]]
id = "acme"
campaigns = ["auto"]
uri = "sip:{called}@127.0.0.1:5090"
schedule = { tz = "America/New_York", open = "18:00", close = "09:00" }
"#;
        let errs: Vec<String> = parse("r.toml", text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        let expect = [
            "r.toml:9: bad CIDR `300.0.0.1/8`",
            "r.toml:17: number `(800) 555-0100` is already in campaign `auto` (line 13)",
            "r.toml:17: `12` is not a phone number",
            "r.toml:21: buyer campaign `pets` is not a [[campaign]] id",
            "r.toml:22: buyer uri `sip:{called}@buyer.example.com;transport=sctp`: transport `sctp` is not supported",
            "r.toml:23: `XX` is not a US state code",
            "r.toml:24: buyer schedule: unknown time zone `America/Nowhere`",
            "r.toml:27: buyer `acme` is defined twice (first on line 20)",
            "r.toml:30: buyer schedule: open 18:00 is not before close 09:00",
        ];
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        for (e, x) in errs.iter().zip(expect) {
            assert!(e.starts_with(x), "{e} should start with {x}");
        }
    }

    #[test]
    fn routing_sections_read() {
        let c = parse("dce.toml", &format!("{GOOD}\n[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1\"]\nmax_cps = 5\n[[campaign]]\nid = \"a\"\nnumbers = [\"8005550100\"]\n[[buyer]]\nid = \"b\"\ncampaigns = [\"a\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 1500\n")).unwrap();
        assert_eq!(c.routing.carriers[0].max_cps, 5);
        assert_eq!(
            c.routing.campaigns[0].numbers,
            vec!["18005550100".to_string()]
        );
        assert_eq!(c.routing.buyers[0].campaigns, vec![0]);
        assert_eq!(c.sip.ring_timeout.as_secs(), 20);
        assert_eq!(c.sip.max_attempts, 3);
    }

    #[test]
    fn compliance_section() {
        let c = parse("dce.toml", GOOD).unwrap();
        assert_eq!(
            c.compliance.calling_hours,
            dce_compliance::Window {
                start: 480,
                end: 1260
            }
        );
        let text = format!(
            "{GOOD}[compliance]\nnational_dnc = \"n.dnc\"\ncalling_hours = {{ start = \"09:00\", end = \"20:00\" }}\nstate_hours = {{ FL = {{ start = \"08:00\", end = \"20:00\" }}, XX = {{ start = \"1\", end = \"2\" }} }}\nmax_calls_per_day = 3\non_lookup_error = \"maybe\"\n"
        );
        let errs: Vec<String> = parse("c.toml", &text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("`XX` in compliance.state_hours is not a US state code")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("on_lookup_error")),
            "{errs:?}"
        );
        let ok = parse(
            "c.toml",
            &text
                .replace(", XX = { start = \"1\", end = \"2\" }", "")
                .replace("maybe", "allow_and_flag"),
        )
        .unwrap();
        assert_eq!(ok.compliance.state_hours["FL"].end, 1200);
        assert_eq!(ok.compliance.max_calls_per_day, 3);
        assert_eq!(
            ok.compliance.national_dnc.as_deref(),
            Some(std::path::Path::new("n.dnc"))
        );
    }

    #[test]
    fn media_section_defaults_and_errors() {
        let c = parse("dce.toml", GOOD).unwrap();
        assert_eq!(
            c.media.advertised_ip.to_string(),
            "127.0.0.1",
            "defaults to sip.advertised_host"
        );
        assert_eq!((c.media.port_min, c.media.port_max), (20_000, 29_999));
        assert!(c.media.strict_source && !c.media.latch_any_source);
        let bad = format!(
            "{GOOD}[media]\nbind_ip = \"nowhere\"\nport_min = 30000\nport_max = 30001\nspeed = 3\n"
        );
        let errs: Vec<String> = parse("m.toml", &bad)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            errs.iter()
                .any(|e| e.contains("unknown key `speed` in [media]")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("`media.bind_ip` must be an IP address")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("`media.port_max` must leave room")),
            "{errs:?}"
        );
        let host = GOOD.replace(
            "advertised_host = \"127.0.0.1\"",
            "advertised_host = \"sbc.example.com\"",
        );
        let errs = parse("h.toml", &host).unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .contains("media.advertised_ip` is required"),
            "{errs:?}"
        );
        let ok = parse("c.toml", &format!("{GOOD}[[campaign]]\nid = \"a\"\nnumbers = [\"8005550100\"]\nbill_one_way_audio = false\n")).unwrap();
        assert!(!ok.routing.campaigns[0].bill_one_way_audio);
        // IPv6: the bare and the bracketed spelling both give `[::1]` in SIP and `::1` in SDP.
        for spelling in ["::1", "[::1]"] {
            let v6 = GOOD.replace(
                "advertised_host = \"127.0.0.1\"",
                &format!("advertised_host = \"{spelling}\""),
            );
            let c = parse("v6.toml", &v6).unwrap();
            assert_eq!(c.sip.advertised_host, "[::1]", "{spelling}");
            assert_eq!(c.media.advertised_ip.to_string(), "::1", "{spelling}");
        }
    }

    #[test]
    fn log_format_and_masking() {
        let c = parse("c.toml", GOOD).unwrap();
        assert_eq!(c.log, super::LogConfig::default());
        assert!(c.log.mask_numbers && !c.log.json);
        let c = parse(
            "c.toml",
            &format!("{GOOD}[log]\nformat = \"json\"\nmask_numbers = false\n"),
        )
        .unwrap();
        assert!(c.log.json && !c.log.mask_numbers);
        let errs = parse(
            "c.toml",
            &format!("{GOOD}[log]\nformat = \"xml\"\ncolour = 1\n"),
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let line = GOOD.lines().count() + 2;
        assert!(
            text.iter()
                .any(|e| e.starts_with(&format!("c.toml:{line}: `log.format` must be"))),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("unknown key `colour` in [log]")),
            "{text:?}"
        );
    }

    #[test]
    fn missing_sections_and_syntax_errors() {
        let errs = parse("x.toml", "[node]\nid = \"a\"\n").unwrap_err();
        assert!(errs[0]
            .to_string()
            .contains("missing required section [sip]"));
        let errs = parse("x.toml", "[node]\nid = \n").unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.to_string().starts_with("x.toml:2: TOML syntax")),
            "{errs:?}"
        );
        let errs = parse(
            "x.toml",
            "[node]\nid = 5\n[sip]\nlisten=[]\nadvertised_host=\"h\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("x.toml:2: `node.id` must be a string")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("at least one address")),
            "{text:?}"
        );
    }

    #[test]
    fn buyer_auth_reads_its_password_from_a_file_or_the_environment_and_says_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("dce-auth-cfg-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let pass = dir.join("p");
        std::fs::write(&pass, "hunter2\n").unwrap();
        let base = |auth: &str| {
            format!(
                "[node]\nid = \"a\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
                 [[campaign]]\nid = \"c\"\nnumbers = [\"+18005550100\"]\n\
                 [[buyer]]\nid = \"b\"\ncampaigns = [\"c\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 1\n\
                 auth = {auth}\n"
            )
        };
        let ok = parse(
            "a.toml",
            &base(&format!(
                "{{ user = \"u\", password_file = \"{}\" }}",
                pass.display()
            )),
        )
        .unwrap();
        let auth = ok.routing.buyers[0].auth.clone().unwrap();
        assert_eq!((auth.user.as_str(), auth.password()), ("u", "hunter2"));
        assert!(!format!("{auth:?}").contains("hunter2"), "{auth:?}");
        for (auth, want) in [
            (
                "{ user = \"u\", password_env = \"DCE_TEST_SURELY_UNSET_VAR\" }".to_string(),
                "a.toml:14: buyer auth: environment variable DCE_TEST_SURELY_UNSET_VAR is not set",
            ),
            (
                "{ user = \"u\" }".to_string(),
                "a.toml:14: buyer auth needs password_env",
            ),
            (
                "{ user = \"u\", password = \"inline\" }".to_string(),
                "unknown key `password`",
            ),
            (
                format!(
                    "{{ user = \"u\", password_file = \"{}/nope\" }}",
                    dir.display()
                ),
                "buyer auth: cannot read password file",
            ),
        ] {
            let errs = parse("a.toml", &base(&auth)).unwrap_err();
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(text.iter().any(|e| e.contains(want)), "{auth}: {text:?}");
            assert!(
                !text.iter().any(|e| e.contains("inline")),
                "a password is never echoed: {text:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn buyer_rtb_is_read_and_its_mistakes_named_by_line() {
        let base = |rtb: &str| {
            format!(
                "[node]\nid = \"a\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
                 [[campaign]]\nid = \"c\"\nnumbers = [\"+18005550100\"]\nauction_deadline_ms = 300\n\
                 [[buyer]]\nid = \"b\"\ncampaigns = [\"c\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nexpose_caller = true\n\
                 rtb = {rtb}\n"
            )
        };
        let ok = parse(
            "a.toml",
            &base("{ url = \"https://bids.example.com/v1/ping\", timeout_ms = 150, format = \"ringba\", headers = { \"Authorization\" = \"Bearer k\" } }"),
        )
        .unwrap();
        assert_eq!(ok.routing.campaigns[0].auction_deadline_ms, 300);
        let rtb = ok.routing.buyers[0].rtb.clone().unwrap();
        assert_eq!(rtb.url, "https://bids.example.com/v1/ping");
        assert_eq!(rtb.timeout_ms, 150);
        assert_eq!(rtb.format, dce_routing::RtbFormat::Ringba);
        assert_eq!(rtb.headers, [("Authorization".into(), "Bearer k".into())]);
        assert!(rtb.expose_caller);
        let d = parse("a.toml", &base("{ url = \"http://127.0.0.1:9000/\" }")).unwrap();
        let rtb = d.routing.buyers[0].rtb.clone().unwrap();
        assert_eq!(
            (
                rtb.timeout_ms,
                rtb.format,
                rtb.max_in_flight,
                rtb.max_pings_per_s
            ),
            (250, dce_routing::RtbFormat::Dce, 100, 0)
        );
        for (rtb, want) in [
            (
                "{ url = \"ftp://x/\" }",
                "a.toml:15: buyer rtb url `ftp://x/` must be an http:// or https:// URL",
            ),
            (
                "{ url = \"http://x/\", format = \"invoca\" }",
                "buyer rtb format `invoca` is not one of dce, ringba, retreaver",
            ),
            ("{ url = \"http://x/\", timeout_ms = 0 }", "timeout_ms"),
            ("{ timeout_ms = 100 }", "url"),
            (
                "{ url = \"http://x/\", headers = { \"Bad Name\" = \"v\" } }",
                "buyer rtb headers: `Bad Name` is not a header name",
            ),
            (
                "{ url = \"http://x/\", retries = 3 }",
                "unknown key `retries`",
            ),
        ] {
            let errs = parse("a.toml", &base(rtb)).unwrap_err();
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(text.iter().any(|e| e.contains(want)), "{rtb}: {text:?}");
        }
    }

    #[test]
    fn publisher_margin_is_a_fraction_named_by_line_when_wrong() {
        let base = |m: &str| {
            format!(
                "[node]\nid = \"a\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
                 [[campaign]]\nid = \"c\"\nnumbers = [\"+18005550100\"]\n{m}\n"
            )
        };
        let margin =
            |m: &str| parse("a.toml", &base(m)).unwrap().routing.campaigns[0].publisher_margin_ppm;
        assert_eq!(margin(""), 0);
        assert_eq!(margin("publisher_margin = 0.2"), 200_000);
        assert_eq!(margin("publisher_margin = 0.125"), 125_000);
        assert_eq!(margin("publisher_margin = 0"), 0);
        for (m, want) in [
            ("publisher_margin = 1.0", "a.toml:9: `campaign.publisher_margin` must be a fraction from 0 up to (not including) 1"),
            ("publisher_margin = -0.1", "must be a fraction"),
            ("publisher_margin = 20", "must be a fraction"),
            ("publisher_margin = \"20%\"", "a fraction such as 0.2"),
        ] {
            let errs = parse("a.toml", &base(m)).unwrap_err();
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(text.iter().any(|e| e.contains(want)), "{m}: {text:?}");
        }
    }

    #[test]
    fn pause_after_unanswered_is_read_and_named_by_line_when_wrong() {
        let base = |m: &str| {
            format!(
                "[node]\nid = \"a\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
                 [[campaign]]\nid = \"c\"\nnumbers = [\"+18005550100\"]\n\
                 [[buyer]]\nid = \"b\"\ncampaigns = [\"c\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 100\n{m}\n"
            )
        };
        let rule =
            |m: &str| parse("a.toml", &base(m)).unwrap().routing.buyers[0].pause_after_unanswered;
        assert!(!rule("").is_set(), "no rule by default");
        let r = rule("pause_after_unanswered = { in_hour = 3, in_day = 5 }");
        assert_eq!((r.in_hour, r.in_day), (3, 5));
        let r = rule("pause_after_unanswered = { in_day = 5 }");
        assert_eq!((r.in_hour, r.in_day), (0, 5));
        for (m, want) in [
            (
                "pause_after_unanswered = {}",
                "a.toml:14: buyer pause_after_unanswered needs in_hour or in_day above 0",
            ),
            ("pause_after_unanswered = { in_hour = -1 }", "a.toml:14:"),
            ("pause_after_unanswered = { in_hours = 3 }", "in_hours"),
            ("pause_after_unanswered = 3", "a.toml:14:"),
        ] {
            let errs = parse("a.toml", &base(m)).unwrap_err();
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(text.iter().any(|e| e.contains(want)), "{m}: {text:?}");
        }
    }

    #[test]
    fn duplicate_rules_are_read_and_named_by_line_when_wrong() {
        let base = |c: &str, b: &str| {
            format!(
                "[node]\nid = \"a\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
                 [[campaign]]\nid = \"c\"\nnumbers = [\"+18005550100\"]\n{c}\n\
                 [[buyer]]\nid = \"b\"\ncampaigns = [\"c\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 100\n{b}\n"
            )
        };
        let cfg = parse(
            "a.toml",
            &base(
                "duplicates = { window_days = 30, after = \"billable\", action = \"not_billable\" }",
                "duplicates = { window_days = 7, action = \"next_buyer\" }",
            ),
        )
        .unwrap();
        let c = cfg.routing.campaigns[0].duplicates.unwrap();
        assert_eq!(
            (c.window_days, c.after, c.action),
            (
                30,
                dce_routing::DupStage::Billable,
                dce_routing::DupAction::NotBillable
            )
        );
        let b = cfg.routing.buyers[0].duplicates.unwrap();
        assert_eq!(
            (b.window_days, b.after, b.action),
            (
                7,
                dce_routing::DupStage::Routed,
                dce_routing::DupAction::NextBuyer
            ),
            "after defaults to routed"
        );
        for (c, b, want) in [
            ("duplicates = { after = \"routed\", action = \"reject\" }", "", "a.toml:9: campaign.duplicates needs window_days"),
            ("duplicates = { window_days = 0, action = \"reject\" }", "", "a.toml:9:"),
            ("duplicates = { window_days = 3, action = \"block\" }", "", "campaign.duplicates.action `block` is not one of reject, same_buyer, not_billable, next_buyer"),
            ("duplicates = { window_days = 3 }", "", "missing required key `action`"),
            ("", "duplicates = { window_days = 3, after = \"answered\", action = \"reject\" }", "a.toml:15: buyer.duplicates.after `answered` is not one of routed, connected, billable"),
            ("", "duplicates = { window_days = 3, action = \"reject\", days = 1 }", "days"),
        ] {
            let errs = parse("a.toml", &base(c, b)).unwrap_err();
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(text.iter().any(|e| e.contains(want)), "{c}{b}: {text:?}");
        }
    }
}

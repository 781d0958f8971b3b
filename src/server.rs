//! The running process: binds the listeners, starts the SIP workers ([`crate::shard`]: each a
//! thread that reads its own UDP sockets and owns its share of the calls in an [`EdgeCore`]),
//! the TCP accept loop, the CDR writer and the HTTP API, and runs the node task: signals,
//! reloads, API requests fanned out to the workers, the periodic counter report.

use crate::call::leg::Me;
use crate::call::{Controller, Settings};
use crate::clock::SystemClock;
use crate::config::{Config, ListenProto};
use crate::counters::Counters;
use crate::edge::{EdgeCore, Local};
use crate::http::{ApiRequest, ReloadReply};
use crate::latency::Latency;
use crate::store::jsonl::JsonlSink;
use crate::transport::gate::{trusted_sources, Gate};
use crate::transport::tcp::{accept_loop, TcpLimits};
use crate::transport::{udp, Inbound};
use anyhow::Context;
use dce_routing::{Live, Snapshot};
use dce_sip::transaction::TimerConfig;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// The compliance checks a config asks for. Files are read here (at start and on reload), never
/// on the call path. Frequency counts are not part of the config: `apply` keeps them.
pub struct ComplianceSetup {
    national: Option<Arc<dce_compliance::NationalDnc>>,
    internal: dce_compliance::InternalDnc,
    hours: dce_compliance::CallingHours,
    max_calls_per_day: u32,
}

impl ComplianceSetup {
    /// Load what `[compliance]` names.
    pub fn load(cfg: &crate::config::ComplianceConfig) -> anyhow::Result<ComplianceSetup> {
        let national = match &cfg.national_dnc {
            Some(p) => Some(Arc::new(dce_compliance::NationalDnc::load(p)?)),
            None => None,
        };
        let internal = match &cfg.internal_dnc {
            Some(p) => dce_compliance::InternalDnc::load(p)?,
            None => dce_compliance::InternalDnc::default(),
        };
        Ok(ComplianceSetup {
            national,
            internal,
            hours: dce_compliance::CallingHours {
                default: cfg.calling_hours,
                states: cfg.state_hours.clone(),
            },
            max_calls_per_day: cfg.max_calls_per_day,
        })
    }

    /// Put it in place (the national list swaps whole; counts stay). With `shared` state the
    /// frequency cap is counted in Redis, not here.
    pub fn apply(self, c: &mut dce_compliance::Compliance, shared: bool) {
        tracing::info!(
            national_dnc = self.national.as_ref().map(|n| n.len()).unwrap_or(0),
            internal_dnc = self.internal.len(),
            max_calls_per_day = self.max_calls_per_day,
            "compliance checks loaded"
        );
        c.national = self.national;
        if let Ok(mut i) = c.internal.write() {
            *i = self.internal;
        }
        c.hours = Some(self.hours);
        c.max_calls_per_day = if shared { 0 } else { self.max_calls_per_day };
    }
}

/// Consent records from the database into the in-memory check (at start, after migrating when
/// `auto_migrate`, and on reload). A database that is away leaves the current records.
pub async fn load_consent(
    db: &crate::store::Db,
    migrate: bool,
    compliance: &std::sync::Mutex<dce_compliance::Compliance>,
) {
    let deadline = Duration::from_secs(5);
    if migrate {
        match tokio::time::timeout(deadline, db.migrate()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "migration at start failed; consent not loaded");
                return;
            }
            Err(_) => {
                tracing::warn!("database did not answer at start; consent not loaded");
                return;
            }
        }
    }
    match tokio::time::timeout(deadline, db.load_consent()).await {
        Ok(Ok(records)) => {
            tracing::info!(records = records.len(), "consent loaded");
            if let Ok(mut c) = compliance.lock() {
                c.set_consent(records);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "consent not loaded"),
        Err(_) => tracing::warn!("database did not answer; consent not loaded"),
    }
}

/// Refill the duplicate rules' memory from the CDRs of the longest window of `rules` (no
/// rule: nothing to do).
pub async fn restore_duplicates(
    db: &crate::store::Db,
    memory: &crate::call::callers::Memory,
    rules: &Snapshot,
) {
    let keep_s = rules.dup_window_s();
    if keep_s == 0 {
        return;
    }
    let t0 = std::time::Instant::now();
    let since = chrono::Utc::now().timestamp() - keep_s;
    match tokio::time::timeout(Duration::from_secs(60), db.dup_history(since)).await {
        Ok(Ok(rows)) => {
            let calls = crate::call::callers::restore(memory, &rows, rules);
            tracing::info!(
                calls,
                remembered = memory.len(),
                window_days = keep_s / 86_400,
                took_ms = t0.elapsed().as_millis() as u64,
                "duplicate rules: callers restored from the CDR database"
            );
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "duplicate rules: callers not restored from the CDR database; repeat callers of before the start are not known")
        }
        Err(_) => tracing::warn!(
            "duplicate rules: the CDR database did not answer in 60 s; repeat callers of before the start are not known"
        ),
    }
}

/// Build the routing snapshot of a config over `live`.
pub fn snapshot_of(config: &Config, live: &Live) -> anyhow::Result<Snapshot> {
    Ok(Snapshot::new(
        config.routing.campaigns.clone(),
        config.routing.buyers.clone(),
        live,
    )?)
}

/// Run DCE until `shutdown` resolves. `config_path` is re-read on SIGHUP. Returns the counters
/// for the final report.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Arc<Counters>> {
    let counters = Arc::new(Counters::default());
    let workers = config.sip.workers.max(1);
    let rx_gate = Arc::new(Gate::new(&config, counters.clone()));
    // Each worker's queue for what it does not read itself (TCP, and datagrams another worker
    // read); the node keeps one sender per worker until they have all stopped.
    let (queues, inbound): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| mpsc::channel::<Inbound>(crate::transport::CORE_QUEUE))
        .unzip();
    let shards = crate::transport::Shards::new(queues);
    // Per UDP listener, one socket per worker (SO_REUSEPORT with several).
    let mut udp_sockets: Vec<Vec<std::net::UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
    let mut local_hosts = vec![config.sip.advertised_host.to_ascii_lowercase()];
    let limits = TcpLimits {
        max_message: config.sip.max_message_bytes,
        idle: config.sip.tcp_idle_timeout,
        message: config.sip.tcp_message_timeout,
        per_ip: config.sip.tcp_max_connections_per_ip,
        total: config.sip.tcp_max_connections,
    };
    let mut acceptors = Vec::new();
    for l in &config.sip.listen {
        local_hosts.push(l.addr.ip().to_string());
        match l.proto {
            ListenProto::Udp => {
                for socks in udp_sockets.iter_mut() {
                    let sock = udp::bind(l.addr, workers > 1)
                        .with_context(|| format!("cannot listen on {l}"))?;
                    socks.push(sock);
                }
            }
            ListenProto::Tcp | ListenProto::Tls => {
                let tls = match (l.proto, &config.sip.tls) {
                    (ListenProto::Tls, Some(c)) => {
                        let a = crate::transport::tls::Acceptor::new(c)
                            .map_err(anyhow::Error::msg)
                            .with_context(|| format!("cannot listen on {l}"))?;
                        acceptors.push(a.clone());
                        Some(a)
                    }
                    (ListenProto::Tls, None) => anyhow::bail!("{l} needs [sip.tls]"),
                    _ => None,
                };
                let listener = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("cannot listen on {l}"))?;
                tokio::spawn(accept_loop(
                    listener,
                    limits,
                    shards.clone(),
                    rx_gate.clone(),
                    counters.clone(),
                    tls,
                ));
            }
        }
        tracing::info!(listen = %l, "listening");
    }
    tokio::spawn(release_freed_memory());
    let timers = TimerConfig {
        t1: config.sip.t1,
        ..TimerConfig::default()
    };
    let live = Arc::new(Live::default());
    let snapshot = Arc::new(snapshot_of(&config, &live)?);
    let port = config
        .sip
        .listen
        .iter()
        .find(|l| l.proto == ListenProto::Udp)
        .or(config.sip.listen.first())
        .map(|l| l.addr.port())
        .unwrap_or(5060);
    let settings = Settings {
        node_id: config.node.id.clone(),
        me: Me {
            host: config.sip.advertised_host.clone(),
            port,
            tcp_port: listen_port(&config, ListenProto::Tcp),
            tls_port: listen_port(&config, ListenProto::Tls),
        },
        ring_timeout: config.sip.ring_timeout,
        max_attempts: config.sip.max_attempts,
        t1: config.sip.t1,
        max_calls: config.sip.max_calls,
        udp_socket: 0,
        media_ip: config.media.advertised_ip,
        max_udp_request: config.sip.max_udp_request_bytes,
        recordings_dir: config.media.recordings_dir.clone(),
        target_timeout: config.sip.target_timeout,
    };
    let open_files = raise_open_files_limit();
    // every RTP/RTCP pair is two sockets; keep room for TCP connections, the database, the
    // spool, the API and the logs
    let reserve = 1024 + config.sip.tcp_max_connections as u64;
    let port_max = match fit_media_to_fd_limit(
        config.media.port_min,
        config.media.port_max,
        open_files,
        reserve,
    ) {
        Some(max) => {
            tracing::warn!(
                open_files,
                port_min = config.media.port_min,
                configured_port_max = config.media.port_max,
                port_max = max,
                "[media] port range needs more sockets than the open-files limit allows (each pair is two, {reserve} kept for TCP, the database and the spool): using the ports up to port_max only; raise the limit (LimitNOFILE= in systemd, ulimit -n) to use them all"
            );
            max
        }
        None => config.media.port_max,
    };
    let ranges = media_ranges(config.media.port_min, port_max, workers)?;
    let compliance = Arc::new(std::sync::Mutex::new(dce_compliance::Compliance::default()));
    let shared = match &config.storage.redis() {
        Some(target) => {
            let mut s = crate::shared::Shared::connect(
                target,
                &config.storage.redis_key_prefix,
                config.storage.redis_timeout,
            )
            .await;
            // one heartbeat per process: two nodes given the same id still count as two
            let mut tail = [0u8; 4];
            let _ = getrandom::fill(&mut tail);
            let node = format!("{}:{:08x}", config.node.id, u32::from_le_bytes(tail));
            s.start_caps(config.storage.cap_lease, &node);
            Some(s)
        }
        None => None,
    };
    if let Ok(mut c) = compliance.lock() {
        ComplianceSetup::load(&config.compliance)?.apply(&mut c, shared.is_some());
    }
    let db = crate::store::Db::connect(&config.storage.database_url)
        .with_context(|| format!("bad storage.database_url {}", config.storage.database_url))?;
    let spool = crate::store::Spool::new(&config.storage.spool_dir);
    // The database may be away: calls are served from the start regardless. Consent arrives
    // when it answers (calls of consent-gated campaigns are refused until then), and the CDR
    // writer spools until it has migrated.
    let (gate_tx, gate) = tokio::sync::oneshot::channel();
    // Callers the duplicate rules remember, shared by every worker; refilled from the CDRs
    // of the longest window once the database answers.
    let duplicates = Arc::new(crate::call::callers::Memory::default());
    {
        let (db, compliance, migrate) =
            (db.clone(), compliance.clone(), config.storage.auto_migrate);
        let (duplicates, rules) = (duplicates.clone(), snapshot.clone());
        tokio::spawn(async move {
            load_consent(&db, migrate, &compliance).await;
            let _ = gate_tx.send(());
            restore_duplicates(&db, &duplicates, &rules).await;
        });
    }
    let consent_db = db.clone();
    let retention = crate::store::Retention {
        days: config.storage.anonymize_after_days,
        key_file: config.storage.spool_dir.join("anon.key"),
    };
    let http_db = db.clone();
    // GDPR erasures: the list is read before any CDR can be written
    let gdpr = crate::store::Gdpr::open(&config.storage.spool_dir)?;
    // The webhooks of the running config (a reload replaces them): the writer derives each
    // stored call's postbacks from them, the sender signs with their secrets.
    let webhooks = Arc::new(std::sync::RwLock::new(config.routing.webhooks.clone()));
    let (db_sink, writer, writer_stats) = crate::store::start(
        db,
        spool,
        config.storage.auto_migrate,
        10_000,
        retention,
        gdpr.clone(),
        gate,
        webhooks.clone(),
    );
    tokio::spawn(crate::store::postbacks::run(
        http_db.clone(),
        webhooks.clone(),
    ));
    let mut sinks: Vec<Box<dyn crate::call::cdr::CdrSink>> = vec![Box::new(db_sink)];
    if let Some(path) = &config.cdr.jsonl_path {
        sinks.push(Box::new(
            JsonlSink::open_with(path, Some(gdpr.clone()))
                .with_context(|| format!("cannot open CDR file {}", path.display()))?,
        ));
    }
    // One set of sinks for every worker; the last worker to stop drops it, which flushes the
    // JSON-lines file and closes the writer's queue.
    let sink = crate::call::cdr::SharedSink::new(Box::new(crate::call::cdr::Tee(sinks)));
    let (dns_table, dns_dests) = start_dns(&config, &rx_gate).await?;
    let tls_targets = Arc::new(
        crate::transport::tls::TlsTargets::new(&config.routing.buyers, dns_table.clone())
            .map_err(anyhow::Error::msg)?,
    );
    let outbound = crate::transport::outbound::Outbound::new(
        shards.clone(),
        rx_gate.clone(),
        counters.clone(),
        limits,
        config.sip.target_timeout,
        tokio::runtime::Handle::current(),
        tls_targets.clone(),
    );
    let shared_checks = shared.as_ref().map(|_| crate::call::SharedChecks {
        max_calls_per_day: config.compliance.max_calls_per_day,
        allow_on_error: config.compliance.on_lookup_error
            == crate::config::OnLookupError::AllowAndFlag,
        deadline: config.storage.redis_timeout,
        on_cap_error: config.storage.on_cap_error,
    });
    let events = crate::events::Bus::default();
    // STIR/SHAKEN: one certificate cache and fetcher for the node.
    let stir_node = config
        .stir
        .as_ref()
        .map(|c| crate::stir::StirNode::new(c, None))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(st) = &config.stir {
        tracing::info!(ca_file = %st.ca_file.display(), anchors = st.anchors.len(), max_age_s = st.max_age_s, fetch_timeout_ms = st.fetch_timeout.as_millis() as u64, x5u_allow = ?st.x5u_allow, sign_div = st.sign_div.is_some(), "STIR/SHAKEN verification on");
        if config.sip.max_udp_request_bytes < 3000 {
            tracing::warn!(max_udp_request_bytes = config.sip.max_udp_request_bytes, "STIR/SHAKEN is on and passes each Identity (~0.7 KB) to the buyers: a buyer INVITE over UDP larger than sip.max_udp_request_bytes fails its attempt (attempted:too_large); raise it (e.g. 4000) or reach buyers over TCP");
        }
    }
    // Prices promised by `POST /v1/bid`, shared by every worker.
    let reservations = Arc::new(crate::call::Reservations::default());
    let draining_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut port_gauges = Vec::new();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    let (died_tx, died) = mpsc::unbounded_channel();
    for (index, ((socks, inbound), (port_min, port_max))) in
        udp_sockets.into_iter().zip(inbound).zip(ranges).enumerate()
    {
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let relay = dce_media::Relay::new(
            dce_media::RelayConfig {
                bind_ip: config.media.bind_ip,
                port_min,
                port_max,
                rtp_timeout: config.media.rtp_timeout,
                strict_source: config.media.strict_source,
                latch_any_source: config.media.latch_any_source,
            },
            media_tx,
        )
        // the relay's own thread (`dce-rtp`) moves the packets; the SIP worker only queues
        // commands for it (docs/decisions/0011-relay-thread.md)
        .with_context(|| format!("cannot start the media relay of SIP worker {index}"))?;
        port_gauges.push(relay.port_gauge());
        let (control_tx, control) = mpsc::unbounded_channel();
        controls.push(control_tx);
        let make = {
            let (settings, snapshot, live, carriers) = (
                settings.clone(),
                snapshot.clone(),
                live.clone(),
                config.routing.carriers.clone(),
            );
            let stir = stir_node.as_ref().map(|n| n.stir.clone());
            let (compliance, counters, events, dns_table, reservations, duplicates) = (
                compliance.clone(),
                counters.clone(),
                events.clone(),
                dns_table.clone(),
                reservations.clone(),
                duplicates.clone(),
            );
            let (timers, local, host) = (
                timers,
                Local {
                    hosts: local_hosts.clone(),
                },
                config.sip.advertised_host.clone(),
            );
            move || {
                let ids = match workers {
                    1 => crate::ids::Ids::os(),
                    _ => crate::ids::Ids::os().sharded(index as u8),
                };
                let mut controller = Controller::new(
                    settings,
                    snapshot,
                    live,
                    &carriers,
                    Box::new(compliance),
                    Arc::new(SystemClock),
                    ids,
                    counters.clone(),
                    Box::new(relay),
                );
                controller.set_shared(shared_checks);
                controller.set_stir(stir);
                controller.set_events(events);
                controller.set_dns(dns_table);
                controller.set_reservations(reservations);
                controller.set_duplicates(duplicates);
                if index == 0 {
                    // One worker sends the buyers' OPTIONS pings (their state is shared).
                    controller.set_pinger(std::time::Instant::now());
                }
                EdgeCore::new(timers, local, host, counters, controller)
            }
        };
        let setup = crate::shard::Setup {
            index,
            udp: socks,
            inbound,
            shards: shards.clone(),
            control,
            core: Box::new(make),
            media: media_rx,
            sink: Box::new(sink.clone()),
            shared: shared.clone(),
            gate: rx_gate.clone(),
            counters: counters.clone(),
            max_message: config.sip.max_message_bytes,
            drain: config.node.drain_timeout,
            died: died_tx.clone(),
            outbound: outbound.clone(),
            node_id: config.node.id.clone(),
            stir: stir_node.clone(),
        };
        threads.push(crate::shard::spawn(setup).context("cannot start a SIP worker thread")?);
    }
    drop(sink);
    tracing::info!(
        node = %config.node.id,
        workers,
        carriers = config.routing.carriers.len(),
        campaigns = config.routing.campaigns.len(),
        buyers = config.routing.buyers.len(),
        "DCE edge running"
    );
    let (api_tx, api_rx) = mpsc::unbounded_channel();
    let http = match config.http.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for the HTTP API on {addr}"))?;
            tracing::info!(listen = %addr, "HTTP API listening");
            let mut st = crate::http::ApiState::new(
                &config.http,
                counters.clone(),
                http_db,
                config.storage.spool_dir.clone(),
                shared.clone(),
                writer_stats,
                api_tx,
            );
            st.events = events;
            st.compliance = Some(compliance.clone());
            st.ports = Some(port_gauges);
            st.draining = draining_flag.clone();
            st.gdpr = Some(gdpr);
            st.dns = Some(dns_table.clone());
            st.webhooks = webhooks.clone();
            Some(tokio::spawn(crate::http::serve(
                listener,
                Arc::new(st),
                config.http.header_timeout,
            )))
        }
        None => None,
    };
    let node = Node {
        controls,
        counters: counters.clone(),
        gate: rx_gate,
        config_path,
        compliance,
        shared_redis: shared.is_some(),
        dns_dests,
        acceptors,
        tls_targets,
        webhooks,
        next_quote: std::sync::atomic::AtomicUsize::new(0),
        stir: std::sync::Mutex::new(stir_node),
        live,
        db: consent_db,
        drain: config.node.drain_timeout,
        draining_flag,
    };
    let outcome = node.run(threads, api_rx, died, shutdown).await;
    if let Some(h) = http {
        h.abort();
    }
    // The workers dropped the CDR sinks; the writer then stores (or spools) what it holds.
    drop(shards);
    if tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .is_err()
    {
        tracing::error!("CDR writer did not finish in 15 s; what it held is in the spool or lost");
    }
    outcome.map(|()| counters)
}

/// The media port range split between `workers` (each gets whole RTP/RTCP pairs); an error
/// when some worker would get none.
fn media_ranges(min: u16, max: u16, workers: usize) -> anyhow::Result<Vec<(u16, u16)>> {
    let start = min + (min % 2);
    let pairs = usize::from(max.saturating_sub(start)).div_ceil(2);
    let each = pairs / workers;
    if each == 0 {
        anyhow::bail!(
            "media.port_min..port_max holds {pairs} RTP/RTCP pairs: too few for {workers} SIP workers"
        );
    }
    Ok((0..workers)
        .map(|i| {
            let lo = start as usize + i * each * 2;
            let hi = if i + 1 == workers {
                max as usize
            } else {
                lo + each * 2 - 1
            };
            (lo as u16, hi as u16)
        })
        .collect())
}

/// Raise this process's open-files soft limit to its hard limit (a media range of 20,000
/// ports is 20,000 sockets); returns the soft limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_cur < l.rlim_max {
            let want = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                l.rlim_cur = l.rlim_max;
            }
        }
    }
    l.rlim_cur
}

/// The highest media port that keeps the relay's sockets (two per pair) within `limit` open
/// files less `reserve`; `None` when the whole range fits. Without it a busy node ran out of
/// file descriptors and could no longer open its database or spool files.
fn fit_media_to_fd_limit(min: u16, max: u16, limit: u64, reserve: u64) -> Option<u16> {
    let start = u64::from(min + (min % 2));
    let pairs = u64::from(max).saturating_sub(start).div_ceil(2);
    let allowed = limit.saturating_sub(reserve) / 2;
    if pairs <= allowed {
        return None;
    }
    // at least one pair, so that the range stays valid (media_ranges says if it is too few)
    Some((start + 2 * allowed.max(1) - 1).min(u64::from(max)) as u16)
}

/// glibc keeps what is freed in its per-thread arenas: after a burst (an overload, a flood)
/// the process would keep its peak RSS for good. Every 5 s, when more than 32 MiB are resident
/// but not in use by the allocator's callers, give them back to the kernel
/// (docs/decisions/0009-edge-limits.md).
async fn release_freed_memory() {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: sysconf, mallinfo2 and malloc_trim take no pointers; glibc's allocator takes
    // its arena locks itself.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // Resident pages, from /proc/self/statm (second field), in bytes.
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0);
    // SAFETY: as above.
    let mi = unsafe { libc::mallinfo2() };
    let in_use = mi.uordblks + mi.hblkhd;
    if resident.saturating_sub(in_use) > 32 << 20 {
        // SAFETY: as above.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            resident_mib = resident >> 20,
            in_use_mib = in_use >> 20,
            "returned freed heap memory to the kernel"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// A config and its compliance files, read for a reload.
struct Reloaded {
    path: PathBuf,
    cfg: Config,
    setup: ComplianceSetup,
}

/// Read the config and the files it names; `None` (with the reasons logged) when it is bad, and
/// the running config stays.
fn prepare_reload(path: PathBuf) -> Result<Reloaded, Vec<String>> {
    match crate::config::load(&path) {
        Ok(cfg) => match ComplianceSetup::load(&cfg.compliance) {
            Ok(setup) => Ok(Reloaded { path, cfg, setup }),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "reload refused; the running config stays");
                Err(vec![format!("{}: {e}", path.display())])
            }
        },
        Err(errors) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!(file = %path.display(), problems = errors.len(), "reload refused; the running config stays");
            Err(errors.iter().map(|e| e.to_string()).collect())
        }
    }
}

type ReloadDone = (Result<Reloaded, Vec<String>>, Option<ReloadReply>);

/// The node task: signals, the HTTP API's requests and reloads, the periodic counter report;
/// it tells the SIP workers what to do and waits for them to stop.
struct Node {
    controls: Vec<mpsc::UnboundedSender<crate::shard::Control>>,
    counters: Arc<Counters>,
    /// The receive side's per-source limits and overload shedding.
    gate: Arc<Gate>,
    config_path: Option<PathBuf>,
    compliance: Arc<std::sync::Mutex<dce_compliance::Compliance>>,
    /// Redis is configured (the fleet-wide checks run there).
    shared_redis: bool,
    live: Arc<Live>,
    db: crate::store::Db,
    /// SIGTERM: how long active calls may finish.
    drain: Duration,
    /// Set while draining (for `/health`).
    draining_flag: Arc<std::sync::atomic::AtomicBool>,
    /// The buyer host names the resolver keeps fresh (a reload sends the new set).
    dns_dests: tokio::sync::watch::Sender<Vec<crate::dns::Dest>>,
    /// The `tls://` listeners' certificate holders (reloaded with the config).
    acceptors: Vec<crate::transport::tls::Acceptor>,
    /// TLS buyers' names and CAs (replaced on reload).
    tls_targets: Arc<crate::transport::tls::TlsTargets>,
    /// The buyers' and carriers' webhooks (replaced on reload).
    webhooks: Arc<std::sync::RwLock<crate::webhooks::Webhooks>>,
    /// Round-robin over the workers for bid requests.
    next_quote: std::sync::atomic::AtomicUsize,
    /// STIR/SHAKEN as the workers have it (a reload keeps its checked certificates when the
    /// trust anchors stay).
    stir: std::sync::Mutex<Option<Arc<crate::stir::StirNode>>>,
}

/// The port of the first listener of `proto`.
fn listen_port(config: &Config, proto: ListenProto) -> Option<u16> {
    config
        .sip
        .listen
        .iter()
        .find(|l| l.proto == proto)
        .map(|l| l.addr.port())
}

/// Start the background resolver for the buyers given by host name (RFC 3263) and wait, a
/// bounded time, for their first answers, so the first calls find them. The addresses found
/// are trusted by the gate like buyers given by address.
async fn start_dns(
    config: &Config,
    gate: &Arc<Gate>,
) -> anyhow::Result<(
    Arc<crate::dns::Table>,
    tokio::sync::watch::Sender<Vec<crate::dns::Dest>>,
)> {
    let table = Arc::new(crate::dns::Table::default());
    let dests = crate::config::routing::dests(&config.routing.buyers);
    let (tx, rx) = tokio::sync::watch::channel(dests.clone());
    // Buyer legs leave from the first UDP listener: ask for the address family it can reach.
    let first = config
        .sip
        .listen
        .iter()
        .find(|l| l.proto == ListenProto::Udp)
        .map(|l| l.addr.ip());
    let (v4, v6) = match first {
        Some(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => (true, true),
        Some(std::net::IpAddr::V6(_)) => (false, true),
        _ => (true, false),
    };
    match crate::dns::resolver::Hickory::new(&config.dns.servers, config.dns.timeout, v4, v6) {
        Ok(dns) => {
            let g = gate.clone();
            tokio::spawn(crate::dns::resolver::run(
                dns,
                table.clone(),
                rx,
                Box::new(move |ips| g.trust_resolved(&ips)),
            ));
            if !dests.is_empty() {
                let limit = config.dns.timeout * 2 + Duration::from_millis(500);
                crate::dns::resolver::first_round(&table, &dests, limit).await;
                for d in &dests {
                    if table.get(&d.key()).is_none_or(|s| s.answer.is_none()) {
                        tracing::warn!(host = %d.key(), "buyer host has not resolved yet: its buyer is excluded:dns until it does");
                    }
                }
            }
        }
        Err(e) if dests.is_empty() => {
            tracing::warn!(error = %e, "no DNS resolver: buyer URIs with host names will not resolve");
        }
        Err(e) => anyhow::bail!(
            "{e} (buyers {} need it)",
            dests
                .iter()
                .map(|d| d.host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok((table, tx))
}

impl Node {
    /// SIGHUP or `POST /v1/reload`: re-read the config and its files off the event loop (a
    /// national DNC file is hundreds of MB; calls keep flowing meanwhile); the result comes
    /// back on `done`, with `reply` for the API caller.
    fn start_reload(&self, done: mpsc::UnboundedSender<ReloadDone>, reply: Option<ReloadReply>) {
        let Some(path) = self.config_path.clone() else {
            tracing::warn!("reload ignored: no config file to reload");
            if let Some(r) = reply {
                let _ = r.send(Err(vec!["DCE was started without a config file".into()]));
            }
            return;
        };
        tokio::task::spawn_blocking(move || {
            let _ = done.send((prepare_reload(path), reply));
        });
    }

    fn tell_all(&self, mut make: impl FnMut() -> crate::shard::Control) {
        for c in &self.controls {
            let _ = c.send(make());
        }
    }

    /// Ask every worker; the answers come on the receivers, in worker order.
    fn ask_all<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> crate::shard::ShardApi,
    ) -> Vec<oneshot::Receiver<T>> {
        self.controls
            .iter()
            .map(|c| {
                let (tx, rx) = oneshot::channel();
                let _ = c.send(crate::shard::Control::Api(make(tx)));
                rx
            })
            .collect()
    }

    /// A request from the HTTP API: calls are asked of every worker (each knows its own),
    /// buyers of the first (their live state is shared).
    fn on_api(&self, req: ApiRequest, reload_tx: &mpsc::UnboundedSender<ReloadDone>) {
        use crate::shard::{Control, ShardApi};
        match req {
            ApiRequest::Reload(reply) => self.start_reload(reload_tx.clone(), Some(reply)),
            ApiRequest::Calls(reply) => {
                let rxs = self.ask_all(ShardApi::Calls);
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    for rx in rxs {
                        all.extend(rx.await.unwrap_or_default());
                    }
                    let _ = reply.send(all);
                });
            }
            ApiRequest::Call(id, reply) => {
                let rxs = self.ask_all(|tx| ShardApi::Call(id.clone(), tx));
                tokio::spawn(async move {
                    let mut found = None;
                    for rx in rxs {
                        found = found.or(rx.await.ok().flatten());
                    }
                    let _ = reply.send(found);
                });
            }
            ApiRequest::Hangup(id, reply) => {
                let rxs = self.ask_all(|tx| ShardApi::Hangup(id.clone(), tx));
                tokio::spawn(async move {
                    let mut any = false;
                    for rx in rxs {
                        any |= rx.await.unwrap_or(false);
                    }
                    let _ = reply.send(any);
                });
            }
            ApiRequest::Buyers(reply) => {
                if let Some(c) = self.controls.first() {
                    let _ = c.send(Control::Api(ShardApi::Buyers(reply)));
                }
            }
            ApiRequest::PatchBuyer(id, patch, reply) => {
                if let Some(c) = self.controls.first() {
                    let _ = c.send(Control::Api(ShardApi::PatchBuyer(id, patch, reply)));
                }
            }
            ApiRequest::Quote(req, reply) => {
                // Any worker can price it (the reservations are node-wide): spread them.
                let n = self.controls.len().max(1);
                let i = self
                    .next_quote
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    % n;
                if let Some(c) = self.controls.get(i) {
                    let _ = c.send(Control::Api(ShardApi::Quote(req, reply)));
                }
            }
        }
    }

    /// Apply a config read by [`prepare_reload`] and answer the caller, if any.
    fn finish_reload(&self, (r, reply): ReloadDone) {
        let outcome = r.and_then(|r| self.reload(r).map_err(|e| vec![e]));
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Apply a config read by [`prepare_reload`].
    fn reload(&self, r: Reloaded) -> Result<String, String> {
        let Reloaded { path, cfg, setup } = r;
        let snap = match snapshot_of(&cfg, &self.live) {
            Ok(snap) => Arc::new(snap),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "reload refused");
                return Err(format!("{}: {e}", path.display()));
            }
        };
        if cfg.sip.workers.max(1) != self.controls.len() {
            tracing::warn!(
                running = self.controls.len(),
                configured = cfg.sip.workers,
                "sip.workers changed: it takes effect at the next restart"
            );
        }
        let max = setup.max_calls_per_day;
        if let Ok(mut c) = self.compliance.lock() {
            setup.apply(&mut c, self.shared_redis);
        }
        // In the background: a database that is away must not hold up calls.
        let (db, compliance) = (self.db.clone(), self.compliance.clone());
        tokio::spawn(async move { load_consent(&db, false, &compliance).await });
        let shared = self.shared_redis.then(|| crate::call::SharedChecks {
            max_calls_per_day: max,
            allow_on_error: cfg.compliance.on_lookup_error
                == crate::config::OnLookupError::AllowAndFlag,
            deadline: cfg.storage.redis_timeout,
            on_cap_error: cfg.storage.on_cap_error,
        });
        let _ = self
            .dns_dests
            .send(crate::config::routing::dests(&cfg.routing.buyers));
        *self.webhooks.write().unwrap_or_else(|e| e.into_inner()) = cfg.routing.webhooks.clone();
        if let Err(e) = self.tls_targets.set(&cfg.routing.buyers) {
            tracing::error!(error = %e, "TLS settings of the buyers not reloaded; the old ones stay");
        }
        if let Some(t) = &cfg.sip.tls {
            for a in &self.acceptors {
                match a.reload(t) {
                    Ok(()) => tracing::info!(cert = %t.cert.display(), "TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays")
                    }
                }
            }
        }
        let mut current = self.stir.lock().unwrap_or_else(|e| e.into_inner());
        let stir = match cfg
            .stir
            .as_ref()
            .map(|c| crate::stir::StirNode::new(c, current.as_deref()))
            .transpose()
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "reload refused");
                return Err(format!("{}: {e}", path.display()));
            }
        };
        let carriers = Arc::new(cfg.routing.carriers.clone());
        self.tell_all(|| crate::shard::Control::Reload {
            snapshot: snap.clone(),
            carriers: carriers.clone(),
            shared,
            stir: stir.clone(),
        });
        *current = stir;
        drop(current);
        self.gate
            .reconfigure(cfg.sip.source_limits(), trusted_sources(&cfg));
        tracing::info!(
            file = %path.display(),
            campaigns = cfg.routing.campaigns.len(),
            buyers = cfg.routing.buyers.len(),
            "config reloaded; new calls use it, active calls keep theirs"
        );
        Ok(format!(
            "{}: {} campaigns, {} buyers",
            path.display(),
            cfg.routing.campaigns.len(),
            cfg.routing.buyers.len()
        ))
    }

    async fn run(
        self,
        threads: Vec<std::thread::JoinHandle<crate::shard::Delays>>,
        mut api: mpsc::UnboundedReceiver<ApiRequest>,
        mut died: mpsc::UnboundedReceiver<usize>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut report = tokio::time::interval(Duration::from_secs(60));
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        report.tick().await;
        let mut last_report = String::new();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let (reload_tx, mut reloaded) = mpsc::unbounded_channel::<ReloadDone>();
        tokio::pin!(shutdown);
        // The workers' threads, joined off the event loop; resolves when all have stopped.
        let (done_tx, mut done) = oneshot::channel();
        std::thread::spawn(move || {
            let delays: Vec<_> = threads.into_iter().map(|t| t.join().ok()).collect();
            let _ = done_tx.send(delays);
        });
        let mut shutting_down = false;
        // While draining, a second SIGTERM (or Ctrl-C) ends the calls now.
        let mut again: Option<tokio::signal::unix::Signal> = None;
        let delays = loop {
            tokio::select! {
                _ = &mut shutdown, if !shutting_down => {
                    shutting_down = true;
                    self.draining_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    let active = self.counters.m.active_calls();
                    if active == 0 || self.drain.is_zero() {
                        tracing::info!(active_calls = active, "shutting down: ending active calls");
                    } else {
                        tracing::info!(active_calls = active, drain_timeout_s = self.drain.as_secs(), "shutting down: no new calls; waiting for active calls to finish (a second SIGTERM ends them now)");
                        again = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                    }
                    self.tell_all(|| crate::shard::Control::Drain);
                }
                _ = async { match again.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {
                    tracing::warn!(active_calls = self.counters.m.active_calls(), "second SIGTERM: ending active calls now");
                    again = None;
                    self.tell_all(|| crate::shard::Control::EndNow);
                }
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => self.start_reload(reload_tx.clone(), None),
                Some(req) = api.recv() => self.on_api(req, &reload_tx),
                Some(r) = reloaded.recv() => self.finish_reload(r),
                _ = report.tick() => {
                    let r = self.counters.report();
                    if r != last_report {
                        tracing::info!(counters = %r, "edge counters");
                        last_report = r;
                    }
                }
                Some(w) = died.recv() => {
                    tracing::error!(worker = w, "a SIP worker panicked; stopping DCE (its calls are lost, the others are ended with BYE)");
                    shutting_down = true;
                    self.draining_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.tell_all(|| crate::shard::Control::EndNow);
                }
                d = &mut done => break d.unwrap_or_default(),
            }
        };
        let mut first = Latency::default();
        let mut failover = Latency::default();
        let mut socket_wait = Latency::default();
        let (mut bid_start, mut bid_handoff, mut over_bidders) =
            (Latency::default(), Latency::default(), Latency::default());
        let mut failed = 0;
        for d in delays {
            match d {
                Some(d) => {
                    first.merge(&d.first);
                    failover.merge(&d.failover);
                    socket_wait.merge(&d.socket_wait);
                    bid_start.merge(&d.bid_start);
                    bid_handoff.merge(&d.bid_handoff);
                    over_bidders.merge(&d.over_bidders);
                }
                None => failed += 1,
            }
        }
        tracing::info!(invite_delay = %first.report(), failover_invite_delay = %failover.report(), udp_socket_wait = %socket_wait.report(), "INVITE in → buyer INVITE out");
        crate::logging::flush();
        eprintln!(
            "dce: invite_delay {} failover {} udp_socket_wait {}",
            first.report(),
            failover.report(),
            socket_wait.report()
        );
        if !bid_start.is_empty() {
            tracing::info!(over_bidders = %over_bidders.report(), bid_request_start = %bid_start.report(), bid_answer_handoff = %bid_handoff.report(), "real-time bids: the delay added on top of the slowest bidder; asked → request started; answer read → taken");
            crate::logging::flush();
            eprintln!(
                "dce: over_bidders {} bid_request_start {} bid_answer_handoff {}",
                over_bidders.report(),
                bid_start.report(),
                bid_handoff.report()
            );
        }
        if failed > 0 {
            anyhow::bail!("{failed} SIP worker(s) stopped by a panic (see the log above)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::media_ranges;

    #[test]
    fn the_media_range_is_cut_to_what_the_open_files_limit_allows() {
        use super::fit_media_to_fd_limit as fit;
        // 10,000 pairs need 20,000 sockets: fits in 30,000 with 1,024 kept
        assert_eq!(fit(40000, 59999, 30_000, 1_024), None);
        // 20,000 open files, 1,024 kept: 9,488 pairs = ports 40000..=58975
        let max = fit(40000, 59999, 20_000, 1_024).unwrap();
        assert_eq!(max, 40000 + 2 * 9_488 - 1);
        assert_eq!((u64::from(max) + 1 - 40000) / 2 * 2 + 1_024, 20_000);
        // an odd port_min starts at the next even port
        assert_eq!(
            fit(40001, 59999, 2_048 + 1_024, 1_024),
            Some(40002 + 2 * 1024 - 1)
        );
        // a limit below the reserve still leaves one pair (and says so in the log)
        assert_eq!(fit(40000, 59999, 100, 1_024), Some(40001));
    }

    #[test]
    fn the_media_range_is_split_in_whole_pairs_and_loses_none() {
        for (min, max, workers) in [
            (40000, 59999, 1),
            (40000, 59999, 2),
            (40001, 59998, 3),
            (10000, 10003, 2),
            (20000, 20999, 7),
        ] {
            let ranges = media_ranges(min, max, workers).unwrap();
            assert_eq!(ranges.len(), workers);
            let whole = dce_media::ports::PortPool::new(min, max).total();
            let split: usize = ranges
                .iter()
                .map(|&(lo, hi)| {
                    assert!(lo % 2 == 0 && lo >= min && hi <= max, "{lo}..{hi}");
                    dce_media::ports::PortPool::new(lo, hi).total()
                })
                .sum();
            assert_eq!(split, whole, "{min}..{max} over {workers}");
            for w in ranges.windows(2) {
                assert!(w[0].1 < w[1].0, "disjoint: {ranges:?}");
            }
        }
        let e = media_ranges(10000, 10003, 3).unwrap_err().to_string();
        assert!(e.contains("too few for 3 SIP workers"), "{e}");
    }
}

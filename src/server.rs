//! The running process: binds the listeners, starts the socket drivers, and runs the core task
//! that owns the transaction layer and answers at the edge.
//!
//! One core task holds all SIP state in an [`EdgeCore`]; socket tasks only move bytes. The core
//! task reads the clock (`Instant::now()`), passes it in, and sleeps until the next timer.

use crate::call::cdr::JsonlSink;
use crate::call::leg::Me;
use crate::call::{Controller, Settings};
use crate::clock::SystemClock;
use crate::config::{Config, ListenProto};
use crate::counters::{Counter, Counters};
use crate::edge::{EdgeCore, Local};
use crate::latency::Latency;
use crate::transport::gate::{trusted_sources, Gate};
use crate::transport::tcp::{accept_loop, TcpLimits};
use crate::transport::{udp, Inbound};
use anyhow::Context;
use bytes::Bytes;
use dce_routing::{Live, Snapshot};
use dce_sip::transaction::{Peer, TimerConfig, Transport};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

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
    let (core_tx, core_rx) = mpsc::channel::<Inbound>(crate::transport::CORE_QUEUE);
    let rx_gate = Arc::new(Gate::new(&config, counters.clone()));
    let mut udp_sockets = Vec::new();
    let mut local_hosts = vec![config.sip.advertised_host.to_ascii_lowercase()];
    let limits = TcpLimits {
        max_message: config.sip.max_message_bytes,
        idle: config.sip.tcp_idle_timeout,
        message: config.sip.tcp_message_timeout,
        per_ip: config.sip.tcp_max_connections_per_ip,
        total: config.sip.tcp_max_connections,
    };
    for l in &config.sip.listen {
        local_hosts.push(l.addr.ip().to_string());
        match l.proto {
            ListenProto::Udp => {
                let sock =
                    Arc::new(udp::bind(l.addr).with_context(|| format!("cannot listen on {l}"))?);
                let index = udp_sockets.len() as u64;
                tokio::spawn(udp::receive_loop(
                    sock.clone(),
                    index,
                    config.sip.max_message_bytes,
                    core_tx.clone(),
                    rx_gate.clone(),
                    counters.clone(),
                ));
                udp_sockets.push(sock);
            }
            ListenProto::Tcp => {
                let listener = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("cannot listen on {l}"))?;
                tokio::spawn(accept_loop(
                    listener,
                    limits,
                    core_tx.clone(),
                    rx_gate.clone(),
                    counters.clone(),
                ));
            }
        }
        tracing::info!(listen = %l, "listening");
    }
    drop(core_tx);
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
        },
        ring_timeout: config.sip.ring_timeout,
        max_attempts: config.sip.max_attempts,
        t1: config.sip.t1,
        max_calls: config.sip.max_calls,
        udp_socket: 0,
        media_ip: config.media.advertised_ip,
        max_udp_request: config.sip.max_udp_request_bytes,
    };
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let relay = dce_media::Relay::new(
        dce_media::RelayConfig {
            bind_ip: config.media.bind_ip,
            port_min: config.media.port_min,
            port_max: config.media.port_max,
            rtp_timeout: config.media.rtp_timeout,
            strict_source: config.media.strict_source,
            latch_any_source: config.media.latch_any_source,
        },
        media_tx,
    );
    let port_gauge = relay.port_gauge();
    let compliance = Arc::new(std::sync::Mutex::new(dce_compliance::Compliance::default()));
    let shared = match &config.storage.redis_url {
        Some(url) => Some(
            crate::shared::Shared::connect(
                url,
                &config.storage.redis_key_prefix,
                config.storage.redis_timeout,
            )
            .await,
        ),
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
    {
        let (db, compliance, migrate) =
            (db.clone(), compliance.clone(), config.storage.auto_migrate);
        tokio::spawn(async move {
            load_consent(&db, migrate, &compliance).await;
            let _ = gate_tx.send(());
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
    let (db_sink, writer, writer_stats) = crate::store::start(
        db,
        spool,
        config.storage.auto_migrate,
        10_000,
        retention,
        gdpr.clone(),
        gate,
    );
    let mut sinks: Vec<Box<dyn crate::call::cdr::CdrSink>> = vec![Box::new(db_sink)];
    if let Some(path) = &config.cdr.jsonl_path {
        sinks.push(Box::new(
            JsonlSink::open_with(path, Some(gdpr.clone()))
                .with_context(|| format!("cannot open CDR file {}", path.display()))?,
        ));
    }
    let sink = crate::call::cdr::Tee(sinks);
    let controller = Controller::new(
        settings,
        snapshot,
        live,
        &config.routing.carriers,
        Box::new(compliance.clone()),
        Arc::new(SystemClock),
        crate::ids::Ids::os(),
        counters.clone(),
        Box::new(relay),
    );
    let mut core = Core {
        sink: Box::new(sink),
        shared,
        edge: EdgeCore::new(
            timers,
            Local { hosts: local_hosts },
            config.sip.advertised_host.clone(),
            counters.clone(),
            controller,
        ),
        counters: counters.clone(),
        gate: rx_gate,
        udp: udp_sockets,
        tcp: HashMap::new(),
        config_path,
        latency: Latency::default(),
        compliance,
        db: consent_db,
        drain: config.node.drain_timeout,
        draining_flag: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    tracing::info!(
        node = %config.node.id,
        carriers = config.routing.carriers.len(),
        campaigns = config.routing.campaigns.len(),
        buyers = config.routing.buyers.len(),
        "DCE edge running"
    );
    if core.shared.is_some() {
        core.edge
            .calls()
            .set_shared(Some(crate::call::SharedChecks {
                max_calls_per_day: config.compliance.max_calls_per_day,
                allow_on_error: config.compliance.on_lookup_error
                    == crate::config::OnLookupError::AllowAndFlag,
                deadline: config.storage.redis_timeout,
            }));
    }
    let (api_tx, api_rx) = mpsc::unbounded_channel();
    let events = crate::events::Bus::default();
    core.edge.calls().set_events(events.clone());
    let draining = core.draining_flag.clone();
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
                core.shared.clone(),
                writer_stats,
                api_tx,
            );
            st.events = events;
            st.compliance = Some(core.compliance.clone());
            st.ports = Some(port_gauge);
            st.draining = draining;
            st.gdpr = Some(gdpr);
            Some(tokio::spawn(crate::http::serve(
                listener,
                Arc::new(st),
                config.http.header_timeout,
            )))
        }
        None => None,
    };
    core.run(core_rx, media_rx, api_rx, shutdown).await;
    if let Some(h) = http {
        h.abort();
    }
    let delay = core.latency.report();
    // Dropping the core drops the CDR sinks; the writer then stores (or spools) what it holds.
    drop(core);
    if tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .is_err()
    {
        tracing::error!("CDR writer did not finish in 15 s; what it held is in the spool or lost");
    }

    tracing::info!(invite_delay = %delay, "INVITE in → buyer INVITE out");
    eprintln!("dce: invite_delay {delay}");
    Ok(counters)
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

/// Where the outcome of an API-requested reload goes: what was loaded, or every problem.
pub type ReloadReply = tokio::sync::oneshot::Sender<Result<String, Vec<String>>>;

/// What the HTTP API asks of the core task (which owns the calls); each carries its reply.
pub enum ApiRequest {
    /// `POST /v1/reload`.
    Reload(ReloadReply),
    /// `GET /v1/calls`.
    Calls(tokio::sync::oneshot::Sender<Vec<crate::call::view::CallView>>),
    /// `GET /v1/calls/{id}`.
    Call(
        String,
        tokio::sync::oneshot::Sender<Option<crate::call::view::CallView>>,
    ),
    /// `POST /v1/calls/{id}/hangup`: true when the call existed.
    Hangup(String, tokio::sync::oneshot::Sender<bool>),
    /// `GET /v1/buyers`.
    Buyers(tokio::sync::oneshot::Sender<Vec<crate::call::view::BuyerView>>),
    /// `PATCH /v1/buyers/{id}`.
    PatchBuyer(
        String,
        crate::call::view::BuyerPatch,
        tokio::sync::oneshot::Sender<Option<crate::call::view::BuyerView>>,
    ),
}
type ReloadDone = (Result<Reloaded, Vec<String>>, Option<ReloadReply>);

struct Core {
    edge: EdgeCore,
    /// Where CDRs go (the database writer, and the JSON-lines copy).
    sink: Box<dyn crate::call::cdr::CdrSink>,
    counters: Arc<Counters>,
    /// The receive side's per-source limits and overload shedding.
    gate: Arc<Gate>,
    udp: Vec<Arc<UdpSocket>>,
    tcp: HashMap<u64, mpsc::Sender<Bytes>>,
    config_path: Option<PathBuf>,
    latency: Latency,
    compliance: Arc<std::sync::Mutex<dce_compliance::Compliance>>,
    shared: Option<crate::shared::Shared>,
    db: crate::store::Db,
    /// SIGTERM: how long active calls may finish.
    drain: Duration,
    /// Set while draining (for `/health`).
    draining_flag: Arc<std::sync::atomic::AtomicBool>,
}

impl Core {
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

    /// End every call with BYE; returns how long to wait for the BYEs' answers.
    fn end_calls(&mut self) -> Instant {
        let active = self.edge.calls().active_calls();
        tracing::info!(active_calls = active, "shutting down: ending active calls");
        self.edge
            .handle_input(crate::edge::Input::Shutdown, Instant::now());
        // With calls ended by BYE, give the BYEs time to be answered.
        let busy = active > 0 || self.edge.calls().pending_cdrs() > 0;
        Instant::now()
            + if busy {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            }
    }

    /// A request from the HTTP API.
    fn on_api(&mut self, req: ApiRequest, reload_tx: &mpsc::UnboundedSender<ReloadDone>) {
        let now = Instant::now();
        match req {
            ApiRequest::Reload(reply) => self.start_reload(reload_tx.clone(), Some(reply)),
            ApiRequest::Calls(reply) => {
                let _ = reply.send(self.edge.calls().calls_view(now));
            }
            ApiRequest::Call(id, reply) => {
                let _ = reply.send(self.edge.calls().call_view(&id, now));
            }
            ApiRequest::Hangup(id, reply) => {
                let _ = reply.send(self.edge.hang_up(&id, now));
            }
            ApiRequest::Buyers(reply) => {
                let _ = reply.send(self.edge.calls().buyers_view());
            }
            ApiRequest::PatchBuyer(id, patch, reply) => {
                let _ = reply.send(self.edge.calls().patch_buyer(&id, &patch));
            }
        }
    }

    /// Apply a config read by [`prepare_reload`] and answer the caller, if any.
    fn finish_reload(&mut self, (r, reply): ReloadDone) {
        let outcome = r.and_then(|r| self.reload(r).map_err(|e| vec![e]));
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Apply a config read by [`prepare_reload`].
    fn reload(&mut self, r: Reloaded) -> Result<String, String> {
        let Reloaded { path, cfg, setup } = r;
        let live = self.edge.calls().live().clone();
        let snap = match snapshot_of(&cfg, &live) {
            Ok(snap) => snap,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "reload refused");
                return Err(format!("{}: {e}", path.display()));
            }
        };
        let max = setup.max_calls_per_day;
        if let Ok(mut c) = self.compliance.lock() {
            setup.apply(&mut c, self.shared.is_some());
        }
        // In the background: a database that is away must not hold up calls.
        let (db, compliance) = (self.db.clone(), self.compliance.clone());
        tokio::spawn(async move { load_consent(&db, false, &compliance).await });
        if self.shared.is_some() {
            self.edge
                .calls()
                .set_shared(Some(crate::call::SharedChecks {
                    max_calls_per_day: max,
                    allow_on_error: cfg.compliance.on_lookup_error
                        == crate::config::OnLookupError::AllowAndFlag,
                    deadline: cfg.storage.redis_timeout,
                }));
        }
        self.edge
            .calls()
            .reload(Arc::new(snap), &cfg.routing.carriers);
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
        &mut self,
        mut rx: mpsc::Receiver<Inbound>,
        mut media: mpsc::UnboundedReceiver<dce_media::MediaEvent>,
        mut api: mpsc::UnboundedReceiver<ApiRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut report_at = Instant::now() + Duration::from_secs(60);
        let mut last_report = String::new();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let (reload_tx, mut reloaded) = mpsc::unbounded_channel::<ReloadDone>();
        tokio::pin!(shutdown);
        let mut stopping: Option<Instant> = None;
        // SIGTERM with calls up: they may finish until then.
        let mut draining: Option<Instant> = None;
        // While draining, a second SIGTERM (or Ctrl-C) cuts the drain short.
        let mut again: Option<tokio::signal::unix::Signal> = None;
        let (verdict_tx, mut verdicts) =
            mpsc::unbounded_channel::<(crate::call::LookupId, crate::call::Answer)>();
        // When the message being processed was read from its socket (for the INVITE delay).
        let mut rx_at: Option<Instant> = None;
        loop {
            if let (Some(until), None) = (draining, stopping) {
                if self.edge.calls().active_calls() == 0 || Instant::now() >= until {
                    stopping = Some(self.end_calls());
                }
            }
            if let Some(deadline) = stopping {
                // After shutdown: let BYEs and their answers go, then leave.
                let idle =
                    self.edge.calls().active_calls() == 0 && self.edge.calls().pending_cdrs() == 0;
                if Instant::now() >= deadline || idle {
                    // Whatever still waits for a media report is written without it.
                    self.edge.calls().flush_cdrs();
                    self.drain_outputs(&verdict_tx, None).await;
                    return;
                }
            }
            let wake = self
                .edge
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .min(report_at)
                .min(stopping.unwrap_or(report_at))
                .min(draining.unwrap_or(report_at));
            tokio::select! {
                                _ = &mut shutdown, if stopping.is_none() && draining.is_none() => {
                    let active = self.edge.calls().active_calls();
                    self.draining_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    if active == 0 || self.drain.is_zero() {
                        stopping = Some(self.end_calls());
                    } else {
                        // New calls get 503 from now on; the active ones may finish.
                        self.edge.calls().stop_accepting();
                        tracing::info!(active_calls = active, drain_timeout_s = self.drain.as_secs(), "shutting down: no new calls; waiting for active calls to finish (a second SIGTERM ends them now)");
                        draining = Some(Instant::now() + self.drain);
                        again = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                    }
                }
                _ = async { match again.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } }, if stopping.is_none() => {
                    tracing::warn!(active_calls = self.edge.calls().active_calls(), "second SIGTERM: ending active calls now");
                    again = None;
                    stopping = Some(self.end_calls());
                }
                Some(ev) = media.recv() => self.edge.handle_input(crate::edge::Input::Media(ev), Instant::now()),
                Some((id, answer)) = verdicts.recv() => self.edge.handle_input(crate::edge::Input::Lookup { id, answer }, Instant::now()),
                                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => self.start_reload(reload_tx.clone(), None),
                Some(req) = api.recv() => self.on_api(req, &reload_tx),
                Some(done) = reloaded.recv() => self.finish_reload(done),
                item = rx.recv() => match item {
                    Some(Inbound::TcpOpened { conn, tx }) => {
                        self.tcp.insert(conn, tx);
                    }
                    Some(Inbound::TcpClosed { conn }) => {
                        self.tcp.remove(&conn);
                    }
                    Some(Inbound::Message { bytes, from, at }) => {
                        let now = Instant::now();
                        self.gate.dequeued(at, now);
                        self.edge.handle_input(crate::edge::Input::Bytes { bytes, from }, now);
                        rx_at = Some(at);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    let now = Instant::now();
                    self.edge.handle_timeout(now);
                    if now >= report_at {
                        let r = self.counters.report();
                        if r != last_report {
                            tracing::info!(counters = %r, "edge counters");
                            last_report = r;
                        }
                        report_at = now + Duration::from_secs(60);
                    }
                }
            }
            self.drain_outputs(&verdict_tx, rx_at).await;
            rx_at = None;
        }
    }

    /// Carry out everything the core asked for: sends, CDRs, lookups. `rx_at` is when the
    /// message being handled was read (for the INVITE-in → INVITE-out delay).
    async fn drain_outputs(
        &mut self,
        answers: &mpsc::UnboundedSender<(crate::call::LookupId, crate::call::Answer)>,
        rx_at: Option<Instant>,
    ) {
        while let Some(out) = self.edge.poll_output() {
            match out {
                crate::edge::Output::Transmit(t) => {
                    let invite = t.bytes.starts_with(b"INVITE ");
                    self.send(t.to, t.bytes).await;
                    if let (true, Some(at)) = (invite, rx_at) {
                        self.latency.record(at.elapsed());
                    }
                }
                crate::edge::Output::Cdr(cdr) => self.sink.emit(*cdr),
                crate::edge::Output::Lookup(req) => {
                    let crate::call::Query::Shared(check) = req.query;
                    let tx = answers.clone();
                    match &self.shared {
                        Some(shared) => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let r = shared.check(&check).await;
                                let _ = tx.send((req.id, crate::call::Answer::Shared(r)));
                            });
                        }
                        None => {
                            let _ = tx.send((
                                req.id,
                                crate::call::Answer::Shared(crate::call::RemoteResult::Error(
                                    "no Redis".into(),
                                )),
                            ));
                        }
                    }
                }
            }
        }
    }

    fn udp_for(&self, to: &Peer) -> Option<Arc<UdpSocket>> {
        let idx = to.conn.unwrap_or(0) as usize;
        let family_ok = |s: &Arc<UdpSocket>| {
            s.local_addr()
                .map(|a| a.is_ipv4() == to.addr.is_ipv4())
                .unwrap_or(false)
        };
        self.udp
            .get(idx)
            .filter(|s| family_ok(s))
            .or_else(|| self.udp.iter().find(|s| family_ok(s)))
            .cloned()
    }

    async fn send(&mut self, to: Peer, bytes: Bytes) {
        match to.transport {
            Transport::Udp => {
                if let Some(sock) = self.udp_for(&to) {
                    if let Err(e) = sock.send_to(&bytes, to.addr).await {
                        self.counters.inc(Counter::UdpSendFailed);
                        tracing::debug!(to = %to.addr, error = %e, "udp send failed");
                    }
                }
            }
            Transport::Tcp => {
                let sent = to
                    .conn
                    .and_then(|c| self.tcp.get(&c))
                    .map(|tx| tx.try_send(bytes).is_ok())
                    .unwrap_or(false);
                if !sent {
                    self.counters.inc(Counter::TcpSendFailed);
                    tracing::info!(to = %to.addr, "TCP connection gone or backed up; message dropped");
                }
            }
        }
    }
}

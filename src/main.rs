//! The `dce` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dce",
    version,
    about = "Dependable Call Exchange edge: SIP/RTP call router"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum CdrCommand {
    /// Print the calls of a time range as CSV or JSON lines.
    Export {
        /// From (RFC 3339 or YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: String,
        /// To (RFC 3339 or YYYY-MM-DD), exclusive.
        #[arg(long)]
        to: String,
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum GdprCommand {
    /// Replace NUMBER by its keyed hash in every copy (database, spool, JSON-lines file),
    /// anonymise it in CDRs written later, and log the erasure (by pseudonym). When a DCE node
    /// runs on the same spool directory, the erasure must go through its API (it also holds
    /// queued CDRs and appends to the JSON-lines file): with --api-key (or DCE_API_KEY) this
    /// command sends it there, else it says so and changes nothing.
    Erase {
        /// The number (E.164 or 10-digit).
        number: String,
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
        /// An admin API key of the running node (default: $DCE_API_KEY).
        #[arg(long)]
        api_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum DncCommand {
    /// Turn a registry list (10-digit lines, or E.164) into the compact file DCE loads.
    Build {
        /// Input list.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum RtbCommand {
    /// Send one bid request to BUYER as a call would, print the exchange and what DCE reads
    /// in it. Exits 0 when the bidder answered (a bid or a refusal), 1 otherwise.
    Test {
        /// The buyer's id (it must have `rtb = { … }`).
        buyer: String,
        /// The caller, E.164 (masked in the request unless the buyer has expose_caller).
        #[arg(long)]
        caller: String,
        /// The dialled number (default: the first number of the buyer's first campaign).
        #[arg(long)]
        called: Option<String>,
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run DCE.
    Run {
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
    },
    /// Run DCE with a simulated carrier and three simulated buyers on loopback, place a few
    /// dozen calls, print what happened, and exit.
    Demo {
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
    },
    /// Apply the database migrations of `[storage] database_url`.
    Migrate {
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
    },
    /// Call detail records.
    Cdr {
        #[command(subcommand)]
        command: CdrCommand,
    },
    /// GDPR: anonymise every record of a number.
    Gdpr {
        #[command(subcommand)]
        command: GdprCommand,
    },
    /// Do-Not-Call files.
    Dnc {
        #[command(subcommand)]
        command: DncCommand,
    },
    /// Real-time bidding.
    Rtb {
        #[command(subcommand)]
        command: RtbCommand,
    },
    /// Check a config file; print every problem as file:line: message.
    CheckConfig {
        /// Config file.
        file: PathBuf,
    },
}

/// `dce rtb test`.
fn rtb_test(config: &std::path::Path, buyer: &str, caller: &str, called: Option<&str>) -> ExitCode {
    let Some((cfg, rt)) = config_and_runtime(config) else {
        return ExitCode::FAILURE;
    };
    let Some(b) = cfg.routing.buyers.iter().find(|b| b.id == buyer) else {
        eprintln!("{}: no buyer `{buyer}`", config.display());
        return ExitCode::FAILURE;
    };
    let Some(spec) = b.rtb.clone() else {
        eprintln!(
            "{}: buyer `{buyer}` has no rtb = {{ url = … }}",
            config.display()
        );
        return ExitCode::FAILURE;
    };
    let Some(caller) = dce_routing::normalize(caller) else {
        eprintln!("--caller `{caller}` is not a phone number");
        return ExitCode::FAILURE;
    };
    let campaign = b.campaigns.first().map(|&c| &cfg.routing.campaigns[c]);
    let called = match called {
        Some(n) => match dce_routing::normalize(n) {
            Some(n) => n,
            None => {
                eprintln!("--called `{n}` is not a phone number");
                return ExitCode::FAILURE;
            }
        },
        None => campaign
            .and_then(|c| c.numbers.first().cloned())
            .unwrap_or_default(),
    };
    let facts = dce::rtb::CallFacts {
        call_id: format!("rtb-test-{}", dce::ids::uuid()),
        caller: caller.clone(),
        called,
        campaign: campaign.map(|c| c.id.clone()).unwrap_or_default(),
        carrier: "rtb-test".into(),
        state: dce_routing::state_of_number(&caller).map(|s| s.code()),
        zip: None,
        tags: Vec::new(),
        loop_via: None,
    };
    let (body, content_type) = dce::rtb::format::request(spec.format, &facts, spec.expose_caller);
    println!("POST {} ({} format)", spec.url, spec.format.name());
    println!("Content-Type: {content_type}");
    for (n, _) in &spec.headers {
        // header values are often credentials: named, not printed
        println!("{n}: <set in the config>");
    }
    println!("\n{body}\n");
    let client = match rt.block_on(async { dce::rtb::client::Client::new(&cfg.node.id) }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot make the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(u64::from(spec.timeout_ms));
    let (r, latency_ms) = rt.block_on(client.exchange(&spec, &facts, deadline));
    match r {
        Ok((status, answer)) => {
            println!("HTTP {status} after {latency_ms} ms");
            println!("{}\n", String::from_utf8_lossy(&answer));
            let result = dce::rtb::format::answer(spec.format, status, &answer);
            println!("DCE reads: {}", describe(&result));
            if matches!(
                result,
                dce::rtb::PingResult::Bid(_) | dce::rtb::PingResult::Rejected(_)
            ) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(failed) => {
            println!(
                "no answer after {latency_ms} ms (timeout_ms = {})",
                spec.timeout_ms
            );
            println!("DCE reads: {}", describe(&failed));
            ExitCode::FAILURE
        }
    }
}

fn describe(r: &dce::rtb::PingResult) -> String {
    match r {
        dce::rtb::PingResult::Bid(b) => format!(
            "bid {} cents{}{}{}",
            b.cents,
            b.destination
                .as_ref()
                .map(|d| format!(", destination {d:?}"))
                .unwrap_or_default(),
            b.expires_in_s
                .map(|s| format!(", expires in {s} s"))
                .unwrap_or_default(),
            b.min_duration_s
                .map(|s| format!(", billable after {s} s"))
                .unwrap_or_default(),
        ),
        dce::rtb::PingResult::Malformed(why) => format!("malformed ({why})"),
        other => other.outcome(),
    }
}

fn init_logging(default: &str) {
    dce::logging::init(false, default);
}

fn main() -> ExitCode {
    let code = run_cli();
    // what the log thread still holds
    dce::logging::flush();
    code
}

fn run_cli() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match dce::config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} problem(s) found", errors.len());
                ExitCode::FAILURE
            }
        },
        Command::Rtb {
            command:
                RtbCommand::Test {
                    buyer,
                    caller,
                    called,
                    config,
                },
        } => rtb_test(&config, &buyer, &caller, called.as_deref()),
        Command::Migrate { config } => {
            let Some((cfg, rt)) = config_and_runtime(&config) else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(async {
                let db = dce::store::Db::connect(&cfg.storage.database_url)?;
                db.migrate().await?;
                anyhow::Ok(())
            }) {
                Ok(()) => {
                    println!("{}: migrated", cfg.storage.database_url);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("migration failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cdr {
            command:
                CdrCommand::Export {
                    from,
                    to,
                    format,
                    config,
                },
        } => {
            let Some((cfg, rt)) = config_and_runtime(&config) else {
                return ExitCode::FAILURE;
            };
            let (Some(from), Some(to)) = (instant(&from), instant(&to)) else {
                eprintln!("--from and --to must be RFC 3339 times or YYYY-MM-DD dates");
                return ExitCode::FAILURE;
            };
            if format != "csv" && format != "jsonl" {
                eprintln!("--format must be csv or jsonl");
                return ExitCode::FAILURE;
            }
            match rt.block_on(async {
                dce::store::Db::connect(&cfg.storage.database_url)?
                    .export(&from, &to)
                    .await
                    .map_err(anyhow::Error::from)
            }) {
                Ok(rows) => {
                    if format == "csv" {
                        println!("id,created_at,disposition,carrier,campaign,caller,called,buyer_id,bid_cents,revenue_cents,payout_cents,margin_cents,billable,duration_ms");
                        for r in rows {
                            println!(
                                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                                r.id,
                                r.created_at,
                                r.disposition,
                                csv(&r.carrier),
                                csv(&r.campaign),
                                r.caller,
                                r.called,
                                csv(r.buyer_id.as_deref().unwrap_or("")),
                                r.bid_cents,
                                r.revenue_cents,
                                r.payout_cents,
                                r.margin_cents,
                                r.billable,
                                r.duration_ms
                            );
                        }
                    } else {
                        for r in rows {
                            println!("{}", serde_json::to_string(&r).unwrap_or_default());
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("export failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gdpr {
            command:
                GdprCommand::Erase {
                    number,
                    config,
                    api_key,
                },
        } => {
            init_logging("info");
            let Some((cfg, rt)) = config_and_runtime(&config) else {
                return ExitCode::FAILURE;
            };
            let dir = cfg.storage.spool_dir.clone();
            if dce::store::gdpr::node_running(&dir) {
                let key = api_key.or_else(|| std::env::var("DCE_API_KEY").ok());
                return match (cfg.http.listen, key) {
                    (Some(addr), Some(key)) => erase_through_api(addr, &key, &number),
                    _ => {
                        eprintln!(
                            "a DCE node is running on {} (it holds its {} lock): it holds CDRs in its \
                             queue and appends to the JSON-lines file, so the erasure must go through it. \
                             Send POST /v1/gdpr/erase {{\"number\": \"...\"}} to its API with an admin key, \
                             or run this again with --api-key KEY (or DCE_API_KEY){}. Nothing was changed.",
                            dir.display(),
                            dce::store::gdpr::LOCK_FILE,
                            if cfg.http.listen.is_none() { " after setting [http] listen" } else { "" }
                        );
                        ExitCode::FAILURE
                    }
                };
            }
            let result = rt.block_on(async {
                let gdpr = dce::store::Gdpr::open(&dir)?;
                if !gdpr.claim_node() {
                    anyhow::bail!(
                        "a DCE node started on {} meanwhile; use its API",
                        dir.display()
                    );
                }
                let db = dce::store::Db::connect(&cfg.storage.database_url)?;
                let spool = dce::store::Spool::new(&dir);
                anyhow::Ok(
                    gdpr.erase(&number, &db, &spool, cfg.cdr.jsonl_path.as_deref())
                        .await?,
                )
            });
            match result {
                Ok(done) => {
                    print_erased(&done);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("erasure failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dnc {
            command: DncCommand::Build { input, output },
        } => {
            let started = std::time::Instant::now();
            match dce_compliance::NationalDnc::build_file(&input, &output) {
                Ok(n) => {
                    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
                    println!(
                        "{}: {n} numbers, {size} bytes ({:.2} bytes per number), {:.1} s",
                        output.display(),
                        size as f64 / n.max(1) as f64,
                        started.elapsed().as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { config } => {
            init_logging("warn");
            let Some((cfg, rt)) = config_and_runtime(&config) else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(dce::demo::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            let Some((cfg, rt)) = config_and_runtime(&config) else {
                return ExitCode::FAILURE;
            };
            dce::logging::set_mask(cfg.log.mask_numbers);
            dce::logging::init(cfg.log.json, "info");
            match rt.block_on(dce::server::run(
                cfg,
                Some(config.clone()),
                shutdown_signal(),
            )) {
                Ok(counters) => {
                    tracing::info!(counters = %counters.report(), "stopped");
                    dce::logging::flush();
                    eprintln!("dce: stopped; counters {}", counters.report());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// RFC 3339, or a date (midnight UTC), as UTC RFC 3339 with milliseconds.
fn instant(s: &str) -> Option<String> {
    use chrono::{NaiveDate, SecondsFormat, TimeZone, Utc};
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| Utc.from_utc_datetime(&d))
        })?;
    Some(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// What an erasure changed, for the operator.
fn print_erased(done: &dce::store::gdpr::Erased) {
    println!(
        "erased: {} call record(s) anonymised\nspool: {} CDR(s) anonymised\nJSON lines: {} line(s) anonymised or removed\npseudonym: {}",
        done.database_calls, done.spool_records, done.jsonl_records, done.pseudonym
    );
}

/// `dce gdpr erase` beside a running node: `POST /v1/gdpr/erase` to its API (loopback when
/// it listens on every address).
fn erase_through_api(addr: std::net::SocketAddr, key: &str, number: &str) -> ExitCode {
    use std::io::{Read, Write};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let body = serde_json::json!({ "number": dce::store::gdpr::normal(number) }).to_string();
    let exchange = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
        write!(
            s,
            "POST /v1/gdpr/erase HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let answer = match exchange() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("a DCE node is running, but its API at {addr} could not be reached: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) if status == 200 => {
            println!("erased through the running node's API ({addr})");
            println!(
                "erased: {} call record(s) anonymised\nspool: {} CDR(s) anonymised\nJSON lines: {} line(s) anonymised or removed\npseudonym: {}",
                v["database_calls"], v["spool_records"], v["jsonl_records"],
                v["pseudonym"].as_str().unwrap_or("")
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            eprintln!(
                "erasure through {addr} failed ({status}): {}",
                v["error"]["message"].as_str().unwrap_or(body)
            );
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("erasure through {addr} failed ({status}): {body}");
            ExitCode::FAILURE
        }
    }
}

/// A CSV field, quoted when it needs to be.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Load and check the config (printing every problem) and build the runtime.
fn config_and_runtime(
    path: &std::path::Path,
) -> Option<(dce::config::Config, tokio::runtime::Runtime)> {
    let cfg = match dce::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "refusing to start: {} problem(s) in the config",
                errors.len()
            );
            return None;
        }
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some((cfg, rt)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

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
    /// Replace NUMBER by its keyed hash in every call record, and log the erasure.
    Erase {
        /// The number (E.164 or 10-digit).
        number: String,
        /// Config file.
        #[arg(long, default_value = "config/dce.toml")]
        config: PathBuf,
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
    /// Check a config file; print every problem as file:line: message.
    CheckConfig {
        /// Config file.
        file: PathBuf,
    },
}

fn init_logging(default: &str) {
    dce::logging::init(false, default);
}

fn main() -> ExitCode {
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
                        println!("id,created_at,disposition,carrier,campaign,caller,called,buyer_id,bid_cents,payout_cents,billable,duration_ms");
                        for r in rows {
                            println!(
                                "{},{},{},{},{},{},{},{},{},{},{},{}",
                                r.id,
                                r.created_at,
                                r.disposition,
                                csv(&r.carrier),
                                csv(&r.campaign),
                                r.caller,
                                r.called,
                                csv(r.buyer_id.as_deref().unwrap_or("")),
                                r.bid_cents,
                                r.payout_cents,
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
            command: GdprCommand::Erase { number, config },
        } => {
            init_logging("info");
            let Some((cfg, rt)) = config_and_runtime(&config) else {
                return ExitCode::FAILURE;
            };
            let key_file = cfg.storage.spool_dir.join("anon.key");
            let result = rt.block_on(async {
                std::fs::create_dir_all(&cfg.storage.spool_dir)?;
                let key = dce::store::anonymize::key(&key_file)?;
                let db = dce::store::Db::connect(&cfg.storage.database_url)?;
                anyhow::Ok(db.erase_number(&key, &number).await?)
            });
            match result {
                Ok(n) => {
                    tracing::info!(calls = n, "GDPR erasure of one number done");
                    println!("erased: {n} call record(s) anonymised");
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

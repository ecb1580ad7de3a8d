//! The command line: `run`, `demo`, `policy check`, `audit verify`,
//! `audit search`, `audit report`.

use crate::config::{Config, LogFormat};
use crate::demo::{self, DemoOptions};
use crate::listener::Proxy;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(
    name = "pgwarden",
    version,
    about = "PostgreSQL access-audit proxy: column masking, audit trail, bulk-export alerts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in the foreground until SIGTERM or SIGINT.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with sample data and the proxy in front.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
        /// Where the demo serves Prometheus metrics.
        #[arg(long, default_value = "127.0.0.1:9187")]
        metrics_listen: String,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: Box<AuditCommand>,
    },
    /// Ask a running proxy (its `[admin]` endpoint) about blocks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List users a spent limit refuses now.
    Blocks {
        #[arg(long, short)]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift a user's blocks: their windows start afresh (recorded in the
    /// audit trail).
    Lift {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        user: String,
        /// Only this rule (classified_rows_per_hour, distinct_subjects or
        /// lookups_per_hour).
        #[arg(long)]
        rule: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole trail: exit 0 when intact, 1 naming the file and
    /// line of the first record modified, deleted, inserted or reordered,
    /// or a cut-off tail.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Find records, oldest first.
    Search {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print the matching lines as stored (JSON Lines).
        #[arg(long)]
        json: bool,
    },
    /// Per user and day: sessions, statements, classified rows by kind,
    /// refusals, alerts.
    Report {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Filters of `audit search` and `audit report`; all given must match.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    role: Option<String>,
    /// Client address (with or without port).
    #[arg(long)]
    client: Option<String>,
    #[arg(long)]
    session: Option<String>,
    /// From this time (RFC 3339, or a date: midnight UTC).
    #[arg(long)]
    since: Option<String>,
    /// Before this time.
    #[arg(long)]
    until: Option<String>,
    /// A classified table touched (`customers` or `public.customers`).
    #[arg(long)]
    table: Option<String>,
    #[arg(long)]
    column: Option<String>,
    /// A kind of data touched (phone, id_card, ...).
    #[arg(long)]
    kind: Option<String>,
    /// forward, rewrite or refuse.
    #[arg(long)]
    decision: Option<String>,
    /// connect, auth_failed, query, query_start, disconnect, alert, ...
    #[arg(long)]
    event: Option<String>,
    /// Case-insensitive text in the SQL, message or details.
    #[arg(long)]
    text: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> Result<crate::audit::search::Filter, String> {
        use crate::audit::search::parse_time;
        Ok(crate::audit::search::Filter {
            user: self.user,
            role: self.role,
            client: self.client,
            session: self.session,
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
            table: self.table,
            column: self.column,
            kind: self.kind,
            decision: self.decision,
            event: self.event,
            text: self.text,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the configuration and policies without starting.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Run a parsed command line; the exit code follows the outcome.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Policy {
            command: PolicyCommand::Check { config },
        } => policy_check(&config),
        Command::Audit { command } => audit(*command),
        Command::Admin { command } => admin(command),
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pgwarden: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(config.log.format, config.log.level.as_deref());
            runtime_run(run(config))
        }
        Command::Demo {
            listen,
            metrics_listen,
        } => {
            init_tracing(LogFormat::Text, Some("warn,pgwarden=info"));
            runtime_run(demo::run(DemoOptions {
                listen,
                metrics_listen: Some(metrics_listen),
            }))
        }
    }
}

fn admin(command: AdminCommand) -> ExitCode {
    let (AdminCommand::Blocks { config, .. } | AdminCommand::Lift { config, .. }) = &command;
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgwarden: {e}");
            return ExitCode::from(2);
        }
    };
    runtime_run(async move {
        match command {
            AdminCommand::Blocks { json, .. } => {
                let body = crate::admin::request(&config, "GET", "/blocks", None).await?;
                if json {
                    println!("{}", body.trim());
                    return Ok(());
                }
                let blocks: Vec<serde_json::Value> = serde_json::from_str(&body)?;
                if blocks.is_empty() {
                    println!("no active blocks");
                }
                for b in blocks {
                    println!(
                        "{:<20} {:<12} {:<26} {:>8} / {:<8} until {}",
                        b["user"].as_str().unwrap_or(""),
                        b["role"].as_str().unwrap_or(""),
                        b["rule"].as_str().unwrap_or(""),
                        b["count"],
                        b["limit"],
                        b["until"].as_str().unwrap_or("")
                    );
                }
                Ok(())
            }
            AdminCommand::Lift { user, rule, .. } => {
                let body = serde_json::to_string(&crate::admin::Lift { user, rule })?;
                let out =
                    crate::admin::request(&config, "POST", "/blocks/lift", Some(body)).await?;
                println!("{}", out.trim());
                Ok(())
            }
        }
    })
}

fn runtime_run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Statement trees are walked recursively; their depth is bounded
        // (analysis::depth), this leaves a wide margin (address space
        // only until used).
        .thread_stack_size(16 * 1024 * 1024)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgwarden: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgwarden: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The filters of `audit search` / `report`; `None` (reported) if invalid.
fn parse_filter(args: FilterArgs) -> Option<crate::audit::search::Filter> {
    args.filter()
        .inspect_err(|e| eprintln!("pgwarden: {e}"))
        .ok()
}

fn audit(command: AuditCommand) -> ExitCode {
    use crate::audit::{search, verify};
    let (AuditCommand::Verify { config }
    | AuditCommand::Search { config, .. }
    | AuditCommand::Report { config, .. }) = &command;
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(dir) = config.audit.dir.clone() else {
        eprintln!("{}: [audit] dir is not set", config.source.display());
        return ExitCode::from(2);
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        AuditCommand::Verify { .. } => {
            let key = match crate::audit::load_key(&config) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("pgwarden: {e:#}");
                    return ExitCode::from(2);
                }
            };
            match verify::verify(&dir, &key) {
                Ok(s) => {
                    println!(
                        "{}: intact: {} records ({} to {}) in {} files; sealed through record {}",
                        dir.display(),
                        s.records,
                        s.first_seq,
                        s.last_seq,
                        s.files,
                        s.sealed_seq
                    );
                    if s.retained_from > 1 {
                        println!(
                            "note: records before {} were removed by retention (signed anchor checked)",
                            s.retained_from
                        );
                    }
                    if s.torn_tail {
                        println!(
                            "note: the last line was cut short by a crash (never acknowledged; removed at the next start)"
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(p) => {
                    eprintln!("{}: TAMPERED: {p}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Search { filter, json, .. } => {
            let Some(filter) = parse_filter(filter) else {
                return ExitCode::from(2);
            };
            match search::search(&dir, &filter, json, &mut out) {
                Ok(n) => {
                    if !json {
                        eprintln!("{n} records");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgwarden: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Report { filter, json, .. } => {
            let Some(filter) = parse_filter(filter) else {
                return ExitCode::from(2);
            };
            match search::report(&dir, &filter) {
                Ok(days) => {
                    use std::io::Write;
                    let text = if json {
                        days.iter()
                            .filter_map(|d| serde_json::to_string(d).ok())
                            .map(|l| l + "\n")
                            .collect()
                    } else {
                        search::format_report(&days)
                    };
                    let _ = out.write_all(text.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pgwarden: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn policy_check(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!("{}: configuration is valid", config.source.display());
    let Some(dir) = &config.policies else {
        println!("no policies folder configured: nothing is classified");
        return ExitCode::SUCCESS;
    };
    match crate::policy::load::load_dir(dir) {
        Ok(p) => {
            let tables = p.classify.len();
            println!(
                "{}: policies are valid: {} classified columns in {tables} tables, {} roles, {} users in roles",
                dir.display(),
                p.classified_columns(),
                p.roles.len(),
                p.users.len()
            );
            for role in &p.roles {
                let mut access: Vec<String> = role
                    .access
                    .iter()
                    .map(|(k, a)| format!("{k}={a}"))
                    .collect();
                access.sort();
                if let Some(w) = role.wildcard {
                    access.push(format!("*={w}"));
                }
                println!(
                    "  role {}: users [{}]; {}",
                    role.name,
                    role.users.join(", "),
                    access.join(" ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s) in the policies", errors.0.len());
            ExitCode::from(2)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let proxy = Proxy::start(config).await?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = wait_for_stop_signal() => break,
            _ = hup.recv() => {
                info!("SIGHUP: reloading policies");
                proxy.reload_policies();
            }
        }
    }
    info!("stopping");
    proxy.shutdown().await;
    Ok(())
}

/// Resolve on SIGINT or SIGTERM.
pub async fn wait_for_stop_signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Structured logs to stderr; `RUST_LOG` overrides the configured level.
pub fn init_tracing(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Decoder panics on malformed input are caught and turned into protocol
    // errors; log them as structured events rather than raw stderr text.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal panic (caught where possible)");
    }));
}

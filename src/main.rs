//! The `sluice` command: `run`, `check`, `explain`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A query proxy for analytics warehouses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients with the given configuration.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; print every problem with its line and key.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show where a query would run and which rule would act on it, and why.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The query text (several statements allowed).
        sql: String,
        /// The session's user, for rules with `users`.
        #[arg(long, default_value = "")]
        user: String,
        /// The session's application_name, for rules with `applications`.
        #[arg(long, default_value = "")]
        application: String,
        /// The session's database, for rules with `databases`.
        #[arg(long, default_value = "")]
        database: String,
        /// The client's IP address, for rules with `client_addrs`.
        #[arg(long)]
        client_addr: Option<std::net::IpAddr>,
    },
    /// Bring the catalog copy up to date once, and exit: only what changed,
    /// or with --full every database copied whole.
    CatalogSync {
        #[arg(long, short)]
        config: PathBuf,
        /// Copy every database whole (pg_dump --schema-only), not only what changed.
        #[arg(long)]
        full: bool,
    },
    /// Start local PostgreSQL nodes with sample data and sluice in front of them.
    Demo {
        /// Client port for sluice (0 picks a free one).
        #[arg(long, default_value_t = 5433)]
        port: u16,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    match w.line {
                        Some(line) => eprintln!(
                            "{}:{line}: {}: warning: {}",
                            config.display(),
                            w.key,
                            w.message
                        ),
                        None => {
                            eprintln!("{}: {}: warning: {}", config.display(), w.key, w.message)
                        }
                    }
                }
                match runtime().block_on(sluice::catalog::managed::check(&c)) {
                    sluice::catalog::managed::Verdict::Fine(note) => println!("{note}"),
                    sluice::catalog::managed::Verdict::Unsure(note) => {
                        eprintln!("{}: catalog: warning: {note}", config.display())
                    }
                    sluice::catalog::managed::Verdict::Refused(why) => {
                        eprintln!("{}: catalog: {why}", config.display());
                        return ExitCode::FAILURE;
                    }
                }
                println!(
                    "{}: ok ({} node{}, {} rule{}, listening on {})",
                    config.display(),
                    c.warehouse.nodes.len(),
                    if c.warehouse.nodes.len() == 1 {
                        ""
                    } else {
                        "s"
                    },
                    c.rules.rules().len(),
                    if c.rules.rules().len() == 1 { "" } else { "s" },
                    c.server.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Explain {
            config,
            sql,
            user,
            application,
            database,
            client_addr,
        } => match Config::load(&config) {
            Ok(c) => {
                let session = sluice::classify::SessionInfo {
                    user: &user,
                    application: &application,
                    database: &database,
                    client_addr,
                };
                print!("{}", sluice::explain::explain(&c, &session, &sql));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let loaded = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            raise_open_file_limit();
            runtime_with(loaded.server.threads()).block_on(async {
                let running = match sluice::server::start(loaded, Some(config)).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("sluice: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match running.run_until_signalled().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("sluice: cannot handle signals: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::CatalogSync { config, full } => {
            let mut loaded = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(catalog) = loaded.catalog.as_mut()
                && let Some(managed) = &catalog.managed
            {
                match sluice::catalog::managed::running_port(&managed.data_dir) {
                    Some(port) => catalog.port = port,
                    None => {
                        eprintln!(
                            "sluice catalog-sync: no managed catalog copy runs in {}; `sluice run` with this configuration starts it",
                            managed.data_dir.display()
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            if full {
                match runtime().block_on(sluice::catalog::sync::sync_once(&loaded, None)) {
                    Ok(report) => {
                        println!(
                            "catalog copy synced from {} in {:.1?}: {}",
                            report.node,
                            report.elapsed,
                            report.databases.join(", ")
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("sluice catalog-sync: {e}");
                        ExitCode::FAILURE
                    }
                }
            } else {
                let started = std::time::Instant::now();
                match runtime().block_on(sluice::catalog::refresh::refresh_once(&loaded)) {
                    Ok(done) => {
                        for (database, kind, relations) in done {
                            println!("{database}: {} ({relations} relations)", kind.as_str());
                        }
                        println!("catalog copy refreshed in {:.1?}", started.elapsed());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("sluice catalog-sync: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
        Command::Demo { port } => match runtime().block_on(sluice::demo::run(port)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// The runtime `sluice run` relays sessions on (`server.worker_threads`).
/// One thread: tokio's current-thread scheduler, which has no work
/// stealing to pay for (no atomics on every wake-up, no idle worker to
/// notify) and parks in the I/O driver directly.
fn runtime_with(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Two sockets per client session (client and node) soon pass the usual
/// soft limit of 1,024 open files; the hard limit is the operator's word.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed; no
    // other memory is touched.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

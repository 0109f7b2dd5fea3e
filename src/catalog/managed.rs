//! The managed catalog copy: with `[catalog]` naming no `dsn`, sluice runs
//! the copy itself — a PostgreSQL server in `catalog.data_dir`,
//! initialised on first start from the server binaries on the machine
//! (`catalog.postgres_bin`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`), listening on 127.0.0.1 at a port chosen at
//! start, with no Unix socket. It runs in binary-upgrade mode (`-b`) for a
//! PostgreSQL warehouse, which OID fidelity needs, and normally for
//! Vertica's v_catalog tables. As root, sluice runs it as the `postgres` OS
//! user (PostgreSQL refuses root), the way [`crate::localpg`] does.
//!
//! [`supervise`] watches the postmaster: if it dies, lookups fall back to
//! the nodes as they do for any failed copy, an alert event is raised, and
//! the server is started again with backoff (1 s doubling to 60 s); once
//! back, every database is marked stale, so the refresher checks it
//! against the warehouse before it answers again. It is stopped (`pg_ctl
//! stop -m fast`) when sluice stops.
//!
//! Everything here blocks (`pg_ctl`, `initdb`): async callers use
//! `spawn_blocking`.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Catalog, Dialect, MANAGED_SUPERUSER, ManagedCatalog};
use crate::localpg::{self, Error};

/// Written into the data directory when sluice stopped the copy cleanly;
/// its absence at the next start, with a server that is not running, means
/// the copy may be torn (it runs with fsync off) and is rebuilt.
const CLEAN_STOP: &str = "sluice-clean-stop";

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT: &str = "60";

/// A running managed copy.
#[derive(Debug)]
pub struct ManagedCopy {
    data_dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    options: String,
    /// The server's major version, e.g. "15".
    pub major: String,
    log: PathBuf,
    stopped: Mutex<bool>,
}

/// The binaries a managed copy would run (from `catalog.postgres_bin`, or
/// found on the machine), and their major version.
pub fn binaries(postgres_bin: Option<&Path>) -> Result<(PathBuf, String), Error> {
    let bindir = match postgres_bin {
        Some(dir) if dir.join("postgres").is_file() && dir.join("initdb").is_file() => {
            dir.to_path_buf()
        }
        Some(dir) => return Err(Error::BadBindir(dir.to_path_buf())),
        None => localpg::find_bindir()?,
    };
    let major = localpg::server_major_version(&bindir)?;
    Ok((bindir, major))
}

impl ManagedCopy {
    /// Initialises `data_dir` if it holds no cluster yet, stops a server
    /// left running there by an earlier sluice, and starts the copy.
    /// From `catalog`: the binaries, the dialect (binary-upgrade mode or
    /// not) and `pool_size`, sluice's connections to it (the server admits
    /// those and the refresher's, psql's and pg_dump's).
    pub fn start(settings: &ManagedCatalog, catalog: &Catalog) -> Result<ManagedCopy, Error> {
        let (dialect, pool_size) = (catalog.dialect, catalog.pool_size);
        let (bindir, major) = binaries(catalog.postgres_bin.as_deref())?;
        let owner = localpg::server_owner()?;
        let data_dir = std::path::absolute(&settings.data_dir)
            .map_err(localpg::io_err("resolve", &settings.data_dir))?;
        if !data_dir.join("PG_VERSION").is_file() {
            initialise(&bindir, &data_dir, owner)?;
        }
        let found = fs::read_to_string(data_dir.join("PG_VERSION")).unwrap_or_default();
        let clean = data_dir.join(CLEAN_STOP);
        if found.trim() != major {
            return Err(Error::Failed {
                cmd: "starting the managed catalog copy".into(),
                stderr: format!(
                    "{} holds a PostgreSQL {} cluster, but the binaries in {} are version {major}; \
                     remove the directory (sluice rebuilds the copy from the warehouse) or set catalog.postgres_bin",
                    data_dir.display(),
                    found.trim(),
                    bindir.display()
                ),
            });
        }
        let log = data_dir.join("sluice-catalog.log");
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections={}",
            pool_size + 20
        );
        if dialect == Dialect::Postgres {
            // OIDs as on the warehouse (docs/catalog.md).
            options.push_str(" -b");
        }
        let copy = ManagedCopy {
            port: localpg::free_port()?,
            data_dir,
            bindir,
            options,
            major,
            log,
            stopped: Mutex::new(false),
        };
        if copy.is_running() {
            tracing::info!(data_dir = %copy.data_dir.display(),
                "a catalog copy left running by an earlier sluice is stopped first");
            let _ = copy.pg_ctl(&["-m", "fast", "stop"]);
        } else if !clean.exists() && copy.data_dir.join("postmaster.pid").exists() {
            // Neither stopped by sluice nor running: the host (or the
            // server) went down under it, and with fsync off its files may
            // be torn. The copy is rebuilt from the warehouse instead.
            tracing::warn!(data_dir = %copy.data_dir.display(),
                "the catalog copy was not stopped cleanly; rebuilding it from the warehouse");
            fs::remove_dir_all(&copy.data_dir)
                .map_err(localpg::io_err("remove", &copy.data_dir))?;
            initialise(&copy.bindir, &copy.data_dir, owner)?;
        }
        let _ = fs::remove_file(&clean);
        copy.launch()?;
        tracing::info!(port = copy.port, data_dir = %copy.data_dir.display(),
            version = copy.major, bindir = %copy.bindir.display(), "the managed catalog copy is running");
        Ok(copy)
    }

    /// Where sluice reaches it.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The postmaster's process id, from its lock file.
    pub fn pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Whether the postmaster is alive.
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(alive)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<String, Error> {
        let mut cmd = localpg::server_command(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", PG_CTL_TIMEOUT])
            .args(args);
        localpg::run(cmd, &format!("pg_ctl {}", args.last().unwrap_or(&"")))
    }

    /// Starts the server on its port.
    pub fn launch(&self) -> Result<(), Error> {
        if *self.stopped.lock().expect("managed copy lock") {
            return Ok(());
        }
        let options = format!("-p {} {}", self.port, self.options);
        let log = self.log.to_string_lossy().into_owned();
        self.pg_ctl(&["-l", &log, "-o", &options, "start"])
            .map(|_| ())
            .map_err(|e| match e {
                Error::Failed { cmd, stderr } => Error::Failed {
                    cmd,
                    stderr: format!("{stderr}\nserver log: {}", self.log.display()),
                },
                other => other,
            })
    }

    /// Stops the server for good (sluice is stopping).
    pub fn stop(&self) {
        *self.stopped.lock().expect("managed copy lock") = true;
        if !self.is_running() {
            return;
        }
        match self.pg_ctl(&["-m", "fast", "stop"]) {
            Ok(_) => {
                // A fast stop checkpoints: the files are whole.
                let _ = fs::write(self.data_dir.join(CLEAN_STOP), b"");
            }
            Err(e) => {
                tracing::warn!(error = %e, "stopping the managed catalog copy failed; stopping it now");
                let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
            }
        }
    }
}

/// `initdb` into `data_dir`, then the copy's own settings.
fn initialise(bindir: &Path, data_dir: &Path, owner: Option<(u32, u32)>) -> Result<(), Error> {
    fs::create_dir_all(data_dir).map_err(localpg::io_err("create", data_dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .map_err(localpg::io_err("chmod", data_dir))?;
    }
    localpg::chown_to_server(data_dir, owner)?;
    tracing::info!(data_dir = %data_dir.display(), "initialising the managed catalog copy");
    let mut initdb = localpg::server_command(&bindir.join("initdb"));
    initdb.arg("-D").arg(data_dir).args([
        "-U",
        MANAGED_SUPERUSER,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-instructions",
    ]);
    localpg::run(initdb, "initdb of the managed catalog copy").map_err(|e| match e {
        Error::Failed { cmd, stderr } => Error::Failed {
            cmd,
            stderr: format!(
                "{stderr} (the server runs as the `postgres` OS user when sluice runs as root: \
                 every directory above {} must be traversable by it)",
                data_dir.display()
            ),
        },
        other => other,
    })?;
    let mut conf = String::from("\n# the managed catalog copy (sluice)\n");
    for (name, value) in [
        // The copy holds the schema only and is rebuilt from the warehouse
        // when lost: durability buys nothing, and a 20,000-table restore
        // spends most of its time flushing without these. A copy that may
        // be torn (the host crashed) is rebuilt at start: see CLEAN_STOP.
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        // Catalog lookups are short; compiling them costs more than it saves.
        ("jit", "off"),
        ("shared_buffers", "64MB"),
        // A binary-upgrade restore of one relation runs in one transaction
        // with its indexes, sequences and dependents.
        ("max_locks_per_transaction", "256"),
        ("logging_collector", "off"),
        ("log_min_messages", "warning"),
    ] {
        let _ = writeln!(conf, "{name} = {value}");
    }
    let path = data_dir.join("postgresql.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(localpg::io_err("append to", &path))
}

/// Watches the copy until `stop`, restarting it when it dies; stops it then.
pub async fn supervise(
    copy: std::sync::Arc<ManagedCopy>,
    freshness: std::sync::Arc<super::Freshness>,
    alerts: std::sync::Arc<crate::alerts::Alerts>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    let mut down = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(if down { backoff } else { Duration::from_secs(1) }) => {}
            _ = stop.cancelled() => break,
        }
        let running = {
            let copy = copy.clone();
            tokio::task::spawn_blocking(move || copy.is_running())
                .await
                .unwrap_or(false)
        };
        if running {
            continue;
        }
        if !down {
            down = true;
            tracing::error!(data_dir = %copy.data_dir().display(),
                "the managed catalog copy stopped; lookups go to the nodes while it is restarted");
            alerts.raise(crate::alerts::AlertEvent::CatalogCopyDown {
                reason: "the managed catalog copy's server stopped".into(),
            });
        }
        let started = {
            let copy = copy.clone();
            tokio::task::spawn_blocking(move || copy.launch())
                .await
                .unwrap_or_else(|e| {
                    Err(Error::Failed {
                        cmd: "pg_ctl start".into(),
                        stderr: e.to_string(),
                    })
                })
        };
        match started {
            Ok(()) => {
                tracing::info!("the managed catalog copy is running again");
                down = false;
                backoff = Duration::from_secs(1);
                // Whatever the copy held before it died is checked against
                // the warehouse before it answers again.
                freshness.changed_everywhere();
                alerts.raise(crate::alerts::AlertEvent::CatalogCopyUp);
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?backoff, "restarting the managed catalog copy failed");
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
    let _ = tokio::task::spawn_blocking(move || copy.stop()).await;
}

/// What [`check`] found.
#[derive(Debug)]
pub enum Verdict {
    /// The copy can hold the warehouse's catalog (what was compared).
    Fine(String),
    /// Could not be told (a server unreachable); sluice goes on.
    Unsure(String),
    /// The copy cannot work: why, and what to do.
    Refused(String),
}

/// A connection to `server`'s `database`, and the server's major version
/// (from `server_version_num`).
async fn server_major(
    server: &super::sync::Endpoint,
    database: &str,
    timeout: Duration,
) -> Result<(u32, tokio_postgres::Client), tokio_postgres::Error> {
    let client = server.client(database, timeout).await?;
    let num: String = client
        .query_one("SHOW server_version_num", &[])
        .await?
        .get(0);
    Ok((num.parse::<u32>().unwrap_or(0) / 10000, client))
}

/// The version rule, checked by `sluice check` and at start: a binary-upgrade
/// restore needs the copy's server and pg_dump of the warehouse's major
/// version, and a server started with `-b`. Names the binaries found and
/// the warehouse's version.
pub async fn check(config: &crate::config::Config) -> Verdict {
    let Some(catalog) = &config.catalog else {
        return Verdict::Fine("no [catalog]: every query goes to the nodes".into());
    };
    let w = &config.warehouse;
    let mut warehouse = None;
    if w.dialect == Dialect::Postgres {
        for node in &w.nodes {
            let server = super::sync::Endpoint::node(config, node);
            if let Ok((major, _)) =
                server_major(&server, &w.service_database, w.connect_timeout).await
            {
                warehouse = Some((node.clone(), major));
                break;
            }
        }
    }
    let needs_same_major = catalog.dialect == Dialect::Postgres;
    if catalog.managed.is_some() {
        let found = {
            let postgres_bin = catalog.postgres_bin.clone();
            tokio::task::spawn_blocking(move || binaries(postgres_bin.as_deref()))
                .await
                .map_err(|e| Error::Failed {
                    cmd: "finding the PostgreSQL binaries".into(),
                    stderr: e.to_string(),
                })
                .and_then(|r| r)
        };
        let (bindir, major) = match found {
            Ok(b) => b,
            Err(e) => {
                return Verdict::Refused(format!(
                    "sluice runs the catalog copy itself ([catalog] has no dsn) but cannot find PostgreSQL server binaries: {e}. \
                     Install the server (Debian: apt-get install postgresql), set catalog.postgres_bin, or set catalog.dsn"
                ));
            }
        };
        return match warehouse {
            Some((node, w_major))
                if needs_same_major && major.parse::<u32>().ok() != Some(w_major) =>
            {
                Verdict::Refused(format!(
                    "the managed catalog copy would run PostgreSQL {major} ({}), but warehouse node {node} runs PostgreSQL {w_major}: \
                     a binary-upgrade restore needs the same major version. Install PostgreSQL {w_major}'s server and point \
                     catalog.postgres_bin at its bin directory",
                    bindir.display()
                ))
            }
            Some((node, w_major)) => Verdict::Fine(format!(
                "catalog copy: managed, PostgreSQL {major} from {}; warehouse node {node} runs PostgreSQL {w_major}",
                bindir.display()
            )),
            None if w.dialect == Dialect::Vertica => Verdict::Fine(format!(
                "catalog copy: managed, PostgreSQL {major} from {} (Vertica warehouse: any version)",
                bindir.display()
            )),
            None => Verdict::Unsure(format!(
                "catalog copy: managed, PostgreSQL {major} from {}; no warehouse node answered, so its version is unchecked",
                bindir.display()
            )),
        };
    }
    // An external copy.
    let copy = server_major(
        &super::sync::Endpoint::copy(catalog),
        "postgres",
        catalog.connect_timeout,
    )
    .await;
    let (copy_major, client) = match copy {
        Ok(c) => c,
        Err(e) => {
            return Verdict::Unsure(format!(
                "catalog copy at {}:{} did not answer ({e}); lookups go to the nodes until it does",
                catalog.host, catalog.port
            ));
        }
    };
    let binary_upgrade = match client
        .simple_query("SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid(0)")
        .await
    {
        Ok(_) => true,
        Err(e)
            if e.as_db_error()
                .is_some_and(|d| d.message().contains("binary upgrade mode")) =>
        {
            false
        }
        Err(e) => {
            return Verdict::Unsure(format!(
                "could not tell whether the catalog copy at {}:{} runs in binary-upgrade mode: {e}",
                catalog.host, catalog.port
            ));
        }
    };
    if needs_same_major && !binary_upgrade {
        return Verdict::Refused(format!(
            "catalog.dsn points at {}:{}, an ordinary PostgreSQL server; for a PostgreSQL warehouse the copy must keep the \
             warehouse's OIDs, which needs a server in binary-upgrade mode (`postgres -b`), so this copy would give wrong \
             answers. Remove catalog.dsn to let sluice run its own copy (catalog.data_dir), or start that server with -b",
            catalog.host, catalog.port
        ));
    }
    if !needs_same_major && binary_upgrade {
        return Verdict::Refused(format!(
            "catalog.dsn points at {}:{}, a server in binary-upgrade mode, which refuses the plain CREATE TABLE the \
             Vertica catalog needs; start it normally, or remove catalog.dsn to let sluice run its own copy",
            catalog.host, catalog.port
        ));
    }
    match warehouse {
        Some((node, w_major)) if needs_same_major && copy_major != w_major => {
            Verdict::Refused(format!(
                "the catalog copy at {}:{} runs PostgreSQL {copy_major}, but warehouse node {node} runs PostgreSQL {w_major}: \
             a binary-upgrade restore needs the same major version",
                catalog.host, catalog.port
            ))
        }
        Some((node, w_major)) => Verdict::Fine(format!(
            "catalog copy: {}:{}, PostgreSQL {copy_major}{}; warehouse node {node} runs PostgreSQL {w_major}",
            catalog.host,
            catalog.port,
            if binary_upgrade {
                " in binary-upgrade mode"
            } else {
                ""
            }
        )),
        None => Verdict::Fine(format!(
            "catalog copy: {}:{}, PostgreSQL {copy_major}{}",
            catalog.host,
            catalog.port,
            if binary_upgrade {
                " in binary-upgrade mode"
            } else {
                ""
            }
        )),
    }
}

/// The port of a managed copy running in `data_dir` (started by a `sluice
/// run`), from its lock file: what `sluice catalog-sync` connects to.
pub fn running_port(data_dir: &Path) -> Option<u16> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    if !alive(pid) {
        return None;
    }
    lines.nth(2)?.trim().parse().ok()
}

/// Whether process `pid` runs: it exists and has not exited (a zombie has,
/// and stays until its parent, often the machine's init, reaps it).
pub(crate) fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    };
    exists
        && fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
}

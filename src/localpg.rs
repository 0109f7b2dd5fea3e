//! Throwaway local PostgreSQL clusters for `sluice demo` and the integration tests.
//!
//! A [`LocalCluster`] is a private server in its own temporary directory, listening on
//! 127.0.0.1 at a free port, tuned for speed rather than durability, and deleted on drop.
//!
//! Two facts shape this module:
//! - `initdb` and `postgres` refuse to run as root, and CI and the dev containers run as
//!   root. So when we are root, every server binary runs as the unprivileged `postgres`
//!   OS user (created by Debian's package) through `runuser`, and the directories it writes
//!   are chowned to that user. A non-root developer runs the binaries directly.
//!   `server_command` is the one place that decides this.
//! - `initdb` takes about two seconds. A [`Template`] data directory is made once per cache
//!   dir and major version, and each cluster starts from a copy of it.
//!
//! Everything here is blocking `std::process`; call it from `spawn_blocking` in async code.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, info, warn};

/// The OS user that server binaries run as when we are root.
const SERVER_USER: &str = "postgres";
/// How many fresh ports to try when another process grabs ours between probe and bind.
const PORT_ATTEMPTS: u32 = 5;
/// Seconds `pg_ctl -w` waits for start and stop.
const PG_CTL_TIMEOUT: &str = "30";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Errors from finding, initialising, starting and querying local clusters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found; install them with `apt-get install -y postgresql` (Debian/Ubuntu) or set SLUICE_PG_BINDIR"
    )]
    BinariesNotFound,
    #[error("SLUICE_PG_BINDIR is set to {0}, but that directory has no initdb")]
    BadBindir(PathBuf),
    #[error(
        "running as root, but the OS user `postgres` does not exist; initdb and postgres refuse to run as root, so create it (`useradd --system postgres`) or run as a non-root user"
    )]
    NoServerUser,
    #[error(
        "cache dir {0} is not writable by the OS user `postgres`; every parent directory must be traversable by it (e.g. not under /root), so choose another cache dir"
    )]
    CacheDirNotAccessible(PathBuf),
    #[error("could not parse the server version from `postgres --version` output {0:?}")]
    Version(String),
    #[error("could not run {cmd}: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: `$SLUICE_PG_BINDIR`,
/// else `pg_config --bindir`, else the newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bindir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(Error::BadBindir(dir))
        };
    }
    // Debian's pg_config belongs to libpq-dev and may point at a client-only bindir.
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let version = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let v = version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or(Error::BinariesNotFound)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid to give directories the server writes: `None` when we are not root,
/// because then the server runs as ourselves.
pub(crate) fn server_owner() -> Result<Option<(u32, u32)>, Error> {
    if !is_root() {
        return Ok(None);
    }
    static OWNER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    let lookup = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .arg(flag)
            .arg(SERVER_USER)
            .output()
            .ok()?;
        out.status.success().then_some(())?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let owner = *OWNER.get_or_init(|| Some((lookup("-u")?, lookup("-g")?)));
    owner.map(Some).ok_or(Error::NoServerUser)
}

pub(crate) fn chown_to_server(path: &Path, owner: Option<(u32, u32)>) -> Result<(), Error> {
    match owner {
        Some((uid, gid)) => chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path)),
        None => Ok(()),
    }
}

/// A command that runs `program` as the server user: through `runuser -u postgres --`
/// when we are root, directly otherwise. Call [`server_owner`] first so a missing user
/// gives a clear error rather than a runuser failure.
pub(crate) fn server_command(program: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVER_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    // PostgreSQL binaries getcwd() to locate themselves, and as `postgres` the caller's
    // cwd (often /root) is unreadable. All paths we pass are absolute.
    cmd.current_dir("/").stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion and returns its stdout; `what` names it in errors.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<String, Error> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        cmd: what.to_owned(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            cmd: what.to_owned(),
            stderr: failure_text(&out),
        })
    }
}

fn failure_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (stderr.trim(), stdout.trim()) {
        ("", "") => format!("{} with no output", out.status),
        ("", stdout) => stdout.to_owned(),
        (stderr, _) => stderr.to_owned(),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(io_err("resolve", path))
}

/// The shared, pre-initialised data directory that clusters are copied from.
pub struct Template;

impl Template {
    /// Returns `<cache_dir>/pg<major>-template`, running `initdb` first if it is missing.
    /// Safe to call from several processes at once: each inits into its own temp dir and
    /// the first to rename it into place wins.
    pub fn obtain(cache_dir: &Path) -> Result<PathBuf, Error> {
        Self::obtain_with(&find_bindir()?, cache_dir)
    }

    fn obtain_with(bindir: &Path, cache_dir: &Path) -> Result<PathBuf, Error> {
        let owner = server_owner()?;
        let cache_dir = absolute(cache_dir)?;
        let major = server_major_version(bindir)?;
        let template = cache_dir.join(format!("pg{major}-template"));
        // PG_VERSION is written by initdb, and the dir only appears via an atomic rename.
        if template.join("PG_VERSION").is_file() {
            return Ok(template);
        }
        prepare_cache_dir(&cache_dir, owner)?;
        let tmp = cache_dir.join(format!(".pg{major}-template-{}.tmp", unique_suffix()));
        // A leftover with our pid comes from a dead process that had the same pid.
        let _ = fs::remove_dir_all(&tmp);
        info!(template = %template.display(), "initialising PostgreSQL template cluster");
        let mut initdb = server_command(&bindir.join("initdb"));
        initdb.arg("-D").arg(&tmp);
        initdb.args("-U postgres -A trust -E UTF8 --locale=C --no-sync".split(' '));
        if let Err(e) = run(initdb, "initdb") {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let renamed = fs::rename(&tmp, &template);
        if renamed.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        match renamed {
            Ok(()) => Ok(template),
            // Another process won the race; its template is as good as ours.
            Err(_) if template.join("PG_VERSION").is_file() => Ok(template),
            Err(e) => Err(io_err("rename template into", &template)(e)),
        }
    }
}

fn prepare_cache_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    if owner.is_some() {
        chown_to_server(dir, owner)?;
        // Ownership is not enough: `postgres` must also traverse every parent. access(2)
        // as that user checks the whole path at once.
        let mut probe = server_command(Path::new("test"));
        probe.arg("-w").arg(dir);
        if !probe.status().is_ok_and(|s| s.success()) {
            return Err(Error::CacheDirNotAccessible(dir.to_owned()));
        }
    }
    Ok(())
}

/// The major version from `postgres --version`, e.g. "15" from "postgres (PostgreSQL) 15.18".
pub(crate) fn server_major_version(bindir: &Path) -> Result<String, Error> {
    let mut cmd = server_command(&bindir.join("postgres"));
    cmd.arg("--version");
    let out = run(cmd, "postgres --version")?;
    let major: String = out
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
        .map(|word| word.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    if major.is_empty() {
        Err(Error::Version(out.trim().to_owned()))
    } else {
        Ok(major)
    }
}

fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn free_port() -> Result<u16, Error> {
    // The port is free only until we drop the listener; `start` retries if it is lost.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_err("bind a probe socket on", Path::new("127.0.0.1:0")))
}

/// Quotes a value for postgresql.conf.
pub(crate) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Settings for [`LocalCluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the [`Template`] lives; reused across clusters and runs.
    pub cache_dir: PathBuf,
    /// Extra postgresql.conf settings as (name, value); values are written verbatim,
    /// so quote strings yourself: `("shared_preload_libraries", "'pg_stat_statements'")`.
    pub extra_conf: Vec<(String, String)>,
    /// Extra `postgres` command-line options, e.g. `-b` (binary-upgrade mode).
    pub server_options: Vec<String>,
    /// Sets `log_statement = 'all'`, so [`LocalCluster::read_log`] shows every query.
    pub log_statements: bool,
    /// Short label used in the temp dir name, to tell clusters apart.
    pub name: String,
}

impl ClusterOptions {
    /// Options with no extra settings, no statement logging and the name "cluster".
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            extra_conf: Vec::new(),
            server_options: Vec::new(),
            log_statements: false,
            name: "cluster".to_owned(),
        }
    }

    /// Adds one postgresql.conf setting (value written verbatim).
    pub fn with_conf(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_conf.push((name.into(), value.into()));
        self
    }

    /// Sets the label used in the temp dir name.
    /// Adds a `postgres` command-line option (kept across restarts).
    pub fn with_server_option(mut self, option: impl Into<String>) -> Self {
        self.server_options.push(option.into());
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Turns on `log_statement = 'all'`.
    pub fn with_statement_log(mut self) -> Self {
        self.log_statements = true;
        self
    }
}

/// A running (or stopped) private PostgreSQL server; stopped and deleted on drop.
/// User `postgres` with trust auth, listening on 127.0.0.1 only.
#[derive(Debug)]
pub struct LocalCluster {
    port: u16,
    /// Temp dir holding everything: data dir, server log and the Unix socket.
    root: PathBuf,
    data_dir: PathBuf,
    bindir: PathBuf,
    running: bool,
    server_options: Vec<String>,
}

impl LocalCluster {
    /// Copies the template into a fresh temp dir, configures it and starts it.
    pub fn start(opts: &ClusterOptions) -> Result<Self, Error> {
        let bindir = find_bindir()?;
        let owner = server_owner()?;
        let template = Template::obtain_with(&bindir, &opts.cache_dir)?;

        let name: String = opts
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(24) // Unix socket paths are limited to about 107 bytes
            .collect();
        let tmp = absolute(&std::env::temp_dir())?;
        let root = tmp.join(format!("sluice-pg-{name}-{}", unique_suffix()));
        // A leftover with our pid comes from a dead process that had the same pid.
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).map_err(io_err("create directory", &root))?;
        // From here on, Drop removes the root dir if anything fails.
        let mut cluster = LocalCluster {
            port: 0,
            data_dir: root.join("data"),
            root,
            bindir,
            running: false,
            server_options: opts.server_options.clone(),
        };
        chown_to_server(&cluster.root, owner)?;

        let mut cp = server_command(Path::new("cp"));
        cp.arg("-a").arg(&template).arg(&cluster.data_dir);
        run(cp, "cp -a of the template data dir")?;
        cluster.write_conf(opts)?;

        for attempt in 1..=PORT_ATTEMPTS {
            cluster.port = free_port()?;
            if cluster.launch()? {
                let root = cluster.root.display();
                debug!(port = cluster.port, %root, "local PostgreSQL started");
                return Ok(cluster);
            }
            debug!(
                port = cluster.port,
                attempt, "port taken before PostgreSQL bound it; retrying"
            );
        }
        Err(Error::Failed {
            cmd: "pg_ctl start".to_owned(),
            stderr: format!("could not bind a free port in {PORT_ATTEMPTS} attempts"),
        })
    }

    /// Appends our settings to postgresql.conf (later lines win). Appending keeps the
    /// file's owner, so the server can still read it when we write as root.
    fn write_conf(&self, opts: &ClusterOptions) -> Result<(), Error> {
        let mut conf = String::from("\n# added by sluice localpg\n");
        let settings = [
            ("listen_addresses", conf_quote("127.0.0.1")),
            (
                "unix_socket_directories",
                conf_quote(&self.root.to_string_lossy()),
            ),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("max_connections", "200".into()),
            ("shared_buffers", "32MB".into()),
            ("logging_collector", "off".into()),
        ];
        for (name, value) in &settings {
            let _ = writeln!(conf, "{name} = {value}");
        }
        if opts.log_statements {
            conf.push_str("log_statement = 'all'\n");
        }
        for (name, value) in &opts.extra_conf {
            let _ = writeln!(conf, "{name} = {value}");
        }
        let path = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(io_err("append to", &path))
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = server_command(&self.bindir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    /// Runs `pg_ctl start` on `self.port`. Ok(false) means the port was taken meanwhile.
    fn launch(&mut self) -> Result<bool, Error> {
        let log_path = self.log_path();
        let log_start = fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        let mut cmd = self.pg_ctl();
        // The port goes on the command line, not in postgresql.conf, so a retry with
        // another port doesn't have to rewrite the file.
        cmd.arg("-l")
            .arg(&log_path)
            .args(["-w", "-t", PG_CTL_TIMEOUT, "-o"]);
        let mut options = format!("-p {}", self.port);
        for option in &self.server_options {
            options.push(' ');
            options.push_str(option);
        }
        cmd.arg(options).arg("start");
        let what = "pg_ctl start";
        let out = cmd.output().map_err(|source| Error::Spawn {
            cmd: what.to_owned(),
            source,
        })?;
        if out.status.success() {
            self.running = true;
            return Ok(true);
        }
        let log = fs::read(&log_path).unwrap_or_default();
        let new_log = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
        if new_log.contains("could not bind") {
            return Ok(false);
        }
        let tail: Vec<&str> = new_log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(Error::Failed {
            cmd: what.to_owned(),
            stderr: format!("{}\nserver log:\n{}", failure_text(&out), tail.join("\n")),
        })
    }

    /// Turns on TLS with the given PEM certificate and key, and restarts.
    /// The key is copied into the data dir with mode 0600 and the server's
    /// owner, since PostgreSQL refuses a key others can read.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let owner = server_owner()?;
        for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
            let dest = self.data_dir.join(name);
            fs::copy(src, &dest).map_err(io_err("copy", src))?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod", &dest))?;
            chown_to_server(&dest, owner)?;
        }
        let path = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(
                    b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                )
            })
            .map_err(io_err("append to", &path))?;
        self.restart()
    }

    /// Starts the server again after a stop, on the same port and data dir.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.launch()? {
            Ok(())
        } else {
            Err(Error::Failed {
                cmd: "pg_ctl start".to_owned(),
                stderr: format!("port {} is now taken by another process", self.port),
            })
        }
    }

    /// Stops the server (fast mode) if it is running, then starts it again.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.running {
            self.stop()?;
        }
        self.start_again()
    }

    /// Stops the server with `pg_ctl stop -m fast`: sessions are rolled back cleanly.
    pub fn stop(&mut self) -> Result<(), Error> {
        self.stop_mode("fast")
    }

    /// Stops the server with `pg_ctl stop -m immediate`, like a crash: no checkpoint,
    /// and clients see their connections drop.
    pub fn stop_immediate(&mut self) -> Result<(), Error> {
        self.stop_mode("immediate")
    }

    fn stop_mode(&mut self, mode: &str) -> Result<(), Error> {
        let mut cmd = self.pg_ctl();
        cmd.args(["-w", "-t", PG_CTL_TIMEOUT, "-m", mode, "stop"]);
        run(cmd, &format!("pg_ctl stop -m {mode}"))?;
        self.running = false;
        Ok(())
    }

    /// Asks `pg_ctl status`, so it also notices a server that died on its own.
    pub fn is_running(&self) -> bool {
        let mut cmd = self.pg_ctl();
        cmd.arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A libpq/tokio-postgres connection string for `db` as user `postgres`.
    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The server log file (stderr of postgres).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The directory of the server binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The whole server log so far; empty if it cannot be read.
    pub fn read_log(&self) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&log).into_owned()
    }

    /// Runs `sql` with psql in unaligned, tuples-only mode and returns its stdout; stops
    /// at the first error. psql is a client, so it runs as the current user even as root.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let bundled = self.bindir.join("psql");
        let mut cmd = Command::new(if bundled.is_file() {
            bundled
        } else {
            "psql".into()
        });
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
        ]);
        cmd.arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql]);
        cmd.stdin(Stdio::null());
        let short: String = sql.chars().take(80).collect();
        let ellipsis = if short.len() < sql.len() { "..." } else { "" };
        run(cmd, &format!("psql -d {db} -c {short:?}{ellipsis}"))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // postmaster.pid also catches a server left behind by a pg_ctl start that timed out.
        if (self.running || self.data_dir.join("postmaster.pid").exists())
            && let Err(e) = self.stop_immediate()
        {
            // The server exits by itself within a minute once its lock file is gone.
            warn!(error = %e, root = %self.root.display(), "could not stop local PostgreSQL");
        }
        if let Err(e) = fs::remove_dir_all(&self.root)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(error = %e, root = %self.root.display(), "could not remove local PostgreSQL dir");
        }
    }
}

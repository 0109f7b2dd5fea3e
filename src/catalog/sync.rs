//! Catalog sync: rebuild the catalog copy from a warehouse node and swap it
//! in, so clients never see a half-built copy.
//!
//! For dialect `postgres`, per database: `pg_dump --schema-only
//! --binary-upgrade` from the first node that answers, streamed straight
//! into psql restoring a fresh staging database on the copy (sluice holds
//! none of the dump: its memory does not grow with the catalog); then one
//! transaction renames the live database away and the staging one into
//! its place, while the pool holds lookups off; then the old one is
//! dropped. Roles come first, from `pg_dumpall --roles-only
//! --no-role-passwords`, and are made NOLOGIN: the copy only ever runs
//! lookups under `SET ROLE`. A failed sync leaves the previous copy
//! serving. [`super::refresh`] uses the same pieces to copy only the
//! relations that changed.
//!
//! For dialect `vertica`, see [`super::vertica_sync`]: v_catalog tables
//! copied row by row into a copy started normally.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::CatalogPool;
use super::shape::{quote_ident, quote_literal};
use crate::config::Config;

/// The staging and retired databases of a full sync carry the process id,
/// so a `sluice catalog-sync` run beside a running sluice's refresher
/// never builds into the other's staging database.
fn staging() -> String {
    format!("sluice_staging_{}", std::process::id())
}

fn retired() -> String {
    format!("sluice_retired_{}", std::process::id())
}

/// How much of a tool's stderr is kept for the error message.
const STDERR_KEPT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no [catalog] section is configured")]
    NotConfigured,
    #[error("no warehouse node could be read for the sync: {0}")]
    NoNode(String),
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("the catalog copy did not accept the renamed databases after 20 tries: {0}")]
    Swap(String),
    #[error("reading v_catalog.{table} from {node} failed: {message}")]
    Source {
        node: String,
        table: String,
        message: String,
    },
    #[error("the catalog copy refused {what}: {message}")]
    CopyRefused { what: String, message: String },
    #[error(
        "the catalog copy runs in binary-upgrade mode (postgres -b), which refuses plain CREATE TABLE; the Vertica catalog needs a copy started normally (docs/catalog.md): {0}"
    )]
    BinaryUpgrade(String),
}

/// What one sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub node: String,
    pub databases: Vec<String>,
    pub elapsed: Duration,
}

/// Where pg_dump, pg_dumpall and psql are: in `catalog.postgres_bin` when
/// set, else next to the server binaries when they are installed, else on
/// the PATH.
fn tool(dir: Option<&std::path::Path>, name: &str) -> PathBuf {
    if let Some(dir) = dir {
        return dir.join(name);
    }
    crate::localpg::find_bindir()
        .map(|dir| dir.join(name))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A server the sync's tools connect to: a warehouse node or the copy.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: String,
    /// `catalog.postgres_bin`, where the tools are.
    pub tools: Option<PathBuf>,
}

impl Endpoint {
    /// The warehouse node `addr` ("host:port"), as the service user.
    pub fn node(config: &Config, addr: &str) -> Endpoint {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
        Endpoint {
            host: host.to_string(),
            port: port.to_string(),
            user: config.warehouse.service_user.clone(),
            password: config.warehouse.service_password.expose().to_string(),
            tools: config.catalog.as_ref().and_then(|c| c.postgres_bin.clone()),
        }
    }

    /// The catalog copy, as its superuser.
    pub fn copy(catalog: &crate::config::Catalog) -> Endpoint {
        Endpoint {
            host: catalog.host.clone(),
            port: catalog.port.to_string(),
            user: catalog.user.clone(),
            password: catalog.password.expose().to_string(),
            tools: catalog.postgres_bin.clone(),
        }
    }

    pub fn command(&self, program: &str, database: &str) -> Command {
        let mut cmd = Command::new(tool(self.tools.as_deref(), program));
        cmd.arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(&self.port)
            .arg("-U")
            .arg(&self.user);
        if program == "psql" {
            cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database]);
        } else if program == "pg_dump" {
            cmd.arg("-d").arg(database);
        }
        cmd.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }

    /// A tokio-postgres connection to `database`, for the questions of the
    /// refresher and of `sluice check` (sluice relays no rows of these, so
    /// a client library is fine here).
    pub async fn client(
        &self,
        database: &str,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&self.host)
            .port(self.port.parse().unwrap_or(5432))
            .user(&self.user)
            .dbname(database)
            .application_name("sluice catalog")
            .connect_timeout(timeout);
        if !self.password.is_empty() {
            pg.password(&self.password);
        }
        let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

/// Runs a command that reads nothing and prints little (psql -c).
async fn run(cmd: Command, what: &str) -> Result<(), SyncError> {
    run_with_input(cmd, what, None).await
}

/// Runs psql with `script` on its standard input (a short script).
async fn run_script(mut cmd: Command, what: &str, script: &str) -> Result<(), SyncError> {
    cmd.args(["-f", "-"]);
    run_with_input(cmd, what, Some(script)).await
}

async fn run_with_input(
    mut cmd: Command,
    what: &str,
    input: Option<&str>,
) -> Result<(), SyncError> {
    let spawn_failed = |source| SyncError::Spawn {
        cmd: what.to_string(),
        source,
    };
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_failed)?;
    let stderr = kept_stderr(child.stderr.take());
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        let input = input.as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let status = child.wait().await.map_err(spawn_failed)?;
    let stderr = stderr.await;
    if !status.success() {
        return Err(SyncError::Command {
            cmd: what.to_string(),
            stderr,
        });
    }
    Ok(())
}

/// Runs `dump | restore` with the dump flowing from one process to the
/// other through an OS pipe: sluice never holds it, so its memory does not
/// grow with the catalog. Both must succeed.
pub(super) async fn pipe(
    mut dump: Command,
    dump_what: &str,
    mut restore: Command,
    restore_what: &str,
) -> Result<(), SyncError> {
    dump.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut producer = dump.spawn().map_err(|source| SyncError::Spawn {
        cmd: dump_what.to_string(),
        source,
    })?;
    let dump_err = kept_stderr(producer.stderr.take());
    let output: Stdio = producer
        .stdout
        .take()
        .expect("stdout is piped")
        .try_into()
        .map_err(|source| SyncError::Spawn {
            cmd: dump_what.to_string(),
            source,
        })?;
    restore.args(["-f", "-"]).stdin(output);
    restore.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut consumer = match restore.spawn() {
        Ok(c) => c,
        Err(source) => {
            let _ = producer.kill().await;
            return Err(SyncError::Spawn {
                cmd: restore_what.to_string(),
                source,
            });
        }
    };
    let restore_err = kept_stderr(consumer.stderr.take());
    let restored = consumer.wait().await;
    // A restore that stopped early closes the pipe; the dump then fails
    // with a broken pipe, which says nothing the restore's error does not.
    let restored_ok = restored.as_ref().is_ok_and(|s| s.success());
    if !restored_ok {
        let _ = producer.kill().await;
    }
    let dumped = producer.wait().await;
    let (dump_err, restore_err) = (dump_err.await, restore_err.await);
    match dumped {
        Ok(s) if s.success() || !restored_ok => {}
        Ok(_) => {
            return Err(SyncError::Command {
                cmd: dump_what.to_string(),
                stderr: dump_err,
            });
        }
        Err(source) => {
            return Err(SyncError::Spawn {
                cmd: dump_what.to_string(),
                source,
            });
        }
    }
    match restored {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(SyncError::Command {
            cmd: restore_what.to_string(),
            stderr: if restore_err.is_empty() {
                dump_err
            } else {
                restore_err
            },
        }),
        Err(source) => Err(SyncError::Spawn {
            cmd: restore_what.to_string(),
            source,
        }),
    }
}

/// Reads a child's stderr in the background, keeping its first
/// [`STDERR_KEPT`] bytes (a tool that fails prints its reason first).
fn kept_stderr(
    stderr: Option<tokio::process::ChildStderr>,
) -> impl std::future::Future<Output = String> {
    let task = tokio::spawn(async move {
        let mut kept = Vec::new();
        if let Some(mut pipe) = stderr {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    });
    async move { task.await.unwrap_or_default() }
}

/// One full sync of every database. With `pool`, lookups are held off
/// during each swap.
pub async fn sync_once(
    config: &Config,
    pool: Option<&CatalogPool>,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let catalog = config.catalog.as_ref().ok_or(SyncError::NotConfigured)?;
    if catalog.dialect == crate::config::Dialect::Vertica {
        return super::vertica_sync::sync(config, catalog, pool).await;
    }
    let (node, databases) = pick_node(config).await?;
    let source = Endpoint::node(config, &node);
    let copy = Endpoint::copy(catalog);
    sync_roles(&source, &copy).await?;
    let mut names = Vec::new();
    for db in &databases {
        sync_database(&source, &copy, db, pool).await?;
        names.push(db.name.clone());
    }
    let report = SyncReport {
        node,
        databases: names,
        elapsed: started.elapsed(),
    };
    tracing::info!(node = report.node, databases = ?report.databases, elapsed = ?report.elapsed, "catalog sync finished");
    Ok(report)
}

/// A warehouse database, as a full sync recreates it.
#[derive(Debug, Clone)]
pub(super) struct Database {
    pub name: String,
    encoding: String,
    collate: String,
    ctype: String,
}

/// The warehouse's databases, name first, and what a full sync needs to
/// recreate one; also the change probe's listing.
pub(super) const DATABASES: &str = "/* sluice catalog probe */ SELECT datname::text, \
     pg_encoding_to_char(encoding), datcollate::text, datctype::text FROM pg_catalog.pg_database \
     WHERE datallowconn AND NOT datistemplate ORDER BY 1";

/// The first node that answers, and its databases.
pub(super) async fn pick_node(config: &Config) -> Result<(String, Vec<Database>), SyncError> {
    let w = &config.warehouse;
    let mut errors = Vec::new();
    for node in &w.nodes {
        let listed = async {
            let client = Endpoint::node(config, node)
                .client(&w.service_database, w.connect_timeout)
                .await?;
            client.query(DATABASES, &[]).await
        };
        match listed.await {
            Ok(rows) => {
                let dbs = rows
                    .iter()
                    .map(|r| Database {
                        name: r.get(0),
                        encoding: r.get(1),
                        collate: r.get(2),
                        ctype: r.get(3),
                    })
                    .collect();
                return Ok((node.clone(), dbs));
            }
            Err(e) => errors.push(format!("{node}: {e}")),
        }
    }
    Err(SyncError::NoNode(errors.join("; ")))
}

/// Copies the warehouse's roles into the copy (existing ones are kept)
/// and makes them NOLOGIN.
pub(super) async fn sync_roles(source: &Endpoint, copy: &Endpoint) -> Result<(), SyncError> {
    let mut dump = source.command("pg_dumpall", "");
    dump.args(["--roles-only", "--binary-upgrade", "--no-role-passwords"]);
    // Roles that exist already make CREATE ROLE fail; the ALTERs after it still apply.
    let mut apply = copy.command("psql", "template1");
    apply.args(["-v", "ON_ERROR_STOP=0"]);
    pipe(
        dump,
        "pg_dumpall --roles-only",
        apply,
        "psql (restore roles)",
    )
    .await?;
    let nologin = "DO $$DECLARE r record; BEGIN \
        FOR r IN SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolname <> current_user LOOP \
        EXECUTE format('ALTER ROLE %I NOLOGIN', r.rolname); END LOOP; END$$";
    let mut cmd = copy.command("psql", "template1");
    cmd.args(["-c", nologin]);
    run(cmd, "psql (roles NOLOGIN)").await
}

fn in_binary_upgrade_terms(e: SyncError) -> SyncError {
    match e {
        // pg_dump locks every table it dumps in one transaction.
        SyncError::Command { cmd, stderr }
            if stderr.contains("out of shared memory") && cmd.starts_with("pg_dump") =>
        {
            SyncError::Command {
                cmd,
                stderr: format!(
                    "{stderr} (pg_dump locks every table of the database at once: the warehouse node needs \
                     max_locks_per_transaction * max_connections above its number of tables; raise \
                     max_locks_per_transaction on the warehouse, see docs/catalog.md)"
                ),
            }
        }
        SyncError::Command { cmd, stderr } if stderr.contains("binary upgrade mode") => {
            SyncError::Command {
                cmd,
                stderr: format!(
                    "{stderr} (the catalog copy must run in binary-upgrade mode, `postgres -b`, so that OIDs match the warehouse; \
                     drop catalog.dsn to let sluice run its own copy; see docs/catalog.md)"
                ),
            }
        }
        other => other,
    }
}

/// Drops the staging and retired databases that syncs of processes no
/// longer running left in the copy (killed mid-sync): their names carry
/// the process id. A process on this machine is what runs a copy's syncs:
/// the managed copy's sluice, or a `catalog-sync` beside it. Best effort.
async fn drop_orphans(copy: &Endpoint) {
    let Ok(client) = copy.client("template1", Duration::from_secs(10)).await else {
        return;
    };
    let Ok(rows) = client
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database \
             WHERE datname LIKE 'sluice\\_staging\\_%' OR datname LIKE 'sluice\\_retired\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.rsplit('_').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() as i32 && !super::managed::alive(pid)) {
            tracing::info!(
                database = name,
                "dropping a database a killed sync left in the catalog copy"
            );
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                ))
                .await;
        }
    }
}

/// Copies one database whole into a staging database and swaps it in.
pub(super) async fn sync_database(
    source: &Endpoint,
    copy: &Endpoint,
    db: &Database,
    pool: Option<&CatalogPool>,
) -> Result<(), SyncError> {
    let (staging, retired) = (staging(), retired());
    let admin = |sql: String| {
        let mut cmd = copy.command("psql", "template1");
        cmd.args(["-c", &sql]);
        cmd
    };
    drop_orphans(copy).await;
    run(
        admin(format!("DROP DATABASE IF EXISTS {staging} WITH (FORCE)")),
        "psql (drop staging)",
    )
    .await?;
    run(
        admin(format!(
            "CREATE DATABASE {staging} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&db.encoding),
            quote_literal(&db.collate),
            quote_literal(&db.ctype)
        )),
        "psql (create staging)",
    )
    .await?;
    let mut dump = source.command("pg_dump", &db.name);
    dump.args(["--schema-only", "--binary-upgrade"]);
    let restore = copy.command("psql", &staging);
    pipe(
        dump,
        &format!("pg_dump of {}", db.name),
        restore,
        &format!("psql (restore {} into the catalog copy)", db.name),
    )
    .await
    .map_err(in_binary_upgrade_terms)?;
    swap(copy, &db.name, &staging, &retired, pool).await?;
    let _ = run(
        admin(format!("DROP DATABASE IF EXISTS {retired} WITH (FORCE)")),
        "psql (drop retired)",
    )
    .await;
    Ok(())
}

/// Copies the given relations of `database` again: drops `drop` from the
/// copy (with whatever depends on them there, which the caller lists in
/// `copy` too), then restores `copy` from `pg_dump -t` of each. The
/// database is stale meanwhile, so no lookup reads it half done.
pub(super) async fn copy_relations(
    source: &Endpoint,
    copy: &Endpoint,
    database: &str,
    drop: &[super::shape::Relation],
    copied: &[super::shape::Relation],
) -> Result<(), SyncError> {
    if !drop.is_empty() {
        let mut script = String::from("BEGIN;\n");
        for rel in drop {
            script.push_str(&rel.drop_statement());
            script.push_str(";\n");
        }
        // A dropped relation's file is only truncated until the next
        // checkpoint, and the restore gives the new relation the same
        // file number (binary-upgrade keeps the warehouse's): without the
        // checkpoint it would find the file there.
        script.push_str("COMMIT;\nCHECKPOINT;\n");
        run_script(
            copy.command("psql", database),
            &format!("psql (drop changed relations of {database})"),
            &script,
        )
        .await?;
    }
    if copied.is_empty() {
        return Ok(());
    }
    let mut dump = source.command("pg_dump", database);
    dump.args(["--schema-only", "--binary-upgrade"]);
    for rel in copied {
        dump.arg("-t").arg(rel.qualified());
    }
    let mut restore = copy.command("psql", database);
    restore.arg("-1");
    pipe(
        dump,
        &format!("pg_dump -t of {} relations of {database}", copied.len()),
        restore,
        &format!("psql (restore changed relations of {database})"),
    )
    .await
    .map_err(in_binary_upgrade_terms)
}

/// Renames staging into place in one transaction, so a lookup sees either
/// the old copy or the new one, never neither. Renaming needs the database
/// free of connections, and a running sluice's pool reconnects at once, so
/// the live database first stops accepting connections (lookups meanwhile
/// fall back to the nodes), then its sessions are closed, then both renames
/// commit together.
async fn swap(
    copy: &Endpoint,
    name: &str,
    staging: &str,
    retired: &str,
    pool: Option<&CatalogPool>,
) -> Result<(), SyncError> {
    let live = quote_ident(name);
    let exists = format!(
        "EXISTS (SELECT 1 FROM pg_database WHERE datname = {})",
        quote_literal(name)
    );
    let close = format!(
        "DO $$BEGIN IF {exists} THEN ALTER DATABASE {live} ALLOW_CONNECTIONS false; END IF; END$$;\n\
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname IN ({}, '{staging}') AND pid <> pg_backend_pid();\n",
        quote_literal(name)
    );
    let rename = format!(
        "BEGIN;\n\
         DO $$BEGIN IF {exists} THEN ALTER DATABASE {live} RENAME TO {retired}; END IF; END$$;\n\
         ALTER DATABASE {staging} RENAME TO {live};\n\
         COMMIT;\n"
    );
    let reopen = format!(
        "DO $$BEGIN IF {exists} THEN ALTER DATABASE {live} ALLOW_CONNECTIONS true; END IF; END$$;"
    );
    let mut last = String::new();
    for _ in 0..20 {
        let guard = match pool {
            Some(p) => Some(p.exclusive().await),
            None => None,
        };
        let _ = run_script(
            copy.command("psql", "template1"),
            "psql (close the live database)",
            &close,
        )
        .await;
        // pg_terminate_backend signals; the sessions take a moment to exit.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let result = run_script(copy.command("psql", "template1"), "psql (swap)", &rename).await;
        drop(guard);
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                let mut cmd = copy.command("psql", "template1");
                cmd.args(["-c", &reopen]);
                let _ = run(cmd, "psql (reopen the live database)").await;
            }
        }
    }
    Err(SyncError::Swap(last))
}

//! Catalog sync: rebuild the catalog copy from a warehouse node and swap it
//! in, so clients never see a half-built copy.
//!
//! For dialect `postgres`, per database: `pg_dump --schema-only
//! --binary-upgrade` from the first node that answers, restored into a fresh
//! staging database on the copy; then one transaction renames the live
//! database away and the staging one into its place, while the pool holds
//! lookups off; then the old one is dropped. Roles come first, from
//! `pg_dumpall --roles-only --no-role-passwords`, and are made NOLOGIN: the
//! copy only ever runs lookups under `SET ROLE`. A failed sync leaves the
//! previous copy serving.
//!
//! For dialect `vertica`, see [`super::vertica_sync`]: v_catalog tables
//! copied row by row into a copy started normally.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::CatalogPool;
use crate::config::Config;

const STAGING: &str = "sluice_staging";
const RETIRED: &str = "sluice_retired";

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

/// Where pg_dump, pg_dumpall and psql are: next to the server binaries when
/// they are installed, else on the PATH.
fn tool(name: &str) -> PathBuf {
    crate::localpg::find_bindir()
        .map(|dir| dir.join(name))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

struct Endpoint<'a> {
    host: &'a str,
    port: String,
    user: &'a str,
    password: &'a str,
}

impl Endpoint<'_> {
    fn command(&self, program: &str, database: &str) -> Command {
        let mut cmd = Command::new(tool(program));
        cmd.arg("-h")
            .arg(self.host)
            .arg("-p")
            .arg(&self.port)
            .arg("-U")
            .arg(self.user);
        if program == "psql" {
            cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database]);
        } else if program == "pg_dump" {
            cmd.arg("-d").arg(database);
        }
        cmd.env("PGPASSWORD", self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }
}

async fn run(mut cmd: Command, what: &str, stdin: Option<&[u8]>) -> Result<Vec<u8>, SyncError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|source| SyncError::Spawn {
        cmd: what.to_string(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| SyncError::Spawn {
            cmd: what.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(SyncError::Command {
            cmd: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One full sync. With `pool`, lookups are held off during each swap.
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
    let (node_host, node_port) = node.rsplit_once(':').unwrap_or((node.as_str(), "5432"));
    let source = Endpoint {
        host: node_host,
        port: node_port.to_string(),
        user: &config.warehouse.service_user,
        password: config.warehouse.service_password.expose(),
    };
    let copy = Endpoint {
        host: &catalog.host,
        port: catalog.port.to_string(),
        user: &catalog.user,
        password: catalog.password.expose(),
    };
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

struct Database {
    name: String,
    encoding: String,
    collate: String,
    ctype: String,
}

/// The first node that answers, and its databases.
async fn pick_node(config: &Config) -> Result<(String, Vec<Database>), SyncError> {
    let w = &config.warehouse;
    let mut errors = Vec::new();
    for node in &w.nodes {
        let Some((host, port)) = node.rsplit_once(':') else {
            continue;
        };
        let mut pg = tokio_postgres::Config::new();
        pg.host(host)
            .port(port.parse().unwrap_or(5432))
            .user(&w.service_user)
            .dbname(&w.service_database)
            .application_name("sluice catalog sync")
            .connect_timeout(w.connect_timeout);
        if !w.service_password.is_empty() {
            pg.password(w.service_password.expose());
        }
        let listed = async {
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client
                .query(
                    "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database \
                     WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                    &[],
                )
                .await
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

async fn sync_roles(source: &Endpoint<'_>, copy: &Endpoint<'_>) -> Result<(), SyncError> {
    let mut dump = source.command("pg_dumpall", "");
    dump.args(["--roles-only", "--binary-upgrade", "--no-role-passwords"]);
    let roles = run(dump, "pg_dumpall --roles-only", None).await?;
    // Roles that exist already make CREATE ROLE fail; the ALTERs after it still apply.
    let mut apply = copy.command("psql", "template1");
    apply.args(["-v", "ON_ERROR_STOP=0", "-f", "-"]);
    run(apply, "psql (restore roles)", Some(&roles)).await?;
    let nologin = "DO $$DECLARE r record; BEGIN \
        FOR r IN SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolname <> current_user LOOP \
        EXECUTE format('ALTER ROLE %I NOLOGIN', r.rolname); END LOOP; END$$";
    let mut cmd = copy.command("psql", "template1");
    cmd.args(["-c", nologin]);
    run(cmd, "psql (roles NOLOGIN)", None).await?;
    Ok(())
}

async fn sync_database(
    source: &Endpoint<'_>,
    copy: &Endpoint<'_>,
    db: &Database,
    pool: Option<&CatalogPool>,
) -> Result<(), SyncError> {
    let admin = |sql: String| {
        let mut cmd = copy.command("psql", "template1");
        cmd.args(["-c", &sql]);
        cmd
    };
    run(
        admin(format!("DROP DATABASE IF EXISTS {STAGING} WITH (FORCE)")),
        "psql (drop staging)",
        None,
    )
    .await?;
    run(
        admin(format!(
            "CREATE DATABASE {STAGING} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&db.encoding),
            quote_literal(&db.collate),
            quote_literal(&db.ctype)
        )),
        "psql (create staging)",
        None,
    )
    .await?;
    let mut dump = source.command("pg_dump", &db.name);
    dump.args(["--schema-only", "--binary-upgrade"]);
    let schema = run(dump, &format!("pg_dump of {}", db.name), None).await?;
    let mut restore = copy.command("psql", STAGING);
    restore.args(["-f", "-"]);
    run(restore, &format!("psql (restore {} into the catalog copy)", db.name), Some(&schema))
        .await
        .map_err(|e| match e {
            SyncError::Command { cmd, stderr } if stderr.contains("binary upgrade mode") => SyncError::Command {
                cmd,
                stderr: format!(
                    "{stderr} (the catalog copy must run in binary-upgrade mode, `postgres -b`, so that OIDs match the warehouse; see docs/catalog.md)"
                ),
            },
            other => other,
        })?;
    swap(copy, &db.name, pool).await?;
    let _ = run(
        admin(format!("DROP DATABASE IF EXISTS {RETIRED} WITH (FORCE)")),
        "psql (drop retired)",
        None,
    )
    .await;
    Ok(())
}

/// Renames staging into place in one transaction, so a lookup sees either
/// the old copy or the new one, never neither. Renaming needs the database
/// free of connections, and a running sluice's pool reconnects at once, so
/// the live database first stops accepting connections (lookups meanwhile
/// fall back to the nodes), then its sessions are closed, then both renames
/// commit together.
async fn swap(
    copy: &Endpoint<'_>,
    name: &str,
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
         WHERE datname IN ({}, '{STAGING}') AND pid <> pg_backend_pid();\n",
        quote_literal(name)
    );
    let rename = format!(
        "BEGIN;\n\
         DO $$BEGIN IF {exists} THEN ALTER DATABASE {live} RENAME TO {RETIRED}; END IF; END$$;\n\
         ALTER DATABASE {STAGING} RENAME TO {live};\n\
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
        let mut cmd = copy.command("psql", "template1");
        cmd.args(["-f", "-"]);
        let _ = run(
            cmd,
            "psql (close the live database)",
            Some(close.as_bytes()),
        )
        .await;
        // pg_terminate_backend signals; the sessions take a moment to exit.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut cmd = copy.command("psql", "template1");
        cmd.args(["-f", "-"]);
        let result = run(cmd, "psql (swap)", Some(rename.as_bytes())).await;
        drop(guard);
        match result {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                let mut cmd = copy.command("psql", "template1");
                cmd.args(["-c", &reopen]);
                let _ = run(cmd, "psql (reopen the live database)", None).await;
            }
        }
    }
    Err(SyncError::Swap(last))
}

/// Runs the sync every `catalog.sync_interval` until `stop`; each result is
/// counted, and a failure raises an alert event.
pub async fn run_periodically(
    sluice: std::sync::Arc<crate::server::Sluice>,
    generations: tokio::sync::watch::Receiver<std::sync::Arc<crate::server::Generation>>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let generation = generations.borrow().clone();
        let Some(interval) = generation
            .config
            .catalog
            .as_ref()
            .and_then(|c| c.sync_interval)
        else {
            return;
        };
        let result = sync_once(&generation.config, generation.catalog.as_deref()).await;
        sluice.metrics.catalog_sync(result.is_ok());
        match result {
            Ok(_) => sluice
                .alerts
                .raise(crate::alerts::AlertEvent::CatalogSyncSucceeded),
            Err(e) => {
                tracing::error!(error = %e, "catalog sync failed; the previous catalog copy keeps serving");
                sluice
                    .alerts
                    .raise(crate::alerts::AlertEvent::CatalogSyncFailed {
                        error: e.to_string(),
                    });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

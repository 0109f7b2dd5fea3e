//! Catalog sync for `catalog.dialect = "vertica"`: copies the `v_catalog`
//! tables Vertica clients read into a `v_catalog` schema of the catalog copy
//! (vertica-protocol.md §6).
//!
//! One session on a warehouse node, as `warehouse.service_user`, runs
//! `SELECT * FROM v_catalog.<table>` for each table of [`TABLES`]. Each
//! result's RowDescription (PostgreSQL's layout from a PostgreSQL node,
//! Vertica's from a Vertica node, §3.2) gives the columns of a table created
//! in a staging schema of the copy, and the rows stream into it through
//! `COPY ... FROM STDIN`: one round trip per table and no SQL quoting of
//! values (only COPY's four escapes), where batched INSERTs would need every
//! value quoted and cast. Derived per run, the tables follow whatever the
//! warehouse's Vertica version has. Then one transaction drops the live
//! `v_catalog` and renames staging into its place, so a lookup sees the old
//! copy or the new one, never a mix. A failed sync leaves the previous copy
//! serving.
//!
//! The copy's database is named after `warehouse.service_database` (a
//! Vertica cluster has one database, and clients name it when they connect).
//! Users listed in `v_catalog.users` become NOLOGIN roles on the copy, since
//! lookups run under `SET ROLE`. Vertica filters its system tables by the
//! user's privileges; the copy grants SELECT on every table to PUBLIC, so
//! sluice does **not**.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use super::conn::{CatalogConn, Login};
use super::shape::{quote_ident, quote_literal};
use super::sync::{SyncError, SyncReport};
use super::{CatalogError, CatalogPool};
use crate::config::{Catalog, Config, Dialect};
use crate::protocol::{backend, frontend, vertica};

/// The v_catalog tables clients read (vertica-protocol.md §6).
pub const TABLES: &[&str] = &[
    "schemata",
    "tables",
    "views",
    "columns",
    "view_columns",
    "odbc_columns",
    "system_tables",
    "all_tables",
    "types",
    "primary_keys",
    "foreign_keys",
    "table_constraints",
    "constraint_columns",
    "comments",
    "sequences",
    "projections",
    "projection_columns",
    "user_functions",
    "nodes",
    "users",
];

/// The schema a sync builds v_catalog in: per process, so a `sluice
/// catalog-sync` beside a running sluice's refresher builds its own.
fn staging() -> String {
    format!("sluice_v_catalog_staging_{}", std::process::id())
}

/// A CopyData message is sent once this much is gathered.
const COPY_CHUNK: usize = 64 * 1024;

/// Which layout the source's RowDescriptions have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Postgres,
    Vertica,
}

/// A column of a source result, as the copy's table will have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub pg_type: &'static str,
}

/// The copy's columns for a result: Vertica OIDs map back per §6 (6 →
/// bigint, 8/9 → text, 5 → boolean, 7 → double precision, 16 → numeric, 12
/// → timestamp, 13 → timestamptz, 10 → date, unknown → text). A PostgreSQL
/// node's types go through the Vertica type they would be shown as, so the
/// copy looks the same whichever kind of node it came from.
pub fn columns_of(
    body: &[u8],
    layout: Layout,
) -> Result<Vec<Column>, crate::protocol::ProtocolError> {
    Ok(match layout {
        Layout::Postgres => vertica::parse_pg_row_description(body)?
            .into_iter()
            .map(|c| Column {
                name: String::from_utf8_lossy(&c.name).into_owned(),
                pg_type: vertica::postgres_type_name(vertica::vertica_type(c.type_oid).0),
            })
            .collect(),
        Layout::Vertica => vertica::parse_row_description(body, false)?
            .into_iter()
            .map(|c| Column {
                name: c.name,
                pg_type: vertica::postgres_type_name(c.type_oid),
            })
            .collect(),
    })
}

/// Appends one row in COPY's text format: tab-separated, `\N` for NULL,
/// and backslash, tab, newline and carriage return escaped.
pub fn copy_line(out: &mut BytesMut, values: &[Option<&[u8]>]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        match value {
            None => out.put_slice(b"\\N"),
            Some(v) => {
                for &b in *v {
                    match b {
                        b'\\' => out.put_slice(b"\\\\"),
                        b'\t' => out.put_slice(b"\\t"),
                        b'\n' => out.put_slice(b"\\n"),
                        b'\r' => out.put_slice(b"\\r"),
                        _ => out.put_u8(b),
                    }
                }
            }
        }
    }
    out.put_u8(b'\n');
}

/// The rows a simple query returned, or the server's (SQLSTATE, message).
type Answer = Result<Vec<Vec<Option<String>>>, (String, String)>;

/// Runs a simple query on a whole-rows connection and reads up to ReadyForQuery.
pub(super) async fn simple(conn: &mut CatalogConn, sql: &str) -> Result<Answer, CatalogError> {
    conn.send(crate::protocol::frontend::encode_query(sql).raw())
        .await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let frame = conn.next_frame().await?;
        match frame.tag() {
            backend::DATA_ROW => rows.push(
                vertica::data_row_values(frame.body())?
                    .into_iter()
                    .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .collect(),
            ),
            backend::ERROR_RESPONSE if error.is_none() => {
                error = Some(backend::error_summary(frame.body()))
            }
            backend::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    Ok(match error {
        Some(e) => Err(e),
        None => Ok(rows),
    })
}

/// Runs DDL on the copy; a refusal becomes a sync error naming `what`.
async fn on_copy(conn: &mut CatalogConn, sql: &str, what: &str) -> Result<(), SyncError> {
    match simple(conn, sql).await.map_err(copy_failed)? {
        Ok(_) => Ok(()),
        Err((_, message)) if message.contains("binary upgrade mode") => {
            Err(SyncError::BinaryUpgrade(message))
        }
        Err((code, message)) => Err(SyncError::CopyRefused {
            what: what.to_string(),
            message: format!("{message} (SQLSTATE {code})"),
        }),
    }
}

fn copy_failed(e: CatalogError) -> SyncError {
    SyncError::CopyRefused {
        what: "the connection".into(),
        message: e.to_string(),
    }
}

/// One sync of the Vertica catalog.
pub async fn sync(
    config: &Config,
    catalog: &Catalog,
    pool: Option<&CatalogPool>,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let staging = staging();
    let w = &config.warehouse;
    let (node, mut source) = open_source(config).await?;
    let layout = match w.dialect {
        Dialect::Vertica => Layout::Vertica,
        Dialect::Postgres => Layout::Postgres,
    };
    let database = w.service_database.as_str();
    let copy_login = |db: &'static str| Login {
        addr: format!("{}:{}", catalog.host, catalog.port),
        user: &catalog.user,
        password: catalog.password.expose(),
        database: db,
        vertica: false,
    };
    // The copy's database is created on the first sync.
    let mut admin = CatalogConn::open(&copy_login("postgres"))
        .await
        .map_err(copy_failed)?;
    admin.set_whole_rows(true);
    let exists = simple(
        &mut admin,
        &format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            quote_literal(database)
        ),
    )
    .await
    .map_err(copy_failed)?;
    if exists.is_ok_and(|rows| rows.is_empty()) {
        on_copy(
            &mut admin,
            &format!("CREATE DATABASE {}", quote_ident(database)),
            "creating the database",
        )
        .await?;
    }
    let mut copy = CatalogConn::open(&Login {
        database,
        ..copy_login("postgres")
    })
    .await
    .map_err(copy_failed)?;
    copy.set_whole_rows(true);
    on_copy(
        &mut copy,
        &format!("DROP SCHEMA IF EXISTS {staging} CASCADE; CREATE SCHEMA {staging}"),
        "creating the staging schema",
    )
    .await?;
    let mut copied = Vec::new();
    for table in TABLES {
        match copy_table(&mut source, &mut copy, &node, table, layout).await? {
            Some(rows) => {
                tracing::debug!(table, rows, "copied v_catalog table");
                copied.push(*table);
            }
            None => tracing::info!(
                node,
                table,
                "v_catalog.{table} is missing on the warehouse node; the catalog copy goes without it"
            ),
        }
    }
    if copied.contains(&"users") {
        // Lookups run under SET ROLE <session user>: the users must exist.
        let create = format!(
            "DO $$DECLARE r record; BEGIN \
             FOR r IN SELECT DISTINCT user_name::text AS u FROM {staging}.users \
             WHERE user_name IS NOT NULL AND user_name::text NOT IN (SELECT rolname FROM pg_roles) LOOP \
             EXECUTE format('CREATE ROLE %I NOLOGIN', r.u); END LOOP; END$$"
        );
        on_copy(&mut copy, &create, "creating roles for v_catalog.users").await?;
    }
    let _ = source
        .send(&crate::protocol::frontend::TERMINATE_MESSAGE)
        .await;
    // Vertica shows each user only what it may see; the copy shows
    // everyone everything (documented in docs/catalog.md).
    let swap = format!(
        "BEGIN; SET LOCAL lock_timeout = '30s'; \
         DROP SCHEMA IF EXISTS v_catalog CASCADE; \
         ALTER SCHEMA {staging} RENAME TO v_catalog; \
         GRANT USAGE ON SCHEMA v_catalog TO PUBLIC; \
         GRANT SELECT ON ALL TABLES IN SCHEMA v_catalog TO PUBLIC; \
         COMMIT"
    );
    // Lookups in flight finish first (DROP waits for their locks); new
    // ones wait for the commit and then read the new tables.
    let guard = match pool {
        Some(p) => Some(p.exclusive().await),
        None => None,
    };
    let swapped = on_copy(&mut copy, &swap, "the swap of v_catalog").await;
    drop(guard);
    swapped?;
    let report = SyncReport {
        node,
        databases: vec![database.to_string()],
        elapsed: started.elapsed(),
    };
    tracing::info!(node = report.node, database, tables = copied.len(), elapsed = ?report.elapsed,
        "catalog sync (v_catalog) finished");
    Ok(report)
}

/// The first node that lets the sync user in.
pub(super) async fn open_source(config: &Config) -> Result<(String, CatalogConn), SyncError> {
    let w = &config.warehouse;
    let mut errors = Vec::new();
    for node in &w.nodes {
        let login = Login {
            addr: node.clone(),
            user: &w.service_user,
            password: w.service_password.expose(),
            database: &w.service_database,
            vertica: w.dialect == Dialect::Vertica,
        };
        match tokio::time::timeout(w.connect_timeout, CatalogConn::open(&login)).await {
            Ok(Ok(mut conn)) => {
                conn.set_whole_rows(true);
                return Ok((node.clone(), conn));
            }
            Ok(Err(e)) => errors.push(format!("{node}: {e}")),
            Err(_) => errors.push(format!("{node}: no login within {:?}", w.connect_timeout)),
        }
    }
    Err(SyncError::NoNode(errors.join("; ")))
}

/// Copies one table into staging; `Ok(None)` when the node lacks it.
async fn copy_table(
    source: &mut CatalogConn,
    copy: &mut CatalogConn,
    node: &str,
    table: &str,
    layout: Layout,
) -> Result<Option<u64>, SyncError> {
    let staging = staging();
    let failed = |message: String| SyncError::Source {
        node: node.to_string(),
        table: table.to_string(),
        message,
    };
    source
        .send(
            crate::protocol::frontend::encode_query(&format!("SELECT * FROM v_catalog.{table}"))
                .raw(),
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut rows = 0u64;
    let mut copying = false;
    let mut missing = false;
    let mut error: Option<String> = None;
    let mut data = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(300), source.next_frame())
            .await
            .map_err(|_| failed("no answer within 5 minutes".into()))?
            .map_err(|e| failed(e.to_string()))?;
        match frame.tag() {
            backend::ROW_DESCRIPTION if error.is_none() => {
                let columns =
                    columns_of(frame.body(), layout).map_err(|e| failed(e.to_string()))?;
                let defs: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type))
                    .collect();
                let target = format!("{staging}.{}", quote_ident(table));
                on_copy(
                    copy,
                    &format!("CREATE TABLE {target} ({})", defs.join(", ")),
                    &format!("creating v_catalog.{table}"),
                )
                .await?;
                start_copy(copy, &target, table).await?;
                copying = true;
            }
            backend::DATA_ROW if copying => {
                let values =
                    vertica::data_row_values(frame.body()).map_err(|e| failed(e.to_string()))?;
                copy_line(&mut data, &values);
                rows += 1;
                if data.len() >= COPY_CHUNK {
                    send_copy_data(copy, &mut data).await?;
                }
            }
            backend::ERROR_RESPONSE if error.is_none() => {
                let (code, message) = backend::error_summary(frame.body());
                // 42P01 PostgreSQL, 42V01 Vertica: no such relation.
                if !copying && (code == "42P01" || code == "42V01") {
                    missing = true;
                } else {
                    error = Some(format!("{message} (SQLSTATE {code})"));
                }
            }
            backend::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    if copying {
        if let Some(e) = &error {
            // CopyFail: the copy rolls the COPY back.
            let mut fail = BytesMut::new();
            frontend::encode_copy_fail(&mut fail, e);
            copy.send(&fail).await.map_err(copy_failed)?;
            let _ = finish_copy(copy, table).await;
        } else {
            send_copy_data(copy, &mut data).await?;
            copy.send(&[b'c', 0, 0, 0, 4]).await.map_err(copy_failed)?;
            finish_copy(copy, table).await?;
        }
    }
    match error {
        Some(e) => Err(failed(e)),
        None if missing => Ok(None),
        None => Ok(Some(rows)),
    }
}

async fn start_copy(copy: &mut CatalogConn, target: &str, table: &str) -> Result<(), SyncError> {
    copy.send(crate::protocol::frontend::encode_query(&format!("COPY {target} FROM STDIN")).raw())
        .await
        .map_err(copy_failed)?;
    loop {
        let frame = copy.next_frame().await.map_err(copy_failed)?;
        match frame.tag() {
            b'G' => return Ok(()),
            backend::ERROR_RESPONSE => {
                let (code, message) = backend::error_summary(frame.body());
                let _ = finish_copy(copy, table).await;
                return Err(SyncError::CopyRefused {
                    what: format!("loading v_catalog.{table}"),
                    message: format!("{message} (SQLSTATE {code})"),
                });
            }
            _ => {}
        }
    }
}

async fn send_copy_data(copy: &mut CatalogConn, data: &mut BytesMut) -> Result<(), SyncError> {
    if data.is_empty() {
        return Ok(());
    }
    let mut msg = BytesMut::with_capacity(data.len() + 5);
    frontend::encode_copy_data(&mut msg, data);
    data.clear();
    copy.send(&msg).await.map_err(copy_failed)
}

/// Reads the end of a COPY up to ReadyForQuery.
async fn finish_copy(copy: &mut CatalogConn, table: &str) -> Result<(), SyncError> {
    let mut error = None;
    loop {
        let frame = copy.next_frame().await.map_err(copy_failed)?;
        match frame.tag() {
            backend::ERROR_RESPONSE if error.is_none() => {
                error = Some(backend::error_summary(frame.body()))
            }
            backend::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    match error {
        None => Ok(()),
        Some((code, message)) => Err(SyncError::CopyRefused {
            what: format!("loading v_catalog.{table}"),
            message: format!("{message} (SQLSTATE {code})"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed_body(build: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        build(&mut b);
        b.to_vec()
    }

    #[test]
    fn vertica_type_oids_map_back_to_postgres_types() {
        // A Vertica RowDescription: no pool, one column per OID of §6.
        let oids = [6, 8, 9, 5, 7, 16, 12, 13, 10, 300, 115];
        let body = framed_body(|b| {
            b.put_i16(oids.len() as i16);
            b.put_i32(0);
            for (i, oid) in oids.iter().enumerate() {
                b.put_slice(format!("c{i}\0").as_bytes());
                b.put_i64(0);
                b.put_i16(i as i16 + 1);
                b.put_u8(0);
                b.put_i32(*oid);
                b.put_i16(-1);
                b.put_i16(1);
                b.put_i16(0);
                b.put_i32(-1);
                b.put_i16(0);
            }
        });
        let types: Vec<&str> = columns_of(&body, Layout::Vertica)
            .unwrap()
            .into_iter()
            .map(|c| c.pg_type)
            .collect();
        assert_eq!(
            types,
            [
                "bigint",
                "text",
                "text",
                "boolean",
                "double precision",
                "numeric",
                "timestamp",
                "timestamptz",
                "date",
                "text",
                "text"
            ]
        );
    }

    #[test]
    fn postgres_columns_take_the_type_vertica_would_show() {
        // int4, name, bool, timestamptz, bytea, json (unknown to Vertica).
        let oids = [23, 19, 16, 1184, 17, 114];
        let body = framed_body(|b| {
            b.put_i16(oids.len() as i16);
            for (i, oid) in oids.iter().enumerate() {
                b.put_slice(format!("c{i}\0").as_bytes());
                b.put_i32(0);
                b.put_i16(0);
                b.put_i32(*oid);
                b.put_i16(-1);
                b.put_i32(-1);
                b.put_i16(0);
            }
        });
        let types: Vec<&str> = columns_of(&body, Layout::Postgres)
            .unwrap()
            .into_iter()
            .map(|c| c.pg_type)
            .collect();
        assert_eq!(
            types,
            ["bigint", "text", "boolean", "timestamptz", "bytea", "text"]
        );
        assert!(
            columns_of(&[0, 1], Layout::Postgres).is_err(),
            "a short message is an error, not a panic"
        );
    }

    #[test]
    fn copy_lines_escape_what_copy_text_format_reads_specially() {
        let mut out = BytesMut::new();
        copy_line(
            &mut out,
            &[
                Some(b"a\tb"),
                None,
                Some(b"back\\slash\nnew\rline"),
                Some(b""),
            ],
        );
        assert_eq!(
            &out[..],
            b"a\\tb\t\\N\tback\\\\slash\\nnew\\rline\t\n".as_slice()
        );
    }
}

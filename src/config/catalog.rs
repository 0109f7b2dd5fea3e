//! The `[catalog]` section: the PostgreSQL catalog copy that answers
//! catalog lookups, run by sluice or reached by `dsn`.

use std::time::Duration;

use toml::Spanned;

use super::{Dialect, Secret, Validator, raw};

/// The superuser the managed catalog copy is initialised with, and sluice
/// logs in as.
pub const MANAGED_SUPERUSER: &str = "postgres";

/// The PostgreSQL catalog copy that answers catalog lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// What `catalog-sync` copies: PostgreSQL's catalog (a binary-upgrade
    /// restore) or Vertica's `v_catalog` tables. Defaults to
    /// `warehouse.dialect`; tests set it apart, since their "Vertica
    /// warehouse" is a PostgreSQL node holding a `v_catalog` schema.
    pub dialect: Dialect,
    pub host: String,
    pub port: u16,
    /// A superuser of the catalog copy: it must `SET ROLE` to each client's role.
    pub user: String,
    /// `Some` when sluice runs the copy itself (no `dsn`); `host` and
    /// `port` are then filled in once it has started.
    pub managed: Option<ManagedCatalog>,
    /// The change probe's period; `None` ("0s"): changes made elsewhere
    /// are only seen by `sync_interval`'s full syncs.
    pub probe_interval: Option<Duration>,
    /// How long sessions must report no catalog change before a refresh.
    pub refresh_debounce: Duration,
    /// More changed relations than this: the database is copied whole.
    pub max_incremental: usize,
    /// The directory of the PostgreSQL binaries: the managed copy's server,
    /// and pg_dump, pg_dumpall and psql (`catalog.postgres_bin`); `None`:
    /// found on the machine.
    pub postgres_bin: Option<std::path::PathBuf>,
    pub password: Secret,
    pub schemas: Vec<String>,
    pub allowed_functions: Vec<String>,
    pub pool_size: usize,
    /// How long a lookup may wait for a pooled connection before the node answers it.
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    /// After the copy failed, lookups go to the nodes for this long before it is tried again.
    pub retry_after: Duration,
    /// A lookup the copy has not answered within this goes to the node.
    pub answer_timeout: Duration,
    /// Periodic sync inside `sluice run`; `None`: only `sluice catalog-sync`.
    pub sync_interval: Option<Duration>,
    /// Classifications kept by query text.
    pub cache_size: usize,
    /// Query texts longer than this (bytes) are not parsed: they go to the node.
    pub max_parse_size: usize,
}

/// The catalog copy sluice runs itself.
#[derive(Debug, Clone)]
pub struct ManagedCatalog {
    pub data_dir: std::path::PathBuf,
}

impl Validator<'_> {
    /// `catalog.dsn`: host, port, user and password of an external copy.
    fn catalog_dsn(&mut self, dsn: &Spanned<String>) -> Option<(String, u16, String, String)> {
        let parsed: tokio_postgres::Config = match dsn.get_ref().parse() {
            Ok(c) => c,
            Err(e) => {
                self.problem(
                    dsn.span(),
                    "catalog.dsn",
                    format!("is not a libpq connection string: {e}"),
                );
                return None;
            }
        };
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                self.problem(
                    dsn.span(),
                    "catalog.dsn",
                    "needs host=<address> (a TCP host, not a socket path)",
                );
                return None;
            }
        };
        let port = parsed.get_ports().first().copied().unwrap_or(5432);
        let Some(user) = parsed.get_user().map(str::to_string) else {
            self.problem(
                dsn.span(),
                "catalog.dsn",
                "needs user=<superuser of the catalog copy>",
            );
            return None;
        };
        let password = parsed
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        Some((host, port, user, password))
    }

    pub(super) fn catalog(
        &mut self,
        raw: raw::RawCatalog,
        default_dialect: Dialect,
    ) -> Option<Catalog> {
        let dialect = match &raw.dialect {
            Some(d) => self.choice(
                "catalog.dialect",
                d,
                &[
                    ("postgres", Dialect::Postgres),
                    ("vertica", Dialect::Vertica),
                ],
            ),
            None => Some(default_dialect),
        };
        let endpoint = match &raw.dsn {
            Some(dsn) => self.catalog_dsn(dsn),
            None => Some((
                // Filled in when the managed copy has started.
                "127.0.0.1".to_string(),
                0,
                MANAGED_SUPERUSER.to_string(),
                String::new(),
            )),
        };
        let managed = match (&raw.dsn, raw.data_dir.get_ref().as_str()) {
            (Some(_), _) => None,
            (None, "") => {
                self.problem(
                    raw.data_dir.span(),
                    "catalog.data_dir",
                    "is empty; name the directory sluice keeps its catalog copy in, or set catalog.dsn",
                );
                None
            }
            (None, dir) => Some(ManagedCatalog {
                data_dir: dir.into(),
            }),
        };
        if let Some(bin) = &raw.postgres_bin
            && !std::path::Path::new(bin.get_ref())
                .join("postgres")
                .is_file()
            && !std::path::Path::new(bin.get_ref())
                .join("pg_dump")
                .is_file()
        {
            self.problem(
                bin.span(),
                "catalog.postgres_bin",
                format!(
                    "{:?} holds neither postgres nor pg_dump; name the directory of the PostgreSQL server binaries (pg_config --bindir)",
                    bin.get_ref()
                ),
            );
        }
        if raw.schemas.is_empty() {
            self.problem(
                0..0,
                "catalog.schemas",
                "lists no schema; catalog lookups could never match",
            );
        }
        let probe_interval = match humantime::parse_duration(raw.probe_interval.get_ref()) {
            Ok(d) if d.is_zero() => Some(None),
            Ok(d) => Some(Some(d)),
            Err(e) => {
                self.problem(
                    raw.probe_interval.span(),
                    "catalog.probe_interval",
                    format!("is not a duration (\"10s\", or \"0s\" to turn the probe off): {e}"),
                );
                None
            }
        };
        let refresh_debounce = self.duration("catalog.refresh_debounce", &raw.refresh_debounce);
        let max_incremental = self.count(
            "catalog.max_incremental",
            &raw.max_incremental,
            1,
            1_000_000,
        );
        let pool_size = self.count("catalog.pool_size", &raw.pool_size, 1, 10_000);
        let acquire_timeout = self.duration("catalog.acquire_timeout", &raw.acquire_timeout);
        let connect_timeout = self.duration("catalog.connect_timeout", &raw.connect_timeout);
        let retry_after = self.duration("catalog.retry_after", &raw.retry_after);
        let answer_timeout = self.duration("catalog.answer_timeout", &raw.answer_timeout);
        let sync_interval = match &raw.sync_interval {
            Some(v) => self.duration("catalog.sync_interval", v).map(Some),
            None => Some(None),
        };
        let cache_size = self.count("catalog.cache_size", &raw.cache_size, 1, 10_000_000);
        let max_parse_size =
            self.count("catalog.max_parse_size", &raw.max_parse_size, 64, 64 << 20);
        let (host, port, user, password) = endpoint?;
        Some(Catalog {
            dialect: dialect?,
            host,
            port,
            user,
            postgres_bin: raw.postgres_bin.as_ref().map(|p| p.get_ref().into()),
            managed,
            probe_interval: probe_interval?,
            refresh_debounce: refresh_debounce?,
            max_incremental: max_incremental?,
            password: Secret::new(password),
            schemas: raw.schemas.iter().map(|s| s.to_lowercase()).collect(),
            allowed_functions: raw
                .allowed_functions
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            pool_size: pool_size?,
            acquire_timeout: acquire_timeout?,
            connect_timeout: connect_timeout?,
            retry_after: retry_after?,
            answer_timeout: answer_timeout?,
            sync_interval: sync_interval?,
            cache_size: cache_size?,
            max_parse_size: max_parse_size?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn catalog_section_is_validated() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=127.0.0.1 port=5440 user=sluice password=pw\"\n").unwrap();
        let cat = c.catalog.unwrap();
        assert_eq!(
            (cat.host.as_str(), cat.port, cat.user.as_str()),
            ("127.0.0.1", 5440, "sluice")
        );
        assert_eq!(cat.password.expose(), "pw");
        assert_eq!(
            cat.schemas,
            ["pg_catalog", "information_schema", "v_catalog"]
        );
        assert!(cat.sync_interval.is_none());
        assert_eq!(cat.dialect, Dialect::Postgres);
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\ndialect = \"vertica\"\n[catalog]\ndsn = \"host=h user=u\"\n").unwrap();
        assert_eq!(
            c.catalog.unwrap().dialect,
            Dialect::Vertica,
            "defaults to the warehouse's"
        );
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\ndialect = \"vertica\"\n").unwrap();
        assert_eq!(c.catalog.unwrap().dialect, Dialect::Vertica);
        let err = parse("[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\ndialect = \"db2\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains(":5: catalog.dialect: \"db2\" is not one of"),
            "{err}"
        );
        let err = parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"port=5440\"\npool_size = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(":4: catalog.dsn: needs host="), "{text}");
        assert!(text.contains(":5: catalog.pool_size:"), "{text}");
    }
}

//! Configuration: read in two stages.
//!
//! [`raw`] mirrors the TOML file and its defaults; [`Config::parse`] validates
//! every key, resolves it into the types the rest of sluice uses, and reports
//! every problem at once with its line and key path. Sessions receive an
//! `Arc<Config>` when they start; a reload builds a new one beside it, so a
//! session keeps the configuration it started with.

mod catalog;
mod cluster;
mod error;
mod observability;
mod pooling;
mod raw;
mod rules;
mod server;
mod warehouse;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use catalog::{Catalog, MANAGED_SUPERUSER, ManagedCatalog};
pub use cluster::Cluster;
pub use error::{ConfigError, Problem};

/// The configuration in effect, as a long-running task reads it: the
/// latest after every reload.
pub trait Current: Send + Sync + 'static {
    fn config(&self) -> std::sync::Arc<Config>;
}
pub use observability::{
    Admin, AdminAuth, AdminUser, AlertEvents, Alerts, Condition, Threshold, ThresholdMetric,
};
pub use pooling::{Auth, AuthMode, Pooling};
use raw::RawConfig;
pub use rules::{Limits, Stats};
pub use server::{ClientTlsMode, Server, ServerTls};
pub use warehouse::{Dialect, NodeTls, NodeTlsMode, Secret, Warehouse};

use crate::classify::RuleSet;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub warehouse: Warehouse,
    pub admin: Admin,
    pub alerts: Alerts,
    /// Things that work but should be fixed (e.g. a plain-text admin
    /// password); `sluice check` prints them, `sluice run` logs them.
    pub warnings: Vec<Problem>,
    /// `None` when no `[catalog]` section: every query goes to the nodes.
    pub catalog: Option<Catalog>,
    pub cluster: Cluster,
    /// `[[rules]]`, in order.
    pub rules: RuleSet,
    pub limits: Limits,
    pub stats: Stats,
    pub auth: Auth,
    pub pooling: Pooling,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: shown.clone(),
            problems: vec![Problem {
                line: None,
                key: "(file)".into(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&source, &shown, base)
    }

    /// Validates configuration text; relative file paths resolve against `base`.
    /// The files besides the config file whose contents the configuration
    /// depends on: a change to any of them is a reason to reload.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(t) = &self.server.tls {
            files.extend([t.cert.clone(), t.key.clone()]);
        }
        files.extend(self.warehouse.tls.ca.clone());
        files.extend(self.warehouse.service_password_file.clone());
        files
    }

    pub fn parse(source: &str, shown_path: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut v = Validator {
            source,
            base,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(source) {
            Ok(raw) => raw,
            Err(e) => {
                v.problems.push(Problem {
                    line: e.span().map(|s| v.line(&s)),
                    key: "(syntax)".into(),
                    message: e.message().trim().to_string(),
                });
                return Err(v.into_error(shown_path));
            }
        };
        let config = v.config(raw);
        match config {
            Some(mut c) if v.problems.is_empty() => {
                c.warnings = v.warnings;
                Ok(c)
            }
            _ => Err(v.into_error(shown_path)),
        }
    }
}

/// Collects problems while resolving raw values; each resolver returns
/// `None` for a bad value and records why.
struct Validator<'a> {
    source: &'a str,
    base: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.source.len());
        self.source[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn problem(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        // Defaults carry an empty span at 0: they have no line.
        let line = (span != (0..0)).then(|| self.line(&span));
        self.problems.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warning(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let line = (span != (0..0)).then(|| self.line(&span));
        self.warnings.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn into_error(self, path: &str) -> ConfigError {
        ConfigError {
            path: path.to_string(),
            problems: self.problems,
        }
    }

    fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(value.span(), key, "must be longer than zero");
                None
            }
            Err(e) => {
                self.problem(
                    value.span(),
                    key,
                    format!(
                        "{:?} is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"5m\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn count(&mut self, key: &str, value: &Spanned<i64>, min: i64, max: i64) -> Option<usize> {
        let n = *value.get_ref();
        if n < min || n > max {
            self.problem(
                value.span(),
                key,
                format!("must be between {min} and {max}, not {n}"),
            );
            return None;
        }
        Some(n as usize)
    }

    fn socket_addr(&mut self, key: &str, value: &Spanned<String>) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    value.span(),
                    key,
                    format!(
                        "{:?} is not an IP address with a port, e.g. \"127.0.0.1:5433\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        choices: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == value.get_ref()) {
            return Some(*t);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        self.problem(
            value.span(),
            key,
            format!("{:?} is not one of {}", value.get_ref(), names.join(", ")),
        );
        None
    }

    fn file(&mut self, key: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = self.base.join(value.get_ref());
        if let Err(e) = std::fs::metadata(&path) {
            self.problem(
                value.span(),
                key,
                format!("cannot read {}: {e}", path.display()),
            );
            return None;
        }
        Some(path)
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let Some(warehouse) = raw.warehouse else {
            self.problem(
                0..0,
                "warehouse",
                "missing section: add [warehouse] with nodes = [\"host:port\", ...]",
            );
            return None;
        };
        let warehouse = self.warehouse(warehouse.into_inner());
        let default_dialect = warehouse
            .as_ref()
            .map(|w| w.dialect)
            .unwrap_or(Dialect::Postgres);
        let catalog = match raw.catalog {
            Some(c) => self.catalog(c, default_dialect).map(Some),
            None => Some(None),
        };
        let admin = self.admin(raw.admin);
        let alerts = self.alerts(raw.alerts);
        let cluster = self.cluster(raw.cluster);
        let rules = self.rules(raw.rules);
        let limits = self.limits(raw.limits);
        let stats = self.stats(raw.stats);
        let client_tls = server.as_ref().is_some_and(|s| s.tls.is_some());
        let auth = self.auth(raw.auth, default_dialect, client_tls);
        let pooling = self.pooling(raw.pooling);
        Some(Config {
            auth: auth?,
            pooling: pooling?,
            rules: rules?,
            limits: limits?,
            stats: stats?,
            server: server?,
            warehouse: warehouse?,
            catalog: catalog?,
            admin: admin?,
            alerts: alerts?,
            cluster: cluster?,
            warnings: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For the tests of every section.
    pub(super) fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(src, "sluice.toml", Path::new("."))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[warehouse]\nnodes = [\"127.0.0.1:5441\"]\n").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:5433");
        assert_eq!(c.server.max_message_size, 64 << 20);
        assert_eq!(c.warehouse.health_check_interval, Duration::from_secs(2));
        assert_eq!(c.warehouse.dialect, Dialect::Postgres);
        assert_eq!(c.warehouse.tls.mode, NodeTlsMode::Disable);
        assert_eq!(c.server.max_client_connections_per_user, None);
        assert_eq!((c.server.cancel_rate, c.server.cancel_burst), (100, 200));
    }

    #[test]
    fn every_problem_is_reported_with_line_and_key() {
        let src = "[server]\nlisten = \"nowhere\"\ndrain_timeout = \"soon\"\n\n[warehouse]\ndialect = \"oracle\"\nnodes = [\"127.0.0.1:5441\", \"db\", \"127.0.0.1:5441\"]\n";
        let err = parse(src).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sluice.toml:2: server.listen:"), "{text}");
        assert!(
            text.contains("sluice.toml:3: server.drain_timeout:"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:6: warehouse.dialect: \"oracle\" is not one of"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:7: warehouse.nodes[1]: \"db\" has no port"),
            "{text}"
        );
        assert!(
            text.contains("warehouse.nodes[2]: \"127.0.0.1:5441\" is listed twice"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 5);
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_their_line() {
        let err = parse("[warehouse]\nnodes = [\"a:1\"]\nnode_list = 3\n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(3));
        assert!(err.problems[0].message.contains("node_list"), "{err}");
        let err = parse("[warehouse\n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(1));
    }

    #[test]
    fn missing_warehouse_is_explained() {
        let err = parse("").unwrap_err();
        assert!(err.to_string().contains("warehouse: missing section"));
    }
}

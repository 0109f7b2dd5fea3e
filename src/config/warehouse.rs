//! The `[warehouse]` section: the nodes, their health checks, the service
//! login and TLS towards them; and [`Secret`], which keeps passwords out of
//! logs.

use std::path::PathBuf;
use std::time::Duration;

use super::{Validator, raw};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Vertica,
}

#[derive(Debug, Clone)]
pub struct Warehouse {
    pub dialect: Dialect,
    /// Node addresses as written (`host:port`); they also name the nodes.
    pub nodes: Vec<String>,
    pub health_check_interval: Duration,
    pub health_check_timeout: Duration,
    /// Consecutive good checks before a down node takes sessions again.
    pub healthy_after: u32,
    /// Consecutive failed checks before a node is taken out of rotation.
    pub unhealthy_after: u32,
    pub connect_timeout: Duration,
    /// Node connections kept per node, after their client left, for the
    /// next client that logs in the same way; 0 keeps none.
    pub idle_connections: usize,
    /// How long a kept node connection waits for a client before it closes.
    pub idle_timeout: Duration,
    pub service_user: String,
    pub service_password: Secret,
    /// Where `service_password` was read from, when it came from a file.
    pub service_password_file: Option<PathBuf>,
    pub service_database: String,
    pub tls: NodeTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeTlsMode {
    Disable,
    /// TLS when the node offers it, without verifying its certificate.
    Prefer,
    /// TLS always, without verifying the certificate (libpq's `require`).
    Require,
    /// TLS with the certificate verified against `ca` and the node's host name.
    VerifyFull,
}

#[derive(Debug, Clone)]
pub struct NodeTls {
    pub mode: NodeTlsMode,
    pub ca: Option<PathBuf>,
}

/// A value that must never reach a log, an error or the admin console.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Validator<'_> {
    pub(super) fn warehouse(&mut self, raw: raw::RawWarehouse) -> Option<Warehouse> {
        let dialect = self.choice(
            "warehouse.dialect",
            &raw.dialect,
            &[
                ("postgres", Dialect::Postgres),
                ("vertica", Dialect::Vertica),
            ],
        );
        let mut nodes: Vec<String> = Vec::new();
        if raw.nodes.get_ref().is_empty() {
            self.problem(
                raw.nodes.span(),
                "warehouse.nodes",
                "lists no node; add at least one \"host:port\"",
            );
        }
        for (i, node) in raw.nodes.get_ref().iter().enumerate() {
            let key = format!("warehouse.nodes[{i}]");
            match node_address_problem(node.get_ref()) {
                Some(why) => self.problem(node.span(), &key, why),
                None if nodes.contains(node.get_ref()) => self.problem(
                    node.span(),
                    &key,
                    format!("{:?} is listed twice", node.get_ref()),
                ),
                None => nodes.push(node.get_ref().clone()),
            }
        }
        let interval = self.duration(
            "warehouse.health_check_interval",
            &raw.health_check_interval,
        );
        let check_timeout =
            self.duration("warehouse.health_check_timeout", &raw.health_check_timeout);
        let healthy_after = self.count("warehouse.healthy_after", &raw.healthy_after, 1, 100);
        let unhealthy_after = self.count("warehouse.unhealthy_after", &raw.unhealthy_after, 1, 100);
        let connect_timeout = self.duration("warehouse.connect_timeout", &raw.connect_timeout);
        let idle_connections = self.count(
            "warehouse.idle_connections",
            &raw.idle_connections,
            0,
            10_000,
        );
        let idle_timeout = self.duration("warehouse.idle_timeout", &raw.idle_timeout);
        if raw.service_user.get_ref().is_empty() {
            self.problem(
                raw.service_user.span(),
                "warehouse.service_user",
                "must not be empty",
            );
        }
        let password = match &raw.service_password_file {
            None => Some((Secret::new(raw.service_password.clone()), None)),
            Some(_) if !raw.service_password.is_empty() => {
                self.problem(
                    0..0,
                    "warehouse.service_password_file",
                    "set together with service_password; keep only one of them",
                );
                None
            }
            Some(file) => self
                .file("warehouse.service_password_file", file)
                .and_then(|path| {
                    match std::fs::read_to_string(&path) {
                        // Files written by `echo` or editors end with a newline
                        // that is not part of the password.
                        Ok(text) => {
                            Some((Secret::new(text.trim_end_matches(['\n', '\r'])), Some(path)))
                        }
                        Err(e) => {
                            self.problem(
                                file.span(),
                                "warehouse.service_password_file",
                                format!("cannot read {}: {e}", path.display()),
                            );
                            None
                        }
                    }
                }),
        };
        let tls = match raw.tls {
            None => Some(NodeTls {
                mode: NodeTlsMode::Disable,
                ca: None,
            }),
            Some(t) => {
                let mode = self.choice(
                    "warehouse.tls.mode",
                    &t.mode,
                    &[
                        ("disable", NodeTlsMode::Disable),
                        ("prefer", NodeTlsMode::Prefer),
                        ("require", NodeTlsMode::Require),
                        ("verify-full", NodeTlsMode::VerifyFull),
                    ],
                );
                let ca = match &t.ca {
                    Some(ca) => self.file("warehouse.tls.ca", ca).map(Some),
                    None => Some(None),
                };
                if mode == Some(NodeTlsMode::VerifyFull) && t.ca.is_none() {
                    self.problem(
                        t.mode.span(),
                        "warehouse.tls.ca",
                        "is required with mode = \"verify-full\"",
                    );
                }
                Some(NodeTls {
                    mode: mode?,
                    ca: ca?,
                })
            }
        };
        if nodes.len() != raw.nodes.get_ref().len() {
            return None;
        }
        let (service_password, service_password_file) = password?;
        Some(Warehouse {
            dialect: dialect?,
            nodes,
            health_check_interval: interval?,
            health_check_timeout: check_timeout?,
            healthy_after: healthy_after? as u32,
            unhealthy_after: unhealthy_after? as u32,
            connect_timeout: connect_timeout?,
            idle_connections: idle_connections?,
            idle_timeout: idle_timeout?,
            service_user: raw.service_user.into_inner(),
            service_password,
            service_password_file,
            service_database: raw.service_database.into_inner(),
            tls: tls?,
        })
    }
}

/// Why `addr` is not a usable `host:port`, if it is not.
pub(super) fn node_address_problem(addr: &str) -> Option<String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Some(format!("{addr:?} has no port; write \"host:port\""));
    };
    if host.is_empty() {
        return Some(format!("{addr:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{addr:?} has no valid port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::parse;

    #[test]
    fn the_service_password_may_come_from_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
        let src = "[warehouse]\nnodes = [\"a:1\"]\nservice_password_file = \"pw\"\n";
        let c = Config::parse(src, "sluice.toml", &dir).unwrap();
        assert_eq!(c.warehouse.service_password.expose(), "s3cret");
        assert_eq!(c.referenced_files(), vec![dir.join("pw")]);
        let src = "[warehouse]\nnodes = [\"a:1\"]\nservice_password = \"x\"\nservice_password_file = \"pw\"\n";
        let err = Config::parse(src, "sluice.toml", &dir).unwrap_err();
        assert!(err.to_string().contains("keep only one of them"), "{err}");
        let src = "[warehouse]\nnodes = [\"a:1\"]\nservice_password_file = \"missing\"\n";
        let err = Config::parse(src, "sluice.toml", &dir).unwrap_err();
        assert!(
            err.to_string()
                .contains("sluice.toml:3: warehouse.service_password_file: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\nservice_password = \"hunter2\"\n").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.warehouse.service_password.expose(), "hunter2");
    }
}

//! The `[auth]` and `[pooling]` sections: who checks a client's password,
//! and how node connections are shared between client sessions (see
//! [`crate::frontend::pooled`]).

use std::time::Duration;

use super::{Dialect, Validator, raw};
use crate::classify::rules::Glob;

/// Who checks a client's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The node, as today: the login is relayed. sluice can log in again
    /// for the client only when the node asked for no password.
    Passthrough,
    /// sluice, against the secret the service account reads with
    /// `auth_query` (PgBouncer's way); PostgreSQL warehouses only.
    AuthQuery,
    /// sluice asks a client on TLS for its password in clear text, checks
    /// it by one node login and keeps it for the session's later logins.
    Cleartext,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub mode: AuthMode,
    /// Returns `(name, secret)` for the user given as `$1`.
    pub auth_query: String,
    /// How long a secret read by `auth_query` is used before it is read again.
    pub cache: Duration,
}

#[derive(Debug, Clone)]
pub struct Pooling {
    /// A session idle outside a transaction this long gives its node
    /// connection back; `None`: sessions never detach.
    pub idle_detach: Option<Duration>,
    /// At most this many connections per node, attached or kept; `None`:
    /// no cap but the node's own.
    pub max_node_connections: Option<usize>,
    /// How long a session waits for a node connection under the cap.
    pub wait_timeout: Duration,
    /// `[[pooling.transaction]]`: clients given a node connection per
    /// transaction rather than per session.
    pub transaction: Vec<TransactionPooling>,
}

/// Clients pooled per transaction: every list given must match (globs,
/// as in rules).
#[derive(Debug, Clone, Default)]
pub struct TransactionPooling {
    pub users: Vec<Glob>,
    pub applications: Vec<Glob>,
    pub databases: Vec<Glob>,
}

impl TransactionPooling {
    pub fn matches(&self, user: &str, application: &str, database: &str) -> bool {
        let any = |globs: &[Glob], value: &str| {
            globs.is_empty() || globs.iter().any(|g| g.matches(value))
        };
        any(&self.users, user)
            && any(&self.applications, application)
            && any(&self.databases, database)
    }
}

impl Pooling {
    /// Whether a session with these startup values is pooled per transaction.
    pub fn per_transaction(&self, user: &str, application: &str, database: &str) -> bool {
        self.transaction
            .iter()
            .any(|t| t.matches(user, application, database))
    }
}

impl Validator<'_> {
    pub(super) fn auth(
        &mut self,
        raw: raw::RawAuth,
        dialect: Dialect,
        client_tls: bool,
    ) -> Option<Auth> {
        let mode = self.choice(
            "auth.mode",
            &raw.mode,
            &[
                ("passthrough", AuthMode::Passthrough),
                ("auth_query", AuthMode::AuthQuery),
                ("cleartext", AuthMode::Cleartext),
            ],
        )?;
        if mode == AuthMode::AuthQuery && dialect == Dialect::Vertica {
            self.problem(
                raw.mode.span(),
                "auth.mode",
                "\"auth_query\" reads password hashes from PostgreSQL's pg_shadow, which Vertica does not expose; use \"cleartext\" (with [server.tls]) or \"passthrough\"",
            );
        }
        if mode == AuthMode::Cleartext && !client_tls {
            self.problem(
                raw.mode.span(),
                "auth.mode",
                "\"cleartext\" asks clients for their password and is only done over TLS: configure [server.tls]",
            );
        }
        if !raw.auth_query.get_ref().contains("$1") {
            self.problem(
                raw.auth_query.span(),
                "auth.auth_query",
                "must take the user name as $1, e.g. \"SELECT usename, passwd FROM pg_shadow WHERE usename = $1\"",
            );
        }
        let cache = self.duration("auth.cache", &raw.cache)?;
        Some(Auth {
            mode,
            auth_query: raw.auth_query.into_inner(),
            cache,
        })
    }

    pub(super) fn pooling(&mut self, raw: raw::RawPooling) -> Option<Pooling> {
        let idle_detach = match &raw.idle_detach {
            Some(d) => Some(self.duration("pooling.idle_detach", d)?),
            None => None,
        };
        let max_node_connections = match &raw.max_node_connections {
            Some(n) => Some(self.count("pooling.max_node_connections", n, 1, 100_000)?),
            None => None,
        };
        let wait_timeout = self.duration("pooling.wait_timeout", &raw.wait_timeout);
        let mut transaction = Vec::new();
        for (i, entry) in raw.transaction.iter().enumerate() {
            let key = format!("pooling.transaction[{i}]");
            let e = entry.get_ref();
            let mut lists = |name: &str, values: &Option<Vec<toml::Spanned<String>>>| match values {
                Some(v) => self.globs(&format!("{key}.{name}"), v, false),
                None => Some(Vec::new()),
            };
            let users = lists("users", &e.users);
            let applications = lists("applications", &e.applications);
            let databases = lists("databases", &e.databases);
            let (Some(users), Some(applications), Some(databases)) =
                (users, applications, databases)
            else {
                continue;
            };
            if users.is_empty() && applications.is_empty() && databases.is_empty() {
                self.problem(
                    entry.span(),
                    &key,
                    "names no users, applications or databases; transaction pooling is for clients known to keep no session state, so say which",
                );
                continue;
            }
            transaction.push(TransactionPooling {
                users,
                applications,
                databases,
            });
        }
        Some(Pooling {
            idle_detach,
            max_node_connections,
            wait_timeout: wait_timeout?,
            transaction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    const NODES: &str = "[warehouse]\nnodes = [\"127.0.0.1:5441\"]\n";

    #[test]
    fn defaults_keep_todays_behaviour() {
        let c = parse(NODES).unwrap();
        assert_eq!(c.auth.mode, AuthMode::Passthrough);
        assert!(c.auth.auth_query.contains("pg_shadow"));
        assert_eq!(c.pooling.idle_detach, None);
        assert_eq!(c.pooling.max_node_connections, None);
        assert_eq!(c.pooling.wait_timeout, Duration::from_secs(30));
    }

    #[test]
    fn pooling_keys_parse_and_bad_ones_name_their_line() {
        let c = parse(&format!(
            "{NODES}[auth]\nmode = \"auth_query\"\n[pooling]\nidle_detach = \"30s\"\nmax_node_connections = 100\nwait_timeout = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(c.auth.mode, AuthMode::AuthQuery);
        assert_eq!(c.pooling.idle_detach, Some(Duration::from_secs(30)));
        assert_eq!(c.pooling.max_node_connections, Some(100));
        let err = parse(&format!(
            "{NODES}[auth]\nmode = \"ldap\"\n[pooling]\nmax_node_connections = 0\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":4: auth.mode: \"ldap\" is not one of"),
            "{err}"
        );
        assert!(err.contains(":6: pooling.max_node_connections"), "{err}");
    }

    #[test]
    fn transaction_pooling_matches_like_rules() {
        let c = parse(&format!(
            "{NODES}[[pooling.transaction]]\napplications = [\"pgbench\", \"metabase*\"]\n[[pooling.transaction]]\nusers = [\"etl\"]\ndatabases = [\"dw\"]\n"
        ))
        .unwrap();
        let p = &c.pooling;
        assert!(p.per_transaction("anyone", "pgbench", "x"));
        assert!(p.per_transaction("anyone", "metabase 0.50", "x"));
        assert!(p.per_transaction("etl", "psql", "dw"));
        assert!(!p.per_transaction("etl", "psql", "other"));
        assert!(!p.per_transaction("bob", "DBeaver", "dw"));
        let err = parse(&format!("{NODES}[[pooling.transaction]]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pooling.transaction[0]: names no users"),
            "{err}"
        );
    }

    #[test]
    fn modes_that_cannot_work_are_refused() {
        let err = parse(
            "[warehouse]\ndialect = \"vertica\"\nnodes = [\"127.0.0.1:5441\"]\n[auth]\nmode = \"auth_query\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("auth.mode: \"auth_query\" reads password hashes"),
            "{err}"
        );
        let err = parse(&format!("{NODES}[auth]\nmode = \"cleartext\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only done over TLS"), "{err}");
        let err = parse(&format!("{NODES}[auth]\nauth_query = \"SELECT 1\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.auth_query: must take the user name as $1"),
            "{err}"
        );
    }
}

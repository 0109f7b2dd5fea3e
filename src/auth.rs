//! Clients authenticated by sluice itself (`[auth] mode = "auth_query"` or
//! `"cleartext"`), so that sluice can open node connections for them
//! later: after a detached session's next query, on another node.
//!
//! - `auth_query`: the service account reads the user's secret from the
//!   warehouse (PgBouncer's way; [`Secrets`] caches it for `[auth] cache`),
//!   sluice runs SCRAM-SHA-256 or MD5 with the client against it, and logs
//!   in to nodes with what the exchange proved ([`Credential::Scram`]: the
//!   ClientKey, see [`crate::scram`]; [`Credential::Md5`]: the stored hash).
//!   Nothing a client sends is ever a password sluice keeps.
//! - `cleartext` (Vertica with LDAP, over TLS only): the client's password,
//!   checked by the session's first node login and held in memory for that
//!   session's later logins.
//!
//! A wrong password and a user unknown to `auth_query` get the same answer
//! (28P01, PostgreSQL's text) at the same step. Secrets never reach a log.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use dashmap::DashMap;
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::backend::node::NodeSet;
use crate::config::{AuthMode, Config};
use crate::generation::Generation;
use crate::net::{MessageStream, ReadError, send_fatal};
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::frame::{Scanner, Treatment};
use crate::protocol::login::{Answerer, Request};
use crate::protocol::{frontend, sqlstate};
use crate::scram::{self, Exchange, KeyLogin, Proven, Verifier};

/// What sluice logs in to nodes with, for one client.
#[derive(Clone)]
pub enum Credential {
    /// The node asked the client for nothing: the startup packet is enough.
    Trusted,
    /// The ClientKey the client's SCRAM exchange proved.
    Scram(Proven),
    /// The stored MD5 hash (hex, without its `md5` prefix).
    Md5(String),
    /// The client's own password (`cleartext` mode).
    Password(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Trusted => "Trusted",
            Credential::Scram(_) => "Scram(***)",
            Credential::Md5(_) => "Md5(***)",
            Credential::Password(_) => "Password(***)",
        })
    }
}

impl Credential {
    /// The client proved to sluice who it is (SCRAM or MD5 against the
    /// warehouse's secret): it may have a connection another session of
    /// the same user opened. A cleartext password is proved only by a
    /// node login of its own.
    pub fn proves_identity(&self) -> bool {
        matches!(self, Credential::Scram(_) | Credential::Md5(_))
    }
}

/// The state of one node login answered with a [`Credential`].
#[derive(Default)]
pub struct NodeAnswer {
    password: Answerer,
    scram: Option<KeyLogin>,
}

impl NodeAnswer {
    /// Appends the answer to a node's authentication request; the error
    /// says why the credential cannot answer it.
    pub fn answer(
        &mut self,
        credential: &Credential,
        request: &Request<'_>,
        user: &str,
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let refuse = |what: &str| {
            Err(format!(
                "the node asks for {what}, which sluice cannot give for a client it authenticated by {}",
                match credential {
                    Credential::Trusted => "the node's trust",
                    Credential::Scram(_) => "SCRAM",
                    Credential::Md5(_) => "MD5",
                    Credential::Password(_) => "password",
                }
            ))
        };
        match (credential, request) {
            (_, Request::Ok) => Ok(()),
            (Credential::Password(p), request) => self
                .password
                .answer(request, user.as_bytes(), p.as_bytes(), out)
                .map_err(|e| e.to_string()),
            (Credential::Md5(hash), Request::Md5 { salt }) => {
                frontend::encode_password(out, md5_answer(hash, *salt).as_bytes());
                Ok(())
            }
            (Credential::Scram(proven), Request::Sasl { mechanisms }) => {
                if !mechanisms
                    .split(|b| *b == 0)
                    .any(|m| m == scram::MECHANISM.as_bytes())
                {
                    return refuse("a SASL mechanism other than SCRAM-SHA-256");
                }
                let (login, first) = KeyLogin::new(proven.clone());
                frontend::encode_sasl_initial_response(out, scram::MECHANISM, first.as_bytes());
                self.scram = Some(login);
                Ok(())
            }
            (Credential::Scram(_), Request::SaslContinue(data)) => {
                let login = self
                    .scram
                    .as_mut()
                    .ok_or("SASL continued before it started")?;
                let last = login.update(data).map_err(|e| e.to_string())?;
                frontend::encode_sasl_response(out, last.as_bytes());
                Ok(())
            }
            (Credential::Scram(_), Request::SaslFinal(data)) => {
                let login = self.scram.take().ok_or("SASL finished before it started")?;
                login.finish(data).map_err(|e| e.to_string())
            }
            (_, Request::Md5 { .. }) => refuse("an MD5 password"),
            (_, Request::Sasl { .. } | Request::SaslContinue(_) | Request::SaslFinal(_)) => {
                refuse("SCRAM-SHA-256")
            }
            (_, Request::Cleartext) => refuse("a clear-text password"),
            (_, other) => refuse(&format!("authentication {other:?}")),
        }
    }
}

/// Why a node login on a client's behalf failed.
#[derive(Debug)]
pub enum NodeLoginError {
    /// The node refused it: its ErrorResponse, as the client should see it.
    Refused(bytes::Bytes),
    /// It could not be carried through (connection, timeout, method).
    Failed(String),
}

impl std::fmt::Display for NodeLoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeLoginError::Refused(raw) => {
                let (code, message) = backend::error_summary(raw.get(5..).unwrap_or_default());
                write!(f, "the node refused the login: {message} (SQLSTATE {code})")
            }
            NodeLoginError::Failed(why) => f.write_str(why),
        }
    }
}

/// Opens a session on a node for a client sluice authenticated: sends
/// `startup`, answers the node's authentication requests with
/// `credential`, and returns the stream and what the node sent from
/// AuthenticationOk up to its first ReadyForQuery (the greeting, in the
/// form kept connections store it), all within the connect timeout.
/// `vertica`: the node speaks Vertica's protocol (its own authentication
/// codes).
pub async fn log_in(
    connector: &crate::backend::connect::NodeConnector,
    addr: &str,
    startup: &[u8],
    user: &str,
    credential: &Credential,
    vertica: bool,
) -> Result<(crate::net::Stream, bytes::Bytes), NodeLoginError> {
    let timeout = connector.timeout();
    let login = async {
        let mut stream = connector
            .connect(addr)
            .await
            .map_err(|e| NodeLoginError::Failed(e.to_string()))?;
        let failed = |e: std::io::Error| NodeLoginError::Failed(format!("node {addr}: {e}"));
        stream.write_all(startup).await.map_err(failed)?;
        let mut greeting = BytesMut::new();
        let mut answer = NodeAnswer::default();
        let mut out = BytesMut::new();
        {
            let mut messages =
                MessageStream::new(&mut stream, Scanner::new(1 << 20, |_| Treatment::Inspect));
            loop {
                let frame = match messages.frame().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        return Err(NodeLoginError::Failed(format!(
                            "node {addr} closed the connection during the login"
                        )));
                    }
                    Err(e) => return Err(NodeLoginError::Failed(format!("node {addr}: {e}"))),
                };
                match frame.tag() {
                    backend::AUTHENTICATION => {
                        let request = crate::protocol::login::request(frame.body(), vertica);
                        if matches!(request, Request::Ok | Request::VerticaGrace) {
                            greeting.extend_from_slice(frame.raw());
                            continue;
                        }
                        answer
                            .answer(credential, &request, user, &mut out)
                            .map_err(NodeLoginError::Failed)?;
                        if !out.is_empty() {
                            messages.get_mut().write_all(&out).await.map_err(failed)?;
                            out.clear();
                        }
                    }
                    backend::ERROR_RESPONSE => {
                        return Err(NodeLoginError::Refused(bytes::Bytes::copy_from_slice(
                            frame.raw(),
                        )));
                    }
                    backend::NOTICE_RESPONSE => {}
                    backend::READY_FOR_QUERY => {
                        greeting.extend_from_slice(frame.raw());
                        break;
                    }
                    _ => greeting.extend_from_slice(frame.raw()),
                }
            }
            if messages.has_buffered() {
                return Err(NodeLoginError::Failed(format!(
                    "node {addr} sent more than its greeting before a query"
                )));
            }
        }
        Ok((stream, greeting.freeze()))
    };
    tokio::time::timeout(timeout, login)
        .await
        .unwrap_or_else(|_| {
            Err(NodeLoginError::Failed(format!(
                "node {addr} did not finish the login within {timeout:?}"
            )))
        })
}

/// `md5` + md5(stored hash ‖ salt): PostgreSQL's MD5 answer, from the hash
/// it stores (`md5` + md5(password ‖ user)) rather than the password.
fn md5_answer(stored_hex: &str, salt: [u8; 4]) -> String {
    let mut md5 = Md5::new();
    md5.update(stored_hex.as_bytes());
    md5.update(salt);
    let digest = md5.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("md5");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A user's secret as the warehouse stores it.
#[derive(Clone)]
enum Stored {
    Scram(Verifier),
    /// The hex after `md5`.
    Md5(String),
    /// No such user, no password, or one sluice cannot check.
    Unknown,
}

/// Entries used for a while (`[auth] cache`), and a bound on how many:
/// a flood of distinct keys (user names, startup packets) starts the map
/// over rather than grow it.
struct Expiring<K, V> {
    map: DashMap<K, (Instant, V)>,
}

impl<K: Eq + std::hash::Hash, V: Clone> Default for Expiring<K, V> {
    fn default() -> Self {
        Expiring {
            map: DashMap::new(),
        }
    }
}

impl<K: Eq + std::hash::Hash, V: Clone> Expiring<K, V> {
    const MAX: usize = 10_000;

    fn get<Q>(&self, key: &Q, ttl: std::time::Duration) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        let hit = self.map.get(key)?;
        (hit.0.elapsed() < ttl).then(|| hit.1.clone())
    }

    fn insert(&self, key: K, value: V) {
        if self.map.len() >= Self::MAX {
            self.map.clear();
        }
        self.map.insert(key, (Instant::now(), value));
    }
}

/// Secrets read by `auth_query`, kept for `[auth] cache`.
#[derive(Default)]
pub struct Secrets {
    cached: Expiring<String, Stored>,
}

impl Secrets {
    async fn lookup(
        &self,
        user: &str,
        generation: &Generation,
        nodes: &NodeSet,
    ) -> Result<Stored, String> {
        if let Some(stored) = self.cached.get(user, generation.config.auth.cache) {
            return Ok(stored);
        }
        let mut why = String::from("no warehouse node is healthy");
        for node in nodes.candidates() {
            match read_secret(node.addr(), user, generation).await {
                Ok(stored) => {
                    self.cached.insert(user.to_string(), stored.clone());
                    return Ok(stored);
                }
                Err(e) => why = format!("node {}: {e}", node.addr()),
            }
        }
        Err(why)
    }
}

async fn read_secret(addr: &str, user: &str, generation: &Generation) -> Result<Stored, String> {
    let config: &Config = &generation.config;
    let warehouse = &config.warehouse;
    let describe = |e: tokio_postgres::Error| crate::health::describe_pg_error(&e);
    let client = generation
        .node_connector
        .service_client(
            addr,
            warehouse,
            "sluice auth_query",
            warehouse.connect_timeout,
        )
        .await
        .map_err(describe)?;
    let row = client
        .query_opt(config.auth.auth_query.as_str(), &[&user])
        .await
        .map_err(describe)?;
    let secret: Option<String> = match &row {
        Some(row) if row.len() >= 2 => row.try_get(1).map_err(describe)?,
        Some(_) => return Err("auth_query must return two columns: name and secret".into()),
        None => None,
    };
    Ok(match secret {
        Some(s) if Verifier::is_verifier(&s) => match Verifier::parse(&s) {
            Ok(v) => Stored::Scram(v),
            Err(why) => {
                tracing::warn!(
                    user,
                    "auth_query's secret {why}; the user cannot log in through sluice"
                );
                Stored::Unknown
            }
        },
        Some(s) if s.len() == 35 && s.starts_with("md5") => Stored::Md5(s[3..].to_string()),
        _ => Stored::Unknown,
    })
}

/// What nodes answered a login, by startup packet: a session sluice can
/// log in again for starts without a node when its packet is here (its
/// first query that needs a node takes one). Entries older than
/// `[auth] cache` are not used, so a changed role setting shows soon.
#[derive(Default)]
pub struct Greetings {
    /// Greeting, and whether the node asked for a password.
    cached: Expiring<bytes::Bytes, (bytes::Bytes, bool)>,
}

impl Greetings {
    /// `greeting`: AuthenticationOk up to ReadyForQuery, as kept
    /// connections store it; `proven`: the node asked for a password.
    pub fn remember(&self, packet: &[u8], greeting: bytes::Bytes, proven: bool) {
        self.cached
            .insert(bytes::Bytes::copy_from_slice(packet), (greeting, proven));
    }

    /// The greeting for `packet`, if one was seen within `ttl`; one the
    /// node gave after a password only to a client sluice authenticated.
    pub fn recall(
        &self,
        packet: &[u8],
        authenticated: bool,
        ttl: std::time::Duration,
    ) -> Option<bytes::Bytes> {
        let (greeting, proven) = self.cached.get(packet, ttl)?;
        (authenticated || !proven).then_some(greeting)
    }
}

/// How a client's login through sluice ended.
pub enum ClientLogin {
    /// The client proved who it is (or gave its password, to be checked by
    /// the first node login). Nothing is sent yet after the exchange:
    /// AuthenticationOk comes with the node's greeting.
    Proved(Credential),
    /// The client was told why not and the session ends.
    Refused,
}

/// Authenticates a client as `[auth] mode` says; `client` is between the
/// startup packet and the first authentication request. A client refused
/// has been told why.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    user: &str,
    generation: &Generation,
    nodes: &NodeSet,
    secrets: &Arc<Secrets>,
) -> ClientLogin {
    let mut messages = MessageStream::new(client, Scanner::new(64 << 10, |_| Treatment::Inspect));
    let proved = match prove(&mut messages, user, generation, nodes, secrets).await {
        Ok(credential) => return ClientLogin::Proved(credential),
        Err(failure) => failure,
    };
    let error = match proved {
        LoginFailure::Gone => return ClientLogin::Refused,
        LoginFailure::Protocol(error) => error,
        LoginFailure::Mechanism(_) | LoginFailure::Refused => ErrorFields::fatal(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        ),
    };
    send_fatal(messages.get_mut(), &error).await;
    ClientLogin::Refused
}

/// The exchange of [`authenticate`], up to what the client proved.
async fn prove<S: AsyncRead + AsyncWrite + Unpin>(
    messages: &mut MessageStream<&mut S>,
    user: &str,
    generation: &Generation,
    nodes: &NodeSet,
    secrets: &Arc<Secrets>,
) -> Result<Credential, LoginFailure> {
    let mut out = BytesMut::new();
    match generation.config.auth.mode {
        AuthMode::Passthrough => Ok(Credential::Trusted),
        AuthMode::Cleartext => {
            backend::encode_authentication_request(&mut out, backend::AUTH_CLEARTEXT);
            messages
                .get_mut()
                .write_all(&out)
                .await
                .map_err(|_| LoginFailure::Gone)?;
            let body = password_message(messages).await?;
            let password = body.strip_suffix(b"\0").unwrap_or(&body);
            Ok(Credential::Password(
                String::from_utf8_lossy(password).into_owned(),
            ))
        }
        AuthMode::AuthQuery => match secrets.lookup(user, generation, nodes).await {
            Err(why) => {
                tracing::warn!(user, why, "auth_query failed; the client is refused");
                Err(LoginFailure::Protocol(
                    ErrorFields::fatal(
                        sqlstate::CONNECTION_FAILURE,
                        "sluice could not read the user's password from the warehouse (auth_query failed)",
                    )
                    .with_detail(why),
                ))
            }
            Ok(Stored::Md5(hash)) => {
                let salt: [u8; 4] = rand::random();
                backend::encode_authentication_md5(&mut out, salt);
                messages
                    .get_mut()
                    .write_all(&out)
                    .await
                    .map_err(|_| LoginFailure::Gone)?;
                let body = password_message(messages).await?;
                let expected = md5_answer(&hash, salt);
                let given = body.strip_suffix(b"\0").unwrap_or(&body);
                let diff = given.len() ^ expected.len()
                    | given
                        .iter()
                        .zip(expected.as_bytes())
                        .fold(0, |acc, (a, b)| acc | usize::from(a ^ b));
                if diff == 0 {
                    Ok(Credential::Md5(hash))
                } else {
                    Err(LoginFailure::Refused)
                }
            }
            // An unknown user goes through the same exchange and fails at
            // the same step as a wrong password.
            Ok(Stored::Scram(verifier)) => scram_login(messages, verifier, user)
                .await
                .map(Credential::Scram),
            Ok(Stored::Unknown) => scram_login(messages, Verifier::impossible(), user)
                .await
                .map(Credential::Scram),
        },
    }
}

/// Why a client's login with sluice did not prove it.
pub enum LoginFailure {
    /// The client left, or its socket failed.
    Gone,
    /// The client broke the protocol: tell it this, then close.
    Protocol(ErrorFields),
    /// The client chose another SASL mechanism than the one offered.
    Mechanism(String),
    /// A wrong password or an unknown user (the reason is logged, never
    /// the secret): the client is to be told 28P01.
    Refused,
}

/// The server's side of a SCRAM-SHA-256 login, from AuthenticationSASL to
/// AuthenticationSASLFinal, against `verifier` (for the client sessions of
/// `[auth] mode = "auth_query"` and the admin console). Returns what the
/// client proved.
pub async fn scram_login<S: AsyncRead + AsyncWrite + Unpin>(
    messages: &mut MessageStream<S>,
    verifier: Verifier,
    user: &str,
) -> Result<Proven, LoginFailure> {
    let gone = |_| LoginFailure::Gone;
    let refused = |e: scram::ScramError| {
        tracing::info!(user, reason = %e, "SCRAM exchange with a client failed");
        LoginFailure::Refused
    };
    let mut out = BytesMut::new();
    backend::encode_authentication_sasl(&mut out, &[scram::MECHANISM]);
    messages.get_mut().write_all(&out).await.map_err(gone)?;
    out.clear();
    let body = password_message(messages).await?;
    let (mechanism, data) = frontend::sasl_initial_response(&body).map_err(|e| {
        LoginFailure::Protocol(ErrorFields::fatal(
            e.sqlstate(),
            format!("invalid message from client: {e}"),
        ))
    })?;
    if mechanism != scram::MECHANISM.as_bytes() {
        return Err(LoginFailure::Mechanism(
            String::from_utf8_lossy(mechanism).into_owned(),
        ));
    }
    let (exchange, server_first) = Exchange::start(verifier, data).map_err(refused)?;
    backend::encode_authentication_sasl_continue(&mut out, server_first.as_bytes());
    messages.get_mut().write_all(&out).await.map_err(gone)?;
    out.clear();
    let body = password_message(messages).await?;
    let (server_final, proven) = exchange.finish(&body).map_err(refused)?;
    backend::encode_authentication_sasl_final(&mut out, server_final.as_bytes());
    messages.get_mut().write_all(&out).await.map_err(gone)?;
    Ok(proven)
}

/// The body of the client's next PasswordMessage.
async fn password_message<S: AsyncRead + Unpin>(
    messages: &mut MessageStream<S>,
) -> Result<Vec<u8>, LoginFailure> {
    match messages.frame().await {
        Ok(Some(frame)) if frame.tag() == frontend::PASSWORD => Ok(frame.body().to_vec()),
        Ok(Some(frame)) => Err(LoginFailure::Protocol(ErrorFields::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "expected a password message during login, got message type {:?}",
                char::from(frame.tag())
            ),
        ))),
        Ok(None) | Err(ReadError::Io(_)) => Err(LoginFailure::Gone),
        Err(ReadError::Protocol(e)) => Err(LoginFailure::Protocol(ErrorFields::fatal(
            e.sqlstate(),
            format!("invalid message from client: {e}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_answers_from_the_stored_hash_as_a_client_would_from_the_password() {
        let stored = postgres_protocol::password::md5(b"pw", "alice");
        let salt = [1, 2, 3, 4];
        assert_eq!(
            md5_answer(&stored[3..], salt),
            postgres_protocol::authentication::md5_hash(b"alice", b"pw", salt)
        );
    }

    #[test]
    fn cached_entries_expire_and_a_flood_starts_the_cache_over() {
        let cache: Expiring<String, u32> = Expiring::default();
        cache.insert("alice".into(), 1);
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(cache.get("alice", minute), Some(1));
        assert_eq!(cache.get("alice", std::time::Duration::ZERO), None);
        for i in 0..Expiring::<String, u32>::MAX {
            cache.insert(format!("user{i}"), 0);
        }
        assert_eq!(cache.get("alice", minute), None, "cleared at the bound");
        assert!(cache.map.len() <= Expiring::<String, u32>::MAX);

        let greetings = Greetings::default();
        greetings.remember(b"packet", bytes::Bytes::from_static(b"R"), true);
        assert_eq!(
            greetings.recall(b"packet", false, minute),
            None,
            "proven greetings need proof"
        );
        assert!(greetings.recall(b"packet", true, minute).is_some());
    }

    #[test]
    fn credentials_never_print() {
        for c in [
            Credential::Md5("abc".into()),
            Credential::Password("hunter2".into()),
        ] {
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("abc") && !shown.contains("hunter2"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_credential_refuses_what_it_cannot_answer() {
        let mut state = NodeAnswer::default();
        let mut out = BytesMut::new();
        let why = state
            .answer(
                &Credential::Md5("00".into()),
                &Request::Cleartext,
                "u",
                &mut out,
            )
            .unwrap_err();
        assert!(why.contains("clear-text password"), "{why}");
        state
            .answer(
                &Credential::Md5("00".into()),
                &Request::Md5 { salt: [0; 4] },
                "u",
                &mut out,
            )
            .unwrap();
        assert!(out.starts_with(b"p") && out[5..].starts_with(b"md5"));
    }
}

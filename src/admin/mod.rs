//! The admin console: a client that connects to the virtual database
//! `sluice` on the main listener talks to sluice itself (PgBouncer's
//! convention), with any PostgreSQL client.
//!
//! * [`scram`]: SCRAM-SHA-256 against `[[admin.users]]`.
//! * [`parser`]: the command language.
//! * [`commands`]: what each command does and the rows it answers.
//!
//! The console speaks the simple Query protocol only; every answer is an
//! ordinary result set of text columns, so psql prints tables. It is not
//! counted against `server.max_client_connections` (an operator must be able
//! to get in when sluice is full) and it keeps working while sluice drains.

pub mod commands;
pub mod parser;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::auth::LoginFailure;
use crate::backend::NodeSet;
use crate::config::{Admin, AdminAuth};
use crate::generation::{CatalogCopy, Generation, Generations};
use crate::metrics::{Metrics, Refusal};
use crate::net::{MessageStream, ReadError, Stream};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Scanner, Treatment};
use crate::protocol::frontend;
use crate::protocol::sqlstate;
use crate::protocol::startup::StartupMessage;
use crate::registry::SessionRegistry;
use crate::scram::{MECHANISM, Verifier};
use crate::stats::QueryStats;
use commands::Reply;

/// The database name that reaches the console instead of a node.
pub const DATABASE: &str = "sluice";

/// Largest message the console accepts: commands are short.
const MAX_MESSAGE: usize = 1 << 20;

/// The console's side of one connection.
struct Conn {
    stream: MessageStream<Stream>,
}

enum ConnError {
    /// The client left, or the socket failed: nothing more to say.
    Gone,
    /// The client broke the protocol: tell it and close.
    Protocol(ErrorFields),
}

impl Conn {
    /// Reads one whole message. Cancel safe: bytes read stay in `buf`.
    async fn read(&mut self) -> Result<Frame, ConnError> {
        match self.stream.frame().await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) | Err(ReadError::Io(_)) => Err(ConnError::Gone),
            Err(ReadError::Protocol(e)) => Err(ConnError::Protocol(ErrorFields::fatal(
                e.sqlstate(),
                format!("invalid message from client: {e}"),
            ))),
        }
    }

    async fn write(&mut self, out: &mut BytesMut) -> Result<(), ConnError> {
        let r = self.stream.get_mut().write_all(out).await;
        out.clear();
        r.map_err(|_| ConnError::Gone)
    }

    async fn fatal(&mut self, error: &ErrorFields) {
        crate::net::send_fatal(self.stream.get_mut(), error).await;
    }
}

/// What the console reads and acts on: its view of the running sluice.
pub struct Console {
    pub nodes: Arc<NodeSet>,
    /// The open sessions (`SHOW CLIENTS`, `KILL CLIENT`).
    pub registry: Arc<SessionRegistry>,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<QueryStats>,
    pub alerts: Arc<Alerts>,
    pub catalog_copy: CatalogCopy,
    pub generations: Generations,
    /// Ends the console's sessions with everyone else's.
    pub kill: CancellationToken,
    /// Reloads the configuration file: the number of nodes, or every
    /// problem found.
    pub reload: Box<dyn Fn() -> Result<usize, String> + Send + Sync>,
}

impl Console {
    /// The configuration generation in effect.
    pub fn generation(&self) -> Arc<Generation> {
        self.generations.current()
    }

    pub fn try_reload_from_file(&self) -> Result<usize, String> {
        (self.reload)()
    }
}

/// Serves one admin connection to its end.
pub async fn serve(
    console: Arc<Console>,
    admin: Admin,
    stream: Stream,
    startup: StartupMessage,
    peer: SocketAddr,
) {
    let mut conn = Conn {
        stream: MessageStream::new(stream, Scanner::new(MAX_MESSAGE, |_| Treatment::Inspect)),
    };
    let user = startup.user().to_string();
    let login = tokio::select! {
        r = login(&mut conn, &admin, &user) => r,
        _ = console.kill.cancelled() => return,
    };
    match login {
        Ok(()) => {}
        Err(ConnError::Gone) => return,
        Err(ConnError::Protocol(error)) => {
            console.metrics.client_refused(Refusal::AdminAuth);
            tracing::warn!(%peer, user, code = error.code, reason = error.message, "admin console login refused");
            conn.fatal(&error).await;
            return;
        }
    }
    tracing::info!(%peer, user, "admin console session started");
    let mut out = BytesMut::new();
    for (name, value) in [
        (
            "server_version",
            concat!("15.0 (sluice ", env!("CARGO_PKG_VERSION"), ")"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", startup.application()),
    ] {
        backend::encode_parameter_status(&mut out, name, value);
    }
    backend::encode_ready_for_query(&mut out, TransactionStatus::Idle);
    if conn.write(&mut out).await.is_err() {
        return;
    }
    let end = tokio::select! {
        e = commands_loop(&console, &mut conn) => e,
        _ = console.kill.cancelled() => Err(ConnError::Protocol(ErrorFields::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "sluice is shutting down and closed this session",
        ))),
    };
    if let Err(ConnError::Protocol(error)) = end {
        conn.fatal(&error).await;
    }
    tracing::info!(%peer, user, "admin console session ended");
}

/// Answers commands until the client leaves. `Ok` on Terminate.
async fn commands_loop(console: &Console, conn: &mut Conn) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    // After an extended-protocol message, everything up to Sync is skipped,
    // as PostgreSQL does after an error.
    let mut skipping = false;
    loop {
        let frame = conn.read().await?;
        match frame.tag() {
            frontend::QUERY => {
                let text = match frontend::query_text(frame.body()) {
                    Ok(t) => String::from_utf8_lossy(t).into_owned(),
                    Err(e) => {
                        return Err(ConnError::Protocol(ErrorFields::fatal(
                            e.sqlstate(),
                            format!("invalid message from client: {e}"),
                        )));
                    }
                };
                answer(console, &text, &mut out);
                backend::encode_ready_for_query(&mut out, TransactionStatus::Idle);
                skipping = false;
            }
            frontend::TERMINATE => return Ok(()),
            frontend::SYNC => {
                skipping = false;
                backend::encode_ready_for_query(&mut out, TransactionStatus::Idle);
            }
            _ if skipping => {}
            _ => {
                skipping = true;
                ErrorFields::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the sluice admin console answers only simple queries (the extended query protocol is not supported)",
                )
                .with_hint("With psql this just works; with a driver, use its simple-query call (e.g. tokio-postgres simple_query, JDBC preferQueryMode=simple).")
                .encode(&mut out);
            }
        }
        if !out.is_empty() {
            conn.write(&mut out).await?;
        }
    }
}

/// Runs every command of one Query and encodes the answers; stops at the
/// first error, as PostgreSQL does with a multi-statement query.
fn answer(console: &Console, text: &str, out: &mut BytesMut) {
    let commands = parser::parse_all(text);
    if commands.is_empty() {
        backend::encode_empty_query_response(out);
        return;
    }
    for command in commands {
        console.metrics.admin_command();
        let reply = match command {
            Ok(c) => {
                tracing::info!(command = ?c, "admin console command");
                commands::execute(console, c)
            }
            Err(e) => Err(ErrorFields::error(sqlstate::SYNTAX_ERROR, e.0)),
        };
        match reply {
            Ok(reply) => encode_reply(&reply, out),
            Err(error) => {
                error.encode(out);
                return;
            }
        }
    }
}

fn encode_reply(reply: &Reply, out: &mut BytesMut) {
    for notice in &reply.notices {
        ErrorFields {
            severity: "NOTICE",
            code: sqlstate::SUCCESSFUL_COMPLETION.to_string(),
            message: notice.clone(),
            ..ErrorFields::default()
        }
        .encode_notice(out);
    }
    if let Some(columns) = &reply.columns {
        backend::encode_row_description(out, columns);
        for row in &reply.rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            backend::encode_data_row(out, &values);
        }
    }
    backend::encode_command_complete(out, &reply.tag);
}

/// Authenticates the client as configured in `[admin]`.
async fn login(conn: &mut Conn, admin: &Admin, user: &str) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    if admin.auth == AdminAuth::Trust {
        backend::encode_authentication_ok(&mut out);
        return conn.write(&mut out).await;
    }
    if admin.users.is_empty() {
        return Err(ConnError::Protocol(
            ErrorFields::fatal(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "the sluice admin console has no users",
            )
            .with_hint(
                "Add [[admin.users]] with name and password to the configuration and reload.",
            ),
        ));
    }
    let failed = || {
        ConnError::Protocol(ErrorFields::fatal(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        ))
    };
    // An unknown user goes through the same exchange and fails at the same
    // point as a wrong password.
    let verifier = admin
        .users
        .iter()
        .find(|u| u.name == user)
        .map(|u| u.verifier.clone())
        .unwrap_or_else(Verifier::impossible);
    match crate::auth::scram_login(&mut conn.stream, verifier, user).await {
        Ok(_) => {
            backend::encode_authentication_ok(&mut out);
            conn.write(&mut out).await
        }
        Err(LoginFailure::Gone) => Err(ConnError::Gone),
        Err(LoginFailure::Protocol(error)) => Err(ConnError::Protocol(error)),
        Err(LoginFailure::Mechanism(mechanism)) => Err(ConnError::Protocol(ErrorFields::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("the admin console offers only {MECHANISM}, not {mechanism}"),
        ))),
        Err(LoginFailure::Refused) => Err(failed()),
    }
}

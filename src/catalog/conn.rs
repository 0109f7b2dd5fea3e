//! One raw protocol connection: to the catalog copy, or (for the Vertica
//! catalog sync) to a warehouse node, PostgreSQL or Vertica.

use std::collections::HashSet;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::CatalogError;
use crate::config::Catalog;
use crate::net::{MessageStream, ReadError};
use crate::protocol::backend;
use crate::protocol::frame::{Frame, Item, Scanner, Treatment};
use crate::protocol::login;
use crate::protocol::startup::StartupMessage;

/// Answers from the copy are inspected whole, except rows, which stream.
fn treatment(tag: u8) -> Treatment {
    match tag {
        b'D' => Treatment::Relay,
        _ => Treatment::Inspect,
    }
}

/// Every message whole, rows included: for answers that are converted row
/// by row (a Vertica client's, the Vertica sync's).
fn whole_rows(_: u8) -> Treatment {
    Treatment::Inspect
}

/// Where and as whom a raw connection logs in.
pub struct Login<'a> {
    pub addr: String,
    pub user: &'a str,
    pub password: &'a str,
    pub database: &'a str,
    /// The server speaks Vertica's protocol: Vertica's startup packet, and
    /// Vertica's authentication codes (10–12 are not SASL there).
    pub vertica: bool,
}

pub struct CatalogConn {
    stream: MessageStream<TcpStream>,
    pub database: String,
    /// The role set by the last `SET ROLE`, if any.
    pub role: Option<String>,
    /// The search-path statement last applied (`None`: the default path).
    pub search_path: Option<String>,
    /// Server-side names of statements prepared on this connection.
    pub prepared: HashSet<String>,
}

impl CatalogConn {
    /// Connects and logs in to `database` as the configured superuser.
    pub async fn connect(settings: &Catalog, database: &str) -> Result<CatalogConn, CatalogError> {
        CatalogConn::open(&Login {
            addr: format!("{}:{}", settings.host, settings.port),
            user: &settings.user,
            password: settings.password.expose(),
            database,
            vertica: false,
        })
        .await
    }

    /// Connects and logs in as `login` says.
    pub async fn open(login: &Login<'_>) -> Result<CatalogConn, CatalogError> {
        let addr = login.addr.clone();
        let database = login.database;
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| CatalogError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut conn = CatalogConn {
            stream: MessageStream::new(stream, Scanner::new(usize::MAX, treatment)),
            database: database.to_string(),
            role: None,
            search_path: None,
            prepared: HashSet::new(),
        };
        let startup = if login.vertica {
            crate::protocol::vertica::encode_vertica_startup(login.user, database, "sluice catalog")
        } else {
            StartupMessage::encode(&[
                ("user", login.user),
                ("database", database),
                ("application_name", "sluice catalog"),
            ])
        };
        conn.stream.get_mut().write_all(&startup).await?;
        conn.authenticate(login).await?;
        Ok(conn)
    }

    /// Whether rows come out whole ([`Item::Inspect`]) or as relayable runs.
    /// Takes effect only between answers, where the connection is clean.
    pub fn set_whole_rows(&mut self, whole: bool) {
        if self.is_clean() {
            let t: fn(u8) -> Treatment = if whole { whole_rows } else { treatment };
            self.stream.rescan(Scanner::new(usize::MAX, t));
        }
    }

    async fn authenticate(&mut self, login: &Login<'_>) -> Result<(), CatalogError> {
        let mut answerer = login::Answerer::default();
        loop {
            let frame = self.next_frame().await?;
            let body = frame.body();
            match frame.tag() {
                backend::AUTHENTICATION => {
                    let request = login::request(body, login.vertica);
                    let mut out = BytesMut::new();
                    answerer.answer(
                        &request,
                        login.user.as_bytes(),
                        login.password.as_bytes(),
                        &mut out,
                    )?;
                    if !out.is_empty() {
                        self.stream.get_mut().write_all(&out).await?;
                    }
                }
                backend::ERROR_RESPONSE => {
                    let (code, message) = backend::error_summary(body);
                    return Err(CatalogError::Refused { code, message });
                }
                backend::READY_FOR_QUERY => return Ok(()),
                // ParameterStatus, BackendKeyData, notices: not needed here.
                _ => {}
            }
        }
    }

    /// The next whole message (rows included, so only for small answers).
    pub async fn next_frame(&mut self) -> Result<Frame, CatalogError> {
        loop {
            match self.next_item().await? {
                Item::Inspect(frame) => return Ok(frame),
                Item::Relay(_) => continue,
            }
        }
    }

    /// The next item of the answer stream: rows as relayable runs, the rest whole.
    pub async fn next_item(&mut self) -> Result<Item, CatalogError> {
        match self.stream.next().await {
            Ok(Some(item)) => Ok(item),
            Ok(None) => Err(CatalogError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the catalog copy closed the connection",
            ))),
            Err(ReadError::Protocol(e)) => Err(e.into()),
            Err(ReadError::Io(e)) => Err(e.into()),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), CatalogError> {
        self.stream.get_mut().write_all(bytes).await?;
        Ok(())
    }

    /// False when the server closed the connection or sent something
    /// unasked (a FATAL before closing, as after pg_terminate_backend) while
    /// it sat idle in the pool.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.get_ref().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// True when nothing of a message is half read.
    pub fn at_boundary(&self) -> bool {
        self.stream.at_boundary()
    }

    /// True when the connection is between answers and can be reused.
    pub fn is_clean(&self) -> bool {
        !self.stream.has_buffered() && self.stream.at_boundary()
    }
}

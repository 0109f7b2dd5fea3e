//! One raw protocol connection: to the catalog copy, or (for the Vertica
//! catalog sync) to a warehouse node, PostgreSQL or Vertica.

use std::collections::HashSet;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::CatalogError;
use crate::config::Catalog;
use crate::protocol::backend;
use crate::protocol::frame::{Frame, Item, Scanner, Treatment};
use crate::protocol::frontend;
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
    stream: TcpStream,
    buf: BytesMut,
    scanner: Scanner,
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
            stream,
            buf: BytesMut::with_capacity(8192),
            scanner: Scanner::new(usize::MAX, treatment),
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
        conn.stream.write_all(&startup).await?;
        conn.authenticate(login).await?;
        Ok(conn)
    }

    /// Whether rows come out whole ([`Item::Inspect`]) or as relayable runs.
    /// Takes effect only between answers, where the connection is clean.
    pub fn set_whole_rows(&mut self, whole: bool) {
        if self.is_clean() {
            let t: fn(u8) -> Treatment = if whole { whole_rows } else { treatment };
            self.scanner = Scanner::new(usize::MAX, t);
        }
    }

    async fn authenticate(&mut self, login: &Login<'_>) -> Result<(), CatalogError> {
        let password = login.password.as_bytes();
        let user = login.user.as_bytes();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.next_frame().await?;
            let body = frame.body();
            match frame.tag() {
                backend::AUTHENTICATION => {
                    let code = i32::from_be_bytes(
                        body.get(..4)
                            .and_then(|b| b.try_into().ok())
                            .unwrap_or([0xff; 4]),
                    );
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        3 => frontend::encode_password(&mut out, password),
                        // Vertica: password grace period; the login goes on.
                        11 if login.vertica => continue,
                        65536 | 66048 if login.vertica => {
                            let salt = body.get(4..8).unwrap_or(&[]);
                            let user_salt = body.get(12..28).unwrap_or(&[]);
                            let hash = crate::protocol::vertica::sha512_password(
                                password, user_salt, salt,
                            );
                            frontend::encode_password(&mut out, hash.as_bytes());
                        }
                        5 | 65541 if code == 5 || login.vertica => {
                            let salt: [u8; 4] = body
                                .get(4..8)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or([0; 4]);
                            let hash =
                                postgres_protocol::authentication::md5_hash(user, password, salt);
                            frontend::encode_password(&mut out, hash.as_bytes());
                        }
                        10 if !login.vertica => {
                            let s = ScramSha256::new(password, ChannelBinding::unsupported());
                            frontend::encode_sasl_initial_response(
                                &mut out,
                                SCRAM_SHA_256,
                                s.message(),
                            );
                            scram = Some(s);
                        }
                        11 | 12 if !login.vertica => {
                            let s = scram.as_mut().ok_or(CatalogError::UnsupportedAuth(code))?;
                            if code == 11 {
                                s.update(&body[4..]).map_err(CatalogError::Scram)?;
                                frontend::encode_sasl_response(&mut out, s.message());
                            } else {
                                s.finish(&body[4..]).map_err(CatalogError::Scram)?;
                                continue;
                            }
                        }
                        other => return Err(CatalogError::UnsupportedAuth(other)),
                    }
                    self.stream.write_all(&out).await?;
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
        loop {
            if let Some(item) = self.scanner.next(&mut self.buf)? {
                return Ok(item);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(CatalogError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the catalog copy closed the connection",
                )));
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), CatalogError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// False when the server closed the connection or sent something
    /// unasked (a FATAL before closing, as after pg_terminate_backend) while
    /// it sat idle in the pool.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// True when the connection is between answers and can be reused.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty() && self.scanner.at_boundary()
    }
}

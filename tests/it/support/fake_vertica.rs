//! A scripted Vertica node, for the byte-for-byte relay (`warehouse.dialect
//! = "vertica"`): no Vertica server exists here, so this plays one from the
//! protocol description (shared/vertica-protocol.md §1, §3.4, §4).
//!
//! A Vertica startup (fixed version 3.5, binary `protocol_version`) gets the
//! greeting of [`greeting`]; then each Query is answered by its script:
//! `COPY ... FROM LOCAL` runs the COPY LOCAL file exchange ([`copy_local`]),
//! `SELECT mars` answers with a MARS message in the middle of its result
//! ([`mars`]), `SELECT sleep` waits for a CancelRequest with the node's own
//! key and then fails with 57014 ([`cancelled`]). Everything the node
//! receives is recorded whole, message by message, so a test can compare it
//! with what its client sent. A PostgreSQL startup (sluice's health check)
//! is served by [`super::fake_node`]'s script.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const CANCEL_CODE: i32 = 80877102;
const POSTGRES_3_0: i32 = 3 << 16;
/// The fixed version every Vertica driver sends (§1.2).
pub const VERTICA_3_5: i32 = 0x0003_0005;

/// What the node has seen.
#[derive(Default)]
pub struct Seen {
    /// Each Vertica session's messages, the startup packet first, as received.
    pub received: Vec<Vec<u8>>,
    /// CancelRequests: (process id, secret key).
    pub cancels: Vec<(i32, i32)>,
}

pub struct FakeVertica {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The BackendKeyData the node gives its session (process id, key).
pub const NODE_KEY: (i32, i32) = (4242, 0x5eed_0001);

impl FakeVertica {
    pub fn start() -> FakeVertica {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let cancelled = Arc::new(Notify::new());
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (seen, cancelled) = (shared.clone(), cancelled.clone());
                        tokio::spawn(async move {
                            let _ = serve(tcp, seen, cancelled).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        FakeVertica {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// A copy of what the node has seen so far.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().received.clone()
    }

    pub fn cancels(&self) -> Vec<(i32, i32)> {
        self.seen.lock().unwrap().cancels.clone()
    }
}

impl Drop for FakeVertica {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// The node's answer to a Vertica startup: AuthenticationOk, ParameterStatus
/// (protocol_version as a decimal string, §1.2), BackendKeyData, ReadyForQuery.
pub fn greeting() -> Vec<Vec<u8>> {
    let mut out = vec![message(b'R', &0i32.to_be_bytes())];
    for (k, v) in [
        ("protocol_version", "196624"),
        ("server_version", "v24.1.0-0 (sluice fake Vertica)"),
        ("auto_commit", "off"),
        ("timezone", "UTC"),
        ("standard_conforming_strings", "on"),
    ] {
        let mut body = Vec::new();
        cstr(&mut body, k);
        cstr(&mut body, v);
        out.push(message(b'S', &body));
    }
    let mut key = NODE_KEY.0.to_be_bytes().to_vec();
    key.extend_from_slice(&NODE_KEY.1.to_be_bytes());
    out.push(message(b'K', &key));
    out.push(message(b'Z', b"I"));
    out
}

/// A Vertica RowDescription (§3.2) of one INTEGER column.
fn row_description(name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // type pool
    cstr(&mut b, name);
    b.extend_from_slice(&0i64.to_be_bytes()); // table OID
    b.extend_from_slice(&0i16.to_be_bytes()); // attnum
    b.push(0); // not a pool type
    b.extend_from_slice(&6i32.to_be_bytes()); // INTEGER
    b.extend_from_slice(&8i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes()); // not nullable
    b.extend_from_slice(&0i16.to_be_bytes()); // not identity
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes()); // text
    message(b'T', &b)
}

fn data_row(value: &str) -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    b.extend_from_slice(&(value.len() as i32).to_be_bytes());
    b.extend_from_slice(value.as_bytes());
    message(b'D', &b)
}

fn complete(tag: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, tag);
    message(b'C', &b)
}

/// The file a COPY LOCAL names.
pub const COPY_FILE: &str = "f.csv";

/// The COPY LOCAL exchange (§4), in the node's three turns:
/// 0. after the Query: the rows-loaded RowDescription and VerifyFiles;
/// 1. after the client's VerifiedFiles: LoadFile;
/// 2. after the client's EndOfBatchRequest: WriteFile with the rejected
///    row numbers (little-endian Int64, filename "" for RETURNREJECTED),
///    EndOfBatchResponse, CopyDoneResponse, the rows loaded,
///    CommandComplete, ReadyForQuery.
pub fn copy_local(turn: usize) -> Vec<Vec<u8>> {
    match turn {
        0 => {
            let mut verify = 1i16.to_be_bytes().to_vec();
            cstr(&mut verify, COPY_FILE);
            cstr(&mut verify, ""); // rejected-data file
            cstr(&mut verify, ""); // exceptions file
            vec![row_description("Rows Loaded"), message(b'F', &verify)]
        }
        1 => {
            let mut load = Vec::new();
            cstr(&mut load, COPY_FILE);
            vec![message(b'H', &load)]
        }
        _ => {
            let mut write = Vec::new();
            cstr(&mut write, "");
            write.extend_from_slice(&16i32.to_be_bytes());
            write.extend_from_slice(&2i64.to_le_bytes());
            write.extend_from_slice(&5i64.to_le_bytes());
            vec![
                message(b'O', &write),
                message(b'J', &[]),
                message(b'c', &[]),
                data_row("3"),
                complete("COPY"),
                message(b'Z', b"I"),
            ]
        }
    }
}

/// A result with a MarsResponse (`_`, §3.4) between its rows: a message
/// type no PostgreSQL client knows.
pub fn mars() -> Vec<Vec<u8>> {
    let mut m = 7i32.to_be_bytes().to_vec();
    m.extend_from_slice(&2i32.to_be_bytes()); // fetched
    m.extend_from_slice(&1i64.to_be_bytes()); // rows remaining
    vec![
        row_description("n"),
        data_row("1"),
        message(b'_', &m),
        data_row("2"),
        complete("SELECT"),
        message(b'Z', b"I"),
    ]
}

/// The answer to `SELECT sleep` once a CancelRequest with [`NODE_KEY`] came.
pub fn cancelled() -> Vec<Vec<u8>> {
    let mut e = Vec::new();
    for (code, value) in [
        (b'S', "ERROR"),
        (b'C', "57014"),
        (b'M', "Execution canceled by operator"),
        (b'V', "4924"),
    ] {
        e.push(code);
        cstr(&mut e, value);
    }
    e.push(0);
    vec![message(b'E', &e), message(b'Z', b"I")]
}

async fn send(tcp: &mut TcpStream, messages: Vec<Vec<u8>>) -> std::io::Result<()> {
    tcp.write_all(&messages.concat()).await
}

async fn serve(
    mut tcp: TcpStream,
    seen: Arc<Mutex<Seen>>,
    cancel_came: Arc<Notify>,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let len = tcp.read_i32().await?;
    let mut packet = vec![0u8; (len as usize).saturating_sub(4)];
    tcp.read_exact(&mut packet).await?;
    let code = i32::from_be_bytes(packet[..4].try_into().unwrap());
    match code {
        CANCEL_CODE if packet.len() >= 12 => {
            let pid = i32::from_be_bytes(packet[4..8].try_into().unwrap());
            let key = i32::from_be_bytes(packet[8..12].try_into().unwrap());
            seen.lock().unwrap().cancels.push((pid, key));
            if (pid, key) == NODE_KEY {
                // A permit: the cancel may overtake the Query it cancels.
                cancel_came.notify_one();
            }
            return Ok(());
        }
        POSTGRES_3_0 => return super::fake_node::serve_started(tcp, 1).await,
        VERTICA_3_5 => {}
        _ => return Ok(()),
    }
    let mut startup = len.to_be_bytes().to_vec();
    startup.extend_from_slice(&packet);
    seen.lock().unwrap().received.push(startup);
    send(&mut tcp, greeting()).await?;
    let mut copy_turn = None;
    loop {
        let mut head = [0u8; 5];
        tcp.read_exact(&mut head).await?;
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        tcp.read_exact(&mut body).await?;
        let mut raw = head.to_vec();
        raw.extend_from_slice(&body);
        seen.lock().unwrap().received.push(raw);
        match head[0] {
            b'Q' => {
                let sql = String::from_utf8_lossy(&body);
                if sql.contains("FROM LOCAL") {
                    copy_turn = Some(1);
                    send(&mut tcp, copy_local(0)).await?;
                } else if sql.contains("mars") {
                    send(&mut tcp, mars()).await?;
                } else if sql.contains("sleep") {
                    let wait = cancel_came.notified();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), wait).await;
                    send(&mut tcp, cancelled()).await?;
                } else {
                    send(&mut tcp, vec![complete("SELECT 0"), message(b'Z', b"I")]).await?;
                }
            }
            // VerifiedFiles, then EndOfBatchRequest after the file's data.
            b'F' | b'j' if copy_turn.is_some() => {
                let turn = copy_turn.take().unwrap_or(2);
                send(&mut tcp, copy_local(turn)).await?;
                if turn == 1 {
                    copy_turn = Some(2);
                }
            }
            b'X' => return Ok(()),
            _ => {}
        }
    }
}

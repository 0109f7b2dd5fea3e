//! A scripted backend: enough of PostgreSQL's protocol for a login, the
//! health check and simple queries, at a few KiB per connection, so that
//! thousands of sessions do not need thousands of PostgreSQL processes.
//!
//! It answers trust authentication, sends BackendKeyData, and answers every
//! Query with one row (`?column?` = `1`); Terminate or EOF ends a
//! connection. It runs on its own runtime thread until dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FakeNode {
    pub addr: SocketAddr,
    /// Connections now open.
    open: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeNode {
    pub fn start() -> FakeNode {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counter = open.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    let mut next_pid = 1000;
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        next_pid += 1;
                        let counter = counter.clone();
                        tokio::spawn(async move {
                            counter.fetch_add(1, Ordering::Relaxed);
                            let _ = serve(tcp, next_pid).await;
                            counter.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        FakeNode {
            addr,
            open,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

async fn serve(mut tcp: TcpStream, pid: i32) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    // Startup: the length word, then the packet. An SSLRequest is declined.
    loop {
        let len = tcp.read_i32().await? as usize;
        let mut packet = vec![0u8; len.saturating_sub(4)];
        tcp.read_exact(&mut packet).await?;
        if packet.get(..4) == Some(&80877103i32.to_be_bytes()) {
            tcp.write_all(b"N").await?;
            continue;
        }
        if packet.get(..4) == Some(&80877102i32.to_be_bytes()) {
            return Ok(()); // a CancelRequest: nothing runs long here
        }
        break;
    }
    serve_started(tcp, pid).await
}

/// The session after its startup packet: trust login, then one row per Query.
pub(super) async fn serve_started(mut tcp: TcpStream, pid: i32) -> std::io::Result<()> {
    let mut out = Vec::new();
    message(&mut out, b'R', &0i32.to_be_bytes());
    for (k, v) in [
        ("server_version", "15.0 (sluice fake node)"),
        ("client_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
    ] {
        message(&mut out, b'S', format!("{k}\0{v}\0").as_bytes());
    }
    let mut key = pid.to_be_bytes().to_vec();
    key.extend_from_slice(&(pid * 7).to_be_bytes());
    message(&mut out, b'K', &key);
    message(&mut out, b'Z', b"I");
    tcp.write_all(&out).await?;

    let mut answer = Vec::new();
    let mut row = Vec::new();
    row.extend_from_slice(&1i16.to_be_bytes());
    row.extend_from_slice(b"?column?\0");
    row.extend_from_slice(&0i32.to_be_bytes());
    row.extend_from_slice(&0i16.to_be_bytes());
    row.extend_from_slice(&25i32.to_be_bytes()); // text
    row.extend_from_slice(&(-1i16).to_be_bytes());
    row.extend_from_slice(&(-1i32).to_be_bytes());
    row.extend_from_slice(&0i16.to_be_bytes());
    message(&mut answer, b'T', &row);
    message(&mut answer, b'D', &[0, 1, 0, 0, 0, 1, b'1']);
    message(&mut answer, b'C', b"SELECT 1\0");
    message(&mut answer, b'Z', b"I");
    loop {
        let mut head = [0u8; 5];
        tcp.read_exact(&mut head).await?;
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        tcp.read_exact(&mut body).await?;
        match head[0] {
            b'Q' => tcp.write_all(&answer).await?,
            b'X' => return Ok(()),
            _ => {}
        }
    }
}

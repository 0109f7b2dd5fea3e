//! Sessions spoken in raw protocol messages, for tests that need what
//! tokio-postgres keeps private (the BackendKeyData sluice hands out).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A session opened with raw protocol messages, so that the test sees the
/// BackendKeyData sluice hands out (tokio-postgres keeps it private).
pub struct RawSession {
    pub tcp: TcpStream,
    pub process_id: i32,
    pub secret: Vec<u8>,
}

impl RawSession {
    pub fn open(port: u16) -> RawSession {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&(3i32 << 16).to_be_bytes());
        for s in ["user", "postgres", "database", "postgres", ""] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        tcp.write_all(&packet).unwrap();
        let mut session = RawSession {
            tcp,
            process_id: 0,
            secret: Vec::new(),
        };
        loop {
            let (tag, body) = session.read_message();
            match tag {
                b'R' => assert_eq!(&body[..4], &[0, 0, 0, 0], "trust authentication"),
                b'K' => {
                    session.process_id = i32::from_be_bytes(body[..4].try_into().unwrap());
                    session.secret = body[4..].to_vec();
                }
                b'E' => panic!("startup failed: {}", String::from_utf8_lossy(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        assert!(!session.secret.is_empty(), "sluice sent a BackendKeyData");
        session
    }

    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        self.tcp.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.tcp.read_exact(&mut body).unwrap();
        (head[0], body)
    }

    pub fn send_query(&mut self, sql: &str) {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.tcp.write_all(&msg).unwrap();
    }

    /// Reads until ReadyForQuery; returns the SQLSTATE of an error, if any.
    pub fn finish_query(&mut self) -> Option<String> {
        let mut code = None;
        loop {
            let (tag, body) = self.read_message();
            match tag {
                b'E' => {
                    for field in body.split(|&b| b == 0) {
                        if let Some((&b'C', value)) = field.split_first() {
                            code = Some(String::from_utf8_lossy(value).into_owned());
                        }
                    }
                }
                b'Z' => return code,
                _ => {}
            }
        }
    }
}

/// Sends a CancelRequest to `port` and waits for sluice to close the connection.
pub fn send_cancel(port: u16, process_id: i32, secret: &[u8]) {
    let mut packet = ((12 + secret.len()) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&process_id.to_be_bytes());
    packet.extend_from_slice(secret);
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&packet).unwrap();
    let mut sink = [0u8; 16];
    let _ = tcp.read(&mut sink);
}

//! Several sluice instances as one: a CancelRequest that reaches the wrong
//! instance is forwarded to the one holding the session.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// A session opened with raw protocol messages, so that the test sees the
/// BackendKeyData sluice hands out (tokio-postgres keeps it private).
struct RawSession {
    tcp: TcpStream,
    process_id: i32,
    secret: Vec<u8>,
}

impl RawSession {
    fn open(port: u16) -> RawSession {
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

    fn read_message(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        self.tcp.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.tcp.read_exact(&mut body).unwrap();
        (head[0], body)
    }

    fn send_query(&mut self, sql: &str) {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.tcp.write_all(&msg).unwrap();
    }

    /// Reads until ReadyForQuery; returns the SQLSTATE of an error, if any.
    fn finish_query(&mut self) -> Option<String> {
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
fn send_cancel(port: u16, process_id: i32, secret: &[u8]) {
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

/// Two instances in front of one node, each the other's peer.
fn pair(node: &LocalCluster) -> (Sluice, Sluice) {
    let (port_a, port_b) = (free_port(), free_port());
    let setup = |id: u8, port: u16, peer: u16| Setup {
        tail: format!("[cluster]\ninstance_id = {id}\npeers = [\"127.0.0.1:{peer}\"]\n"),
        port: Some(port),
        ..Setup::default()
    };
    let a = Sluice::start(&[node], &setup(1, port_a, port_b));
    let b = Sluice::start(&[node], &setup(2, port_b, port_a));
    (a, b)
}

#[test]
fn a_cancel_sent_to_the_other_instance_cancels_within_a_second() {
    let node = node("cluster-cancel");
    let (a, b) = pair(&node);
    let mut session = RawSession::open(a.port);
    assert_eq!(
        (session.process_id >> 22) & 0xff,
        1,
        "instance A's id is in the key"
    );
    session.send_query("SELECT pg_sleep(60)");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    send_cancel(b.port, session.process_id, &session.secret);
    assert_eq!(session.finish_query().as_deref(), Some("57014"));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "cancel took {elapsed:?}");
    b.wait_for_log(
        "forwarded a cancel request to the cluster peers",
        Duration::from_secs(2),
    );
    a.wait_for_log("forwarded a cancel request", Duration::from_secs(2));

    // The session is still usable, and a cancel sent to its own instance works too.
    session.send_query("SELECT pg_sleep(60)");
    std::thread::sleep(Duration::from_millis(300));
    send_cancel(a.port, session.process_id, &session.secret);
    assert_eq!(session.finish_query().as_deref(), Some("57014"));
}

#[test]
fn keys_of_neither_instance_and_forged_keys_cancel_nothing() {
    let node = node("cluster-forged");
    let (a, b) = pair(&node);
    let mut session = RawSession::open(a.port);
    session.send_query("SELECT pg_sleep(1.5)");
    std::thread::sleep(Duration::from_millis(200));
    // Instance 3 does not exist; instance 1's id with a wrong secret; a
    // key marked as already forwarded; a key with no instance id.
    let neither = (3 << 22) | (session.process_id & 0x3f_ffff);
    let mut wrong_secret = session.secret.clone();
    wrong_secret[0] ^= 0xff;
    send_cancel(b.port, neither, &session.secret);
    send_cancel(a.port, neither, &session.secret);
    send_cancel(b.port, session.process_id, &wrong_secret);
    send_cancel(a.port, session.process_id, &wrong_secret);
    send_cancel(b.port, session.process_id | (1 << 30), &session.secret);
    send_cancel(b.port, 4321, &session.secret);
    assert_eq!(
        session.finish_query(),
        None,
        "pg_sleep(1.5) ran to its end: no forged key cancelled it"
    );
    b.wait_for_log("a peer forwarded it", Duration::from_secs(2));
    a.wait_for_log("a peer forwarded it", Duration::from_secs(2));
    assert!(b.log().contains("not made by any sluice instance"));
}

#[test]
fn cancel_forwarding_is_rate_limited() {
    let node = node("cluster-flood");
    let (port_a, port_b) = (free_port(), free_port());
    let a = Sluice::start(
        &[&node],
        &Setup {
            tail: format!(
                "[cluster]\ninstance_id = 1\npeers = [\"127.0.0.1:{port_b}\"]\n\
                 cancel_forward_rate = 1\ncancel_forward_burst = 2\n"
            ),
            port: Some(port_a),
            ..Setup::default()
        },
    );
    for i in 0..6 {
        send_cancel(port_a, (2 << 22) | i, &[1, 2, 3, 4]);
    }
    a.wait_for_log("arrive faster than", Duration::from_secs(2));
    let forwarded = a
        .log()
        .matches("forwarded a cancel request to the cluster peers")
        .count();
    assert!(
        (2..=3).contains(&forwarded),
        "the burst of 2 passed, the rest was dropped: {forwarded} forwarded"
    );
}

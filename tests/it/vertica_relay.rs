//! A Vertica client relayed byte for byte to a Vertica node
//! (`warehouse.dialect = "vertica"`), against the scripted node of
//! support/fake_vertica.rs: no Vertica server exists here, so what is
//! checked is that sluice passes the protocol's Vertica-only parts
//! untouched (COPY LOCAL, MARS, unknown types), swaps the cancel key, and
//! answers LoadBalanceRequest itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::fake_vertica::{self, NODE_KEY, VERTICA_3_5, message};
use crate::support::*;

/// vertica-python 1.4.0's startup: fixed 3.5, binary `protocol_version`
/// (3.16) first, Vertica-only parameters (§1.2).
fn vertica_startup() -> Vec<u8> {
    let mut body = VERTICA_3_5.to_be_bytes().to_vec();
    body.extend_from_slice(b"protocol_version\0");
    body.extend_from_slice(&[0x00, 0x03, 0x00, 0x10, 0x00]);
    for s in [
        "user",
        "dbadmin",
        "database",
        "dwh",
        "client_type",
        "vertica-python",
        "client_label",
        "relay-test",
        "protocol_compat",
        "VER",
        "",
    ] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

struct Client {
    tcp: TcpStream,
    /// Everything sent after startup, message by message.
    sent: Vec<Vec<u8>>,
}

impl Client {
    fn send(&mut self, msg: Vec<u8>) {
        self.tcp.write_all(&msg).unwrap();
        self.sent.push(msg);
    }

    fn read(&mut self) -> Vec<u8> {
        let mut head = [0u8; 5];
        self.tcp.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut raw = head.to_vec();
        raw.resize(1 + len, 0);
        self.tcp.read_exact(&mut raw[5..]).unwrap();
        raw
    }

    /// Reads as many messages as `want` has and checks them byte for byte.
    fn expect(&mut self, what: &str, want: Vec<Vec<u8>>) {
        for (i, w) in want.iter().enumerate() {
            let got = self.read();
            assert_eq!(
                got,
                *w,
                "{what}: message {i} ({:?}) differs from the node's",
                char::from(w[0])
            );
        }
    }
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

#[test]
fn a_vertica_node_gets_and_gives_every_byte_untouched() {
    let node = fake_vertica::FakeVertica::start();
    let setup = Setup {
        // Kept connections are reset with DISCARD ALL, which Vertica lacks.
        warehouse: "dialect = \"vertica\"\nidle_connections = 0\n".into(),
        tail: "[[rules]]\nname = \"no-secrets\"\ntables = [\"secret\"]\naction = \"reject\"\n"
            .into(),
        ..Setup::default()
    };
    let sluice = Sluice::start_addrs(&[node.addr()], &setup);
    let mut tcp = TcpStream::connect(("127.0.0.1", sluice.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // LoadBalanceRequest: sluice answers a bare `N` itself.
    let mut lb = 8i32.to_be_bytes().to_vec();
    lb.extend_from_slice(&80936960i32.to_be_bytes());
    tcp.write_all(&lb).unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"N");

    // Startup, on the same socket: the node's greeting arrives untouched
    // but for BackendKeyData, which carries sluice's key.
    let startup = vertica_startup();
    tcp.write_all(&startup).unwrap();
    let mut client = Client {
        tcp,
        sent: Vec::new(),
    };
    let mut sluice_key = None;
    for want in fake_vertica::greeting() {
        let got = client.read();
        if want[0] == b'K' {
            assert_eq!(got[0], b'K');
            let pid = i32::from_be_bytes(got[5..9].try_into().unwrap());
            let key = got[9..].to_vec();
            assert_ne!(
                (pid, key.as_slice()),
                (NODE_KEY.0, &NODE_KEY.1.to_be_bytes()[..]),
                "the node's own cancel key reached the client"
            );
            sluice_key = Some((pid, key));
        } else {
            assert_eq!(
                got,
                want,
                "greeting message {:?} differs",
                char::from(want[0])
            );
        }
    }
    let (pid, key) = sluice_key.expect("a BackendKeyData reached the client");

    // COPY LOCAL: VerifyFiles, VerifiedFiles, LoadFile, the file's data,
    // EndOfBatchRequest, WriteFile (little-endian rejected rows), ...
    client.send(query("COPY t FROM LOCAL 'f.csv' RETURNREJECTED"));
    client.expect("COPY LOCAL, first turn", fake_vertica::copy_local(0));
    let mut verified = 1i32.to_be_bytes().to_vec();
    verified.extend_from_slice(b"f.csv\0");
    verified.extend_from_slice(&12i64.to_be_bytes());
    client.send(message(b'F', &verified));
    client.expect("COPY LOCAL, LoadFile", fake_vertica::copy_local(1));
    client.send(message(b'd', b"1|a\n2|b\n"));
    client.send(message(b'd', b"3|c\n"));
    client.send(message(b'j', &[]));
    client.expect("COPY LOCAL, the end", fake_vertica::copy_local(2));

    // A message type no PostgreSQL client knows, between rows.
    client.send(query("SELECT mars"));
    client.expect("MARS mid-result", fake_vertica::mars());

    // Rules act on a relayed Vertica session too, after a COPY LOCAL
    // (whose VerifiedFiles `F` is no PostgreSQL FunctionCall).
    let rejected = query("SELECT * FROM secret");
    client.tcp.write_all(&rejected).unwrap();
    let error = client.read();
    assert_eq!(error[0], b'E', "{error:?}");
    assert!(
        String::from_utf8_lossy(&error).contains("42501"),
        "{error:?}"
    );
    assert_eq!(client.read(), message(b'Z', b"I"));

    // Cancel with sluice's key: the node gets its own.
    client.send(query("SELECT sleep(60)"));
    std::thread::sleep(Duration::from_millis(200));
    send_cancel(sluice.port, pid, &key);
    client.expect("cancelled", fake_vertica::cancelled());
    assert_eq!(node.cancels(), vec![NODE_KEY]);

    client.send(message(b'X', &[]));
    // Everything the client sent reached the node as it was sent, and the
    // rejected query never did.
    let mut want = vec![startup];
    want.extend(client.sent.iter().cloned());
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.received().len() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = node.received();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "client message {i} ({:?}) changed", char::from(w[0]));
    }
}

/// With `[pooling] idle_detach`, a session on a Vertica node that set
/// nothing but SETs gives its connection back when idle (closed: Vertica
/// has no reset) and logs in again for its next query, where its SETs run
/// first; one with a temporary table stays on its connection.
#[test]
fn a_vertica_session_detaches_and_logs_in_again_with_its_sets() {
    let node = fake_vertica::FakeVertica::start();
    let setup = Setup {
        warehouse: "dialect = \"vertica\"\nidle_connections = 0\n".into(),
        tail: "[pooling]\nidle_detach = \"200ms\"\n".into(),
        ..Setup::default()
    };
    let sluice = Sluice::start_addrs(&[node.addr()], &setup);
    let startups = || {
        node.received()
            .iter()
            .filter(|m| m.get(4..8) == Some(&VERTICA_3_5.to_be_bytes()[..]))
            .count()
    };
    let open = || {
        let mut tcp = TcpStream::connect(("127.0.0.1", sluice.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&vertica_startup()).unwrap();
        let mut client = Client {
            tcp,
            sent: Vec::new(),
        };
        while client.read()[0] != b'Z' {}
        client
    };
    let ask = |client: &mut Client, sql: &str| {
        client.send(query(sql));
        let mut tags = Vec::new();
        loop {
            let m = client.read();
            tags.push(m[0]);
            if m[0] == b'Z' {
                return tags;
            }
        }
    };

    let mut client = open();
    assert_eq!(ask(&mut client, "SET SEARCH_PATH TO sales"), b"CZ");
    assert_eq!(ask(&mut client, "SELECT 1"), b"CZ");
    assert_eq!(startups(), 1);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(sluice.metric("sluice_detached_sessions"), Some(1.0));
    // The next query logs in again, runs the SET, then the query: the
    // client sees only its query's answer.
    assert_eq!(ask(&mut client, "SELECT 2"), b"CZ");
    assert_eq!(startups(), 2, "a second login on the node");
    let queries: Vec<String> = node
        .received()
        .iter()
        .filter(|m| m[0] == b'Q')
        .map(|m| String::from_utf8_lossy(&m[5..m.len() - 1]).into_owned())
        .collect();
    assert_eq!(
        queries,
        [
            "SET SEARCH_PATH TO sales",
            "SELECT 1",
            "SET SEARCH_PATH TO sales",
            "SELECT 2"
        ]
    );

    // A temporary table pins its session (this one started detached: a
    // node greeted its startup packet before).
    let mut pinned = open();
    assert_eq!(
        ask(&mut pinned, "CREATE LOCAL TEMP TABLE scratch (a int)"),
        b"CZ"
    );
    std::thread::sleep(Duration::from_millis(800));
    let before = startups();
    assert_eq!(ask(&mut pinned, "SELECT 4"), b"CZ");
    assert_eq!(startups(), before, "the pinned session kept its connection");
}

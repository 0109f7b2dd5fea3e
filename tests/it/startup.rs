//! The connection opening: special packets, malformed and hostile first
//! packets, oversized messages. Whatever one client sends, sluice answers it
//! with an error or closes, and keeps serving everybody else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Sends `bytes` on a fresh connection and returns what sluice answers before closing.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as i32).to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The SQLSTATE in an ErrorResponse at the start of `answer`.
fn error_code(answer: &[u8]) -> Option<String> {
    if answer.first() != Some(&b'E') {
        return None;
    }
    let text = String::from_utf8_lossy(&answer[5..]).into_owned();
    text.split('\0')
        .find_map(|f| f.strip_prefix('C').map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_first_packets_get_an_error_or_close_and_sluice_keeps_serving() {
    let node = node("malformed");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let good = sluice.client().await;

    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("zero length", vec![0, 0, 0, 0, 0, 0, 0, 0], Some("08P01")),
        (
            "huge length",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
            Some("08P01"),
        ),
        (
            "negative length",
            vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0],
            Some("08P01"),
        ),
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some("08P01"),
        ),
        (
            "truncated startup",
            {
                let mut v = packet(3 << 16, b"user\0postgres\0\0");
                v.truncate(10);
                v
            },
            None,
        ),
        (
            "unterminated parameters",
            packet(3 << 16, b"user\0postgres"),
            Some("08P01"),
        ),
        (
            "protocol 2",
            packet(2 << 16, b"user\0postgres\0\0"),
            Some("0A000"),
        ),
        (
            "SSLRequest then garbage",
            {
                let mut v = packet(80877103, b"");
                v.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
                v
            },
            None,
        ),
        ("empty", vec![], None),
    ];
    for (name, bytes, expected) in cases {
        let answer = exchange(sluice.port, &bytes);
        match expected {
            Some(code) => {
                // After an SSLRequest the first byte is the 'N'.
                assert_eq!(
                    error_code(&answer).as_deref(),
                    Some(code),
                    "{name}: answered {answer:?}"
                );
            }
            None => assert!(
                answer.is_empty() || answer[0] == b'N' || answer[0] == b'E',
                "{name}: answered {answer:?}"
            ),
        }
        let n: i32 = good.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "{name}: the good client is unaffected");
    }
    let fresh = sluice.client().await;
    assert_eq!(
        fresh
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_requests_are_declined_and_the_session_goes_on() {
    let node = node("special");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let mut s = TcpStream::connect(("127.0.0.1", sluice.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut one = [0u8; 1];
    // Vertica's LoadBalanceRequest: sluice does not redirect.
    s.write_all(&packet(80936960, b"")).unwrap();
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"N");
    // GSSENCRequest and SSLRequest (no TLS configured).
    s.write_all(&packet(80877104, b"")).unwrap();
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"N");
    s.write_all(&packet(80877103, b"")).unwrap();
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"N");
    // Then a normal startup on the same connection: the node answers with AuthenticationOk.
    s.write_all(&packet(3 << 16, b"user\0postgres\0database\0postgres\0\0"))
        .unwrap();
    let mut header = [0u8; 9];
    s.read_exact(&mut header).unwrap();
    assert_eq!(header[0], b'R');
    assert_eq!(&header[5..9], &[0, 0, 0, 0], "AuthenticationOk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_with_54000() {
    let node = node("oversize");
    let sluice = Sluice::start(
        &[&node],
        &Setup {
            server: "max_message_size = 1048576".into(),
            ..Setup::default()
        },
    );
    let mut s = TcpStream::connect(("127.0.0.1", sluice.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&packet(3 << 16, b"user\0postgres\0database\0postgres\0\0"))
        .unwrap();
    // Read until ReadyForQuery.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "node closed during startup");
        seen.extend_from_slice(&buf[..n]);
    }
    // A Query claiming 100 MB, of which only the header is sent.
    s.write_all(&[b'Q', 0x06, 0x00, 0x00, 0x00]).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(error_code(&answer).as_deref(), Some("54000"), "{answer:?}");
    assert!(String::from_utf8_lossy(&answer).contains("over the limit of 1048576 bytes"));
    // A query just under the limit goes through.
    let client = sluice.client().await;
    let big = "x".repeat(1_000_000);
    let row = client
        .query_one(&format!("SELECT length('{big}')"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_dribbles_its_startup_is_closed() {
    let node = node("slowloris");
    let sluice = Sluice::start(
        &[&node],
        &Setup {
            server: "startup_timeout = \"500ms\"".into(),
            ..Setup::default()
        },
    );
    let mut s = TcpStream::connect(("127.0.0.1", sluice.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    s.write_all(&[0, 0, 0]).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    sluice.client().await;
}

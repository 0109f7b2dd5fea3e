//! The Scanner over a client's or a node's message stream: whatever the
//! bytes, and wherever the socket splits them, it yields the same messages
//! and the same relayed bytes as over the stream in one piece, and every
//! byte it yields is a byte that arrived, in order.
//!
//! Input: byte 0 picks the direction and limit, byte 1 seeds the split
//! points, the rest is the stream.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::ProtocolError;
use sluice::protocol::frame::{Item, Scanner, Treatment};

/// What the session inspects from a client (see `frontend::session`), and
/// what the router will (Parse, Bind).
fn client_side(tag: u8) -> Treatment {
    match tag {
        b'Q' | b'S' | b'F' | b'X' | b'P' | b'B' => Treatment::Inspect,
        _ => Treatment::Relay,
    }
}

/// What the session inspects from a node.
fn node_side(tag: u8) -> Treatment {
    match tag {
        b'Z' | b'K' | b'E' => Treatment::Inspect,
        _ => Treatment::Relay,
    }
}

fn all_inspected(_: u8) -> Treatment {
    Treatment::Inspect
}

fn all_relayed(_: u8) -> Treatment {
    Treatment::Relay
}

#[derive(Default, Debug, PartialEq)]
struct Seen {
    /// Every byte yielded, relayed or inspected, in order.
    bytes: Vec<u8>,
    relayed: usize,
    frames: Vec<Vec<u8>>,
    error: Option<ProtocolError>,
}

impl Seen {
    /// Takes items until more bytes are needed; false after an error.
    fn drain(&mut self, scanner: &mut Scanner, buf: &mut BytesMut) -> bool {
        loop {
            match scanner.next(buf) {
                Ok(Some(Item::Relay(b))) => {
                    assert!(!b.is_empty(), "an empty relay run");
                    self.relayed += b.len();
                    self.bytes.extend_from_slice(&b);
                }
                Ok(Some(Item::Inspect(f))) => {
                    assert_eq!(f.raw().len(), f.body().len() + 5);
                    self.bytes.extend_from_slice(f.raw());
                    self.frames.push(f.raw().to_vec());
                }
                Ok(None) => return true,
                Err(e) => {
                    self.error = Some(e);
                    return false;
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, seed, stream @ ..] = data else {
        return;
    };
    let treatment: fn(u8) -> Treatment = match mode & 3 {
        0 => client_side,
        1 => node_side,
        2 => all_inspected,
        _ => all_relayed,
    };
    let limit = match (mode >> 2) & 3 {
        0 => 64,
        1 => 1024,
        2 => 1 << 20,
        _ => usize::MAX,
    };

    let mut whole = Seen::default();
    let mut scanner = Scanner::new(limit, treatment);
    let mut buf = BytesMut::from(stream);
    whole.drain(&mut scanner, &mut buf);
    let whole_rest = buf.to_vec();
    let whole_boundary = scanner.at_boundary();

    let mut split = Seen::default();
    let mut scanner = Scanner::new(limit, treatment);
    let mut buf = BytesMut::new();
    let mut state = u32::from(*seed) | 0x1_0000;
    let mut at = 0;
    while at < stream.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = 1 + (state % 23) as usize;
        let end = (at + n).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        if !split.drain(&mut scanner, &mut buf) {
            break;
        }
    }

    assert!(stream.starts_with(&whole.bytes), "yielded bytes that did not arrive");
    assert!(stream.starts_with(&split.bytes), "yielded bytes that did not arrive");
    assert_eq!(whole.frames, split.frames, "split changed the messages");
    assert_eq!(whole.error, split.error, "split changed the verdict");
    if whole.error.is_none() {
        assert_eq!(whole.bytes, split.bytes);
        assert_eq!(whole_rest, buf.to_vec());
        assert_eq!(whole_boundary, scanner.at_boundary());
        assert_eq!([&whole.bytes[..], &whole_rest[..]].concat(), stream);
    } else {
        // In one piece, a run cut short by the bad header is not yielded;
        // in pieces, part of it may have gone out before: never more.
        assert!(split.bytes.starts_with(&whole.bytes));
    }
    for f in &whole.frames {
        assert!(f.len() <= limit);
    }
});

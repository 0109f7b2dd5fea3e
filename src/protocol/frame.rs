//! Framing of typed messages: `Byte1 tag, Int32 length (counting itself), body`.
//!
//! The relay must not copy, decode or even wait for whole messages it does not
//! need to understand: a 1 GiB DataRow is streamed through in whatever pieces
//! the socket delivers. A [`Scanner`] therefore walks a read buffer and yields
//! either a run of bytes to relay untouched ([`Item::Relay`], possibly ending in
//! the middle of a message) or one whole message the session asked to see
//! ([`Item::Inspect`]). Which tags are inspected is the caller's choice.
//!
//! Memory stays bounded by what actually arrived: a declared length is checked
//! against the limit before anything is reserved, and nothing is reserved for
//! a message body ahead of its bytes.

use bytes::{Bytes, BytesMut};

use super::ProtocolError;

/// One whole message: its tag and its original bytes, header included, so
/// that forwarding it is a copy of the same bytes, never a re-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The body, after the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The message exactly as it arrived.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Wraps an encoded message; `raw` must hold one whole message.
    pub fn from_raw(raw: Bytes) -> Frame {
        debug_assert!(raw.len() >= 5);
        Frame { raw }
    }
}

/// How the relay treats a message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Bytes flow through as they arrive.
    Relay,
    /// The whole message is handed to the session before it goes anywhere.
    Inspect,
}

/// One step of a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// Bytes to forward untouched; may end inside a message.
    Relay(Bytes),
    /// A whole message for the session to look at.
    Inspect(Frame),
}

/// Walks a stream of typed messages, one direction of one session.
///
/// The scanner remembers how much of a relayed message is still to come, so
/// each call may start in the middle of a message's body.
#[derive(Debug)]
pub struct Scanner {
    /// Bytes of the current relayed message not yet seen.
    relay_remaining: usize,
    /// Largest message (tag and length included) accepted from this peer.
    max_message: usize,
    treatment: fn(u8) -> Treatment,
}

const HEADER: usize = 5;

impl Scanner {
    pub fn new(max_message: usize, treatment: fn(u8) -> Treatment) -> Scanner {
        Scanner {
            relay_remaining: 0,
            max_message,
            treatment,
        }
    }

    /// True between messages: nothing of a relayed message is pending.
    pub fn at_boundary(&self) -> bool {
        self.relay_remaining == 0
    }

    /// Takes the next item off the front of `buf`, or `Ok(None)` when more
    /// bytes are needed. Consecutive relayed messages come out as one run.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, ProtocolError> {
        let mut run = 0;
        loop {
            if self.relay_remaining > 0 {
                let n = self.relay_remaining.min(buf.len() - run);
                run += n;
                self.relay_remaining -= n;
                if self.relay_remaining > 0 {
                    break;
                }
                continue;
            }
            let rest = &buf[run..];
            if rest.len() < HEADER {
                break;
            }
            let tag = rest[0];
            let declared = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if declared < 4 {
                return Err(ProtocolError::LengthTooSmall {
                    tag: tag as char,
                    len: declared,
                });
            }
            let total = declared as usize + 1;
            if total > self.max_message {
                return Err(ProtocolError::MessageTooLarge {
                    tag: tag as char,
                    len: total,
                    limit: self.max_message,
                });
            }
            match (self.treatment)(tag) {
                Treatment::Relay => self.relay_remaining = total,
                Treatment::Inspect if run > 0 => break,
                Treatment::Inspect if rest.len() < total => return Ok(None),
                Treatment::Inspect => {
                    let raw = buf.split_to(total).freeze();
                    return Ok(Some(Item::Inspect(Frame { raw })));
                }
            }
        }
        if run == 0 {
            return Ok(None);
        }
        Ok(Some(Item::Relay(buf.split_to(run).freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn inspect_z(tag: u8) -> Treatment {
        if tag == b'Z' {
            Treatment::Inspect
        } else {
            Treatment::Relay
        }
    }

    fn drain(scanner: &mut Scanner, buf: &mut BytesMut) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = scanner.next(buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn relayed_messages_coalesce_into_one_run() {
        let mut s = Scanner::new(1 << 20, inspect_z);
        let mut bytes = msg(b'D', b"abc");
        bytes.extend(msg(b'C', b"SELECT 1\0"));
        bytes.extend(msg(b'Z', b"I"));
        let mut buf = BytesMut::from(&bytes[..]);
        let items = drain(&mut s, &mut buf);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], Item::Relay(Bytes::from(bytes[..22].to_vec())));
        match &items[1] {
            Item::Inspect(f) => {
                assert_eq!(f.tag(), b'Z');
                assert_eq!(f.body(), b"I");
            }
            other => panic!("expected Z, got {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn split_at_every_byte_yields_the_same_stream() {
        let mut bytes = msg(b'D', &[7; 300]);
        bytes.extend(msg(b'Z', b"T"));
        bytes.extend(msg(b'D', b""));
        bytes.extend(msg(b'Z', b"I"));
        let mut s = Scanner::new(1 << 20, inspect_z);
        let mut buf = BytesMut::new();
        let mut relayed = Vec::new();
        let mut statuses = Vec::new();
        for b in &bytes {
            buf.extend_from_slice(&[*b]);
            for item in drain(&mut s, &mut buf) {
                match item {
                    Item::Relay(b) => relayed.extend_from_slice(&b),
                    Item::Inspect(f) => statuses.push(f.body()[0]),
                }
            }
        }
        assert_eq!(statuses, b"TI");
        assert_eq!(relayed.len(), 305 + 5);
        assert!(s.at_boundary());
    }

    #[test]
    fn large_relayed_message_streams_without_waiting_for_its_end() {
        let mut s = Scanner::new(1 << 30, inspect_z);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'D', 0x10, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            drain(&mut s, &mut buf),
            vec![Item::Relay(Bytes::from_static(&[
                b'D', 0x10, 0, 0, 0, 1, 2, 3
            ]))]
        );
        assert!(!s.at_boundary());
    }

    #[test]
    fn inspected_message_waits_until_whole() {
        let mut s = Scanner::new(1 << 20, |_| Treatment::Inspect);
        let whole = msg(b'Q', b"select 1\0");
        let mut buf = BytesMut::from(&whole[..7]);
        assert_eq!(s.next(&mut buf).unwrap(), None);
        buf.extend_from_slice(&whole[7..]);
        assert!(matches!(s.next(&mut buf).unwrap(), Some(Item::Inspect(_))));
    }

    #[test]
    fn lengths_are_checked_before_anything_is_buffered() {
        let mut s = Scanner::new(64, |_| Treatment::Inspect);
        let mut buf = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            s.next(&mut buf),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        let mut s = Scanner::new(64, |_| Treatment::Relay);
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert!(matches!(
            s.next(&mut buf),
            Err(ProtocolError::LengthTooSmall { len: 3, .. })
        ));
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            s.next(&mut buf),
            Err(ProtocolError::LengthTooSmall { len: -1, .. })
        ));
    }
}

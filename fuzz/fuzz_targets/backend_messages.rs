//! Readers of node messages (ErrorResponse/NoticeResponse fields and class,
//! BackendKeyData, ReadyForQuery) over any body: an error or a value, never
//! a panic, and the cheap reader agrees with the full one.
//!
//! Input: byte 0 picks the reader, the rest is the message body.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::backend;

fuzz_target!(|data: &[u8]| {
    let [which, body @ ..] = data else {
        return;
    };
    match which % 3 {
        0 => {
            let fields = backend::error_fields(body);
            let class = backend::error_class(body);
            let _ = backend::error_summary(body);
            if let Ok(fields) = &fields {
                // The relay's allocation-free reader sees the same SQLSTATE class.
                let code = fields.iter().find(|(c, _)| *c == b'C').map(|(_, v)| v.as_bytes());
                match (code, class) {
                    (Some(code), Some(class)) if class.is_ascii() => {
                        assert_eq!(&code[..2], &class[..])
                    }
                    (Some(code), None) => assert!(code.len() < 2 || !code[..2].is_ascii()),
                    (None, Some(_)) => panic!("error_class found a code error_fields did not"),
                    _ => {}
                }
                let hinted = backend::error_with_hint(body, "a sluice hint").unwrap();
                let again = backend::error_fields(&hinted[5..]).expect("hinted error reads");
                assert!(again.iter().any(|(c, v)| *c == b'H' && v.ends_with("a sluice hint")));
            } else {
                assert!(backend::error_with_hint(body, "h").is_err());
            }
        }
        1 => {
            if let Ok(key) = backend::backend_key_data(body) {
                let mut buf = BytesMut::new();
                backend::encode_backend_key_data(&mut buf, &key);
                assert_eq!(&buf[5..], body);
            }
        }
        _ => {
            if let Ok(status) = backend::ready_for_query(body) {
                let mut buf = BytesMut::new();
                backend::encode_ready_for_query(&mut buf, status);
                assert_eq!(&buf[5..], body);
            }
        }
    }
});

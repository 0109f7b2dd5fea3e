//! Readers of client messages (Query, Parse, Bind, Describe/Close, Execute,
//! SASLInitialResponse) over any body: an error or a value, never a panic,
//! and what sluice rewrites reads back as it was.
//!
//! Input: byte 0 picks the reader, the rest is the message body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::protocol::frontend;

fuzz_target!(|data: &[u8]| {
    let [which, body @ ..] = data else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(text) = frontend::query_text(body) {
                assert_eq!([text, &[0]].concat(), body);
            }
        }
        1 => {
            if let Ok(parts) = frontend::parse_parts(body) {
                let renamed = frontend::parse_renamed(&parts, "sluice_fuzz");
                let again = frontend::parse_parts(renamed.body()).expect("renamed Parse reads");
                assert_eq!(again.name, b"sluice_fuzz");
                assert_eq!(again.text, parts.text);
                assert_eq!(again.param_types, parts.param_types);
                assert_eq!(frontend::parse_text(body).unwrap(), (parts.name, parts.text));
            }
        }
        2 => {
            if let Ok((portal, _, rest)) = frontend::bind_names(body) {
                let rebound = frontend::bind_renamed(body, "sluice_fuzz").expect("Bind reads twice");
                let (p2, s2, r2) = frontend::bind_names(rebound.body()).unwrap();
                assert_eq!((p2, s2, r2), (portal, &b"sluice_fuzz"[..], rest));
            }
        }
        3 | 4 => {
            let (tag, what) = if which % 7 == 3 {
                (frontend::DESCRIBE, "Describe")
            } else {
                (frontend::CLOSE, "Close")
            };
            if let Ok((kind, name)) = frontend::target(body, what) {
                assert!(kind == b'S' || kind == b'P');
                if let Ok(name) = std::str::from_utf8(name) {
                    let encoded = frontend::encode_target(tag, kind, name);
                    assert_eq!(encoded.body(), body);
                }
            }
        }
        5 => {
            if let Ok(portal) = frontend::execute_portal(body) {
                assert!(!portal.contains(&0));
            }
        }
        _ => {
            if let Ok((mechanism, data)) = frontend::sasl_initial_response(body) {
                assert!(!mechanism.contains(&0));
                assert!(data.len() < body.len());
            }
        }
    }
});

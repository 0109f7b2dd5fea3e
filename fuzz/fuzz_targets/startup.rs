//! Pre-startup packets: SSLRequest, GSSENCRequest, CancelRequest, Vertica's
//! LoadBalanceRequest and StartupMessage (with Vertica's binary
//! `protocol_version`), as `negotiate` reads them: the length word checked
//! first, then the whole packet parsed.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::startup::{self, StartupMessage, StartupPacket};

const MAX_PARAMS: usize = 64;

fuzz_target!(|data: &[u8]| {
    if let Some(word) = data.first_chunk::<4>() {
        if let Ok(n) = startup::packet_len(i32::from_be_bytes(*word), 10_000) {
            assert!((8..=10_000).contains(&n));
        }
    }
    match startup::parse(Bytes::copy_from_slice(data), MAX_PARAMS) {
        Ok(StartupPacket::Startup(m)) => {
            assert_eq!(m.raw().as_ref(), data, "the packet is kept as sent");
            assert!(m.params().len() <= MAX_PARAMS);
            let _ = (m.user(), m.database(), m.application(), m.dialect());
            assert_eq!(m.version().0, 3);
            // What sluice read, written again and read back, is the same.
            let params: Vec<(&str, &str)> = m
                .params()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            if params.iter().all(|(n, v)| !n.is_empty() && !n.contains('\0') && !v.contains('\0'))
                && !params.iter().any(|(n, _)| *n == "protocol_version")
            {
                let again = startup::parse(StartupMessage::encode(&params), MAX_PARAMS);
                match again {
                    Ok(StartupPacket::Startup(m2)) => assert_eq!(m2.params(), m.params()),
                    other => panic!("re-encoded startup did not parse: {other:?}"),
                }
            }
        }
        Ok(StartupPacket::CancelRequest(key)) => {
            assert_eq!(&key.cancel_request()[4..], &data[4..]);
        }
        Ok(_) => assert_eq!(data.len(), 8),
        Err(e) => {
            let _ = (e.to_string(), e.sqlstate());
        }
    }
});

//! Config parsing: any text is a configuration or a list of problems with
//! lines, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sluice::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Config files name other files (TLS, service_password_file), which
    // parsing reads: keep the fuzzer off device files that never end.
    if ["/dev", "/proc", "/sys", "\\u", "\\U"].iter().any(|p| text.contains(p)) {
        return;
    }
    match Config::parse(text, "fuzz.toml", Path::new("/nonexistent/sluice-fuzz")) {
        Ok(config) => {
            assert!(!config.warehouse.nodes.is_empty());
            let _ = format!("{config:?}");
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let lines = text.lines().count().max(1);
            for p in &e.problems {
                if let Some(line) = p.line {
                    assert!(line >= 1 && line <= lines + 1, "line {line} of {lines}");
                }
            }
            let _ = e.to_string();
        }
    }
});

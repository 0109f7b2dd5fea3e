//! The shape of the code, checked like its behaviour: the module graph has
//! no circle, and `server` (which builds every part and hands each what it
//! uses) is imported by nothing but `main.rs`, `lib.rs` and the demo. See
//! docs/architecture.md, "Module graph".

use std::process::Command;

#[test]
fn the_module_graph_has_no_cycle_and_server_is_at_its_top() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/modgraph.py");
    let out = Command::new("python3")
        .args([script, "--forbid", "server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs scripts/modgraph.py (install python3)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no cycle"), "{text}");
}

#[test]
fn the_module_graph_script_checks_itself() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/modgraph.py");
    let out = Command::new("python3")
        .args([script, "--self-test"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

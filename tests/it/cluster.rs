//! Several sluice instances as one: a CancelRequest that reaches the wrong
//! instance is forwarded to the one holding the session.

use std::time::{Duration, Instant};

use crate::support::*;

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

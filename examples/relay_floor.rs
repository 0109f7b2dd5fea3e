//! The floor under any proxy on this machine: a relay that copies bytes
//! between each client and the node and does nothing else — no framing, no
//! routing, no rules, no statistics — on one tokio thread, as sluice runs.
//!
//! The benchmark driver (`bench/run.sh`) runs it beside PgBouncer and
//! sluice. What it costs over a direct connection is what the extra hop
//! costs (two more sockets, the kernel's loopback TCP, a wake-up per
//! message); what sluice costs over it is sluice's own work.
//!
//! Run: `cargo run --release --example relay_floor -- LISTEN_ADDR NODE_ADDR`.

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(node)) = (args.next(), args.next()) else {
        eprintln!("usage: relay_floor LISTEN_ADDR NODE_ADDR");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            loop {
                let (mut client, _) = listener.accept().await?;
                let node = node.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&node).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        })
}

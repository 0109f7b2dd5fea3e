//! Latency of one query, through several targets at once, interleaved
//! transaction by transaction: workload 2's precise measure.
//!
//! pgbench measures one target at a time, so on a shared machine the load
//! of the minute lands on whichever target runs then, and runs of a few
//! seconds differ by more than the proxies do. Here one client holds a
//! connection to every target and sends pgbench -S's query through each in
//! turn (the order rotates every round, so no target always comes first),
//! so every target meets the same moment's machine; what the report gives
//! per target is the median of its per-round difference to the first
//! target (direct).
//!
//! Run: `cargo run --release --example latency_probe -- MODE ROUNDS name=port ...`
//! with MODE `simple` (a Query with the literal), `extended` (Parse, Bind,
//! Describe, Execute, Sync of an unnamed statement, as pgbench -M extended
//! sends them) or `prepared` (Bind, Execute, Sync of a statement prepared
//! once). Prints one JSON object per target.

use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

const QUERY: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
/// Rounds before measuring: connections, caches and the node's plan warm.
const WARM_UP: usize = 200;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Simple,
    Extended,
    Prepared,
}

struct Target {
    name: String,
    client: Client,
    prepared: Statement,
    latencies: Vec<Duration>,
}

impl Target {
    async fn run(&self, mode: Mode, aid: i32) -> Result<(), tokio_postgres::Error> {
        match mode {
            Mode::Simple => {
                let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
                self.client.simple_query(&sql).await.map(drop)
            }
            Mode::Extended => self
                .client
                .query_typed(QUERY, &[(&aid, Type::INT4)])
                .await
                .map(drop),
            Mode::Prepared => self.client.query(&self.prepared, &[&aid]).await.map(drop),
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: latency_probe simple|extended|prepared ROUNDS name=port [name=port ...]");
    std::process::exit(2);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    let mode = match args[0].as_str() {
        "simple" => Mode::Simple,
        "extended" => Mode::Extended,
        "prepared" => Mode::Prepared,
        _ => usage(),
    };
    let rounds: usize = args[1].parse().unwrap_or_else(|_| usage());
    let endpoints: Vec<(String, u16)> = args[2..]
        .iter()
        .map(|a| {
            let (name, port) = a.split_once('=').unwrap_or_else(|| usage());
            (name.to_string(), port.parse().unwrap_or_else(|_| usage()))
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut targets = Vec::new();
        for (name, port) in endpoints {
            let config = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
            let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
            tokio::spawn(connection);
            let prepared = client.prepare_typed(QUERY, &[Type::INT4]).await?;
            targets.push(Target {
                name,
                client,
                prepared,
                latencies: Vec::with_capacity(rounds),
            });
        }
        // xorshift: pgbench's uniform aid over scale 10, without a dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let n = targets.len();
        for round in 0..WARM_UP + rounds {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let aid = (state % 1_000_000) as i32 + 1;
            for k in 0..n {
                let target = &mut targets[(round + k) % n];
                let started = Instant::now();
                target.run(mode, aid).await?;
                if round >= WARM_UP {
                    target.latencies.push(started.elapsed());
                }
            }
        }
        let base: Vec<f64> = targets[0]
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1e6)
            .collect();
        for t in &targets {
            let us: Vec<f64> = t.latencies.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            let added: Vec<f64> = us.iter().zip(&base).map(|(x, b)| x - b).collect();
            println!(
                "{{\"target\": \"{}\", \"rounds\": {}, \"median_us\": {:.1}, \"added_us\": {:.1}}}",
                t.name,
                us.len(),
                median(us.clone()),
                median(added)
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

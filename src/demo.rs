//! `sluice demo`: a whole warehouse on this machine, for trying sluice.
//!
//! Starts two PostgreSQL warehouse nodes with a small sample schema
//! (`dwh.sales`) and sluice in front of the nodes, with a managed catalog
//! copy (`[catalog]` without `dsn`: sluice runs it, exactly as in
//! production); prints how to connect; Ctrl-C stops everything it started.

use std::path::PathBuf;

use crate::config::Config;
use crate::localpg::{ClusterOptions, LocalCluster};

const SAMPLE_SCHEMA: &str = "
CREATE SCHEMA sales;
COMMENT ON SCHEMA sales IS 'Sample data of the sluice demo';
CREATE TABLE sales.customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    country text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sales.products (
    id integer PRIMARY KEY,
    name text NOT NULL,
    price numeric(10,2) NOT NULL
);
CREATE TABLE sales.orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES sales.customers,
    product_id integer NOT NULL REFERENCES sales.products,
    quantity integer NOT NULL,
    ordered_at timestamptz NOT NULL
);
COMMENT ON TABLE sales.orders IS 'One row per order line';
INSERT INTO sales.customers (id, name, country)
    SELECT g, 'customer ' || g, (ARRAY['DE','FR','US','JP','BR'])[1 + g % 5] FROM generate_series(1, 1000) g;
INSERT INTO sales.products
    SELECT g, 'product ' || g, round((10 + g * 3.7)::numeric % 500, 2) FROM generate_series(1, 100) g;
INSERT INTO sales.orders
    SELECT g, 1 + g % 1000, 1 + g % 100, 1 + g % 7, timestamptz '2026-01-01' + g * interval '5 minutes'
    FROM generate_series(1, 50000) g;
CREATE VIEW sales.revenue_by_country AS
    SELECT c.country, sum(o.quantity * p.price) AS revenue
    FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id JOIN sales.products p ON p.id = o.product_id
    GROUP BY c.country;
ANALYZE;
";

/// Where the initdb template is kept between demo runs. Under the temp dir
/// rather than the home directory: as root, the `postgres` user that runs the
/// servers cannot enter /root.
fn cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("sluice-pg-cache-{}", unsafe { libc::geteuid() }))
}

struct Clusters {
    nodes: Vec<LocalCluster>,
    /// The managed catalog copy's data directory (removed at the end).
    catalog_dir: tempfile::TempDir,
}

fn start_clusters() -> Result<Clusters, String> {
    let opts = |name: &str| ClusterOptions::new(cache_dir()).with_name(name);
    let start = |name: &str| LocalCluster::start(&opts(name)).map_err(|e| e.to_string());
    eprintln!("starting two warehouse nodes ...");
    let nodes = vec![start("demo-node-1")?, start("demo-node-2")?];
    for node in &nodes {
        node.psql("postgres", "CREATE DATABASE dwh")
            .map_err(|e| e.to_string())?;
        node.psql("dwh", SAMPLE_SCHEMA).map_err(|e| e.to_string())?;
    }
    // Under the temp dir: as root the copy runs as `postgres`, which must
    // be able to enter every directory above its data directory.
    let catalog_dir = tempfile::Builder::new()
        .prefix("sluice-demo-catalog-")
        .tempdir()
        .map_err(|e| format!("cannot make a directory for the catalog copy: {e}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(catalog_dir.path(), std::fs::Permissions::from_mode(0o755));
    }
    Ok(Clusters { nodes, catalog_dir })
}

/// Runs the demo until Ctrl-C.
pub async fn run(port: u16) -> Result<(), String> {
    let clusters = tokio::task::spawn_blocking(start_clusters)
        .await
        .map_err(|e| format!("the cluster start-up task failed: {e}"))??;
    let nodes: Vec<String> = clusters
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.addr()))
        .collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\n\n\
         [warehouse]\nnodes = [{}]\nservice_user = \"postgres\"\nhealth_check_interval = \"1s\"\n\n\
         [catalog]\ndata_dir = {:?}\n\n\
         [admin]\nauth = \"trust\"\n",
        nodes.join(", "),
        clusters
            .catalog_dir
            .path()
            .join("data")
            .display()
            .to_string()
    );
    let config = Config::parse(&text, "(demo config)", std::path::Path::new("."))
        .map_err(|e| e.to_string())?;
    let running = crate::server::start(config, None)
        .await
        .map_err(|e| match e {
            crate::server::StartError::Bind { .. } => {
                format!("{e}; pick another port with `sluice demo --port 0`")
            }
            other => other.to_string(),
        })?;
    let listen = running.listen_addr;
    println!();
    println!("sluice demo is running.");
    println!(
        "  warehouse nodes: {} (database dwh, schema sales)",
        nodes.join(", ")
    );
    if let Some(copy) = &running.sluice.catalog_copy.managed {
        println!(
            "  catalog copy:    127.0.0.1:{} (managed by sluice, in {})",
            copy.port(),
            copy.data_dir().display()
        );
    }
    println!("  sluice:          {listen}");
    if let Some(m) = running.metrics_addr {
        println!("  health:          http://{m}/healthz  http://{m}/readyz");
    }
    println!();
    println!("Connect with:");
    println!(
        "  psql \"host={} port={} user=postgres dbname=dwh\"",
        listen.ip(),
        listen.port()
    );
    println!("and try (twice, to see round robin):");
    println!("  SELECT inet_server_port() AS node_port, count(*) FROM sales.orders;");
    println!("Catalog lookups (\\d sales.orders, \\dt sales.*) are answered by the catalog copy,");
    println!(
        "synced from a node at start; the nodes never see them. Create a table through sluice"
    );
    println!(
        "and \\dt shows it at once; create one on a node directly (psql -p <node port>) and it"
    );
    println!("shows within the change probe's 10 s. The admin console (no password: the demo");
    println!("listens on loopback only) shows where each database's copy stands:");
    println!(
        "  psql \"host={} port={} user=postgres dbname=sluice\" -c 'SHOW CATALOG'",
        listen.ip(),
        listen.port()
    );
    println!();
    println!("Ctrl-C stops sluice and the local servers.");

    wait_for_stop().await;
    eprintln!("stopping ...");
    running.stop_now().await;
    tokio::task::spawn_blocking(move || drop(clusters))
        .await
        .map_err(|e| format!("stopping the local servers failed: {e}"))?;
    Ok(())
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

//! Health checks: one task per node logs in with the service account and
//! runs `SELECT 1` every interval.
//!
//! A node leaves rotation after `unhealthy_after` failed checks in a row and
//! returns after `healthy_after` good ones, so a flapping node does not bounce
//! sessions around. Every transition is logged with its reason, exported
//! (`sluice_node_up`) and raised as an alert (node down, node back up).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertEvent, Alerts};
use crate::backend::Node;
use crate::generation::{Generation, Generations};

/// Runs the health check of `node` until the node is retired or sluice stops.
pub async fn run(
    node: Arc<Node>,
    generations: Generations,
    alerts: Arc<Alerts>,
    stop: CancellationToken,
) {
    let mut good_streak = 0u32;
    let mut bad_streak = 0u32;
    loop {
        let generation = generations.current();
        let warehouse = &generation.config.warehouse;
        let started = Instant::now();
        let verdict = check(node.addr(), &generation).await;
        node.metrics()
            .health_checked(started.elapsed(), verdict.is_ok());
        match verdict {
            Ok(()) => {
                good_streak += 1;
                bad_streak = 0;
                tracing::trace!(node = node.addr(), elapsed = ?started.elapsed(), "health check passed");
                if good_streak >= warehouse.healthy_after && node.set_healthy(true) {
                    tracing::info!(
                        node = node.addr(),
                        "node is healthy again and back in rotation"
                    );
                    alerts.raise(AlertEvent::NodeUp {
                        node: node.addr().to_string(),
                    });
                }
            }
            Err(reason) => {
                bad_streak += 1;
                good_streak = 0;
                tracing::debug!(node = node.addr(), %reason, "health check failed");
                // A kept connection to a failing node would fail its next client.
                node.close_idle(None);
                if bad_streak >= warehouse.unhealthy_after && node.set_healthy(false) {
                    tracing::warn!(node = node.addr(), %reason, "node failed its health check and is out of rotation");
                    alerts.raise(AlertEvent::NodeDown {
                        node: node.addr().to_string(),
                        reason,
                    });
                }
            }
        }
        node.close_idle(Some(warehouse.idle_timeout));
        let pause = warehouse.health_check_interval;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = node.retired().cancelled() => return,
            _ = stop.cancelled() => return,
        }
    }
}

/// One check: log in and run `SELECT 1` within the health-check timeout.
/// The error is a phrase for the log.
pub async fn check(addr: &str, generation: &Generation) -> Result<(), String> {
    let warehouse = &generation.config.warehouse;
    let timeout = warehouse.health_check_timeout;
    match tokio::time::timeout(timeout, check_inner(addr, generation)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn check_inner(addr: &str, generation: &Generation) -> Result<(), String> {
    let warehouse = &generation.config.warehouse;
    let client = generation
        .node_connector
        .service_client(
            addr,
            warehouse,
            "sluice health check",
            warehouse.health_check_timeout,
        )
        .await
        .map_err(|e| describe_pg_error(&e))?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| describe_pg_error(&e))?;
    Ok(())
}

/// tokio-postgres prints only "db error" for server errors; the server's
/// message is what an operator needs to read.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => crate::error_chain(e),
    }
}

//! The HTTP listener on `server.metrics_listen`: `/healthz` (the process
//! answers), `/readyz` (it can serve: a healthy node, not draining),
//! `/metrics` (Prometheus text format) and `/queries` (query statistics by
//! fingerprint as JSON: `?top=50&order=total_time`). hyper directly: a few fixed routes
//! need no framework.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::catalog::Freshness;
use crate::metrics::Metrics;
use crate::stats::{Order, QueryStats};

/// What the endpoints read.
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    /// Whether each database's catalog copy is current, rendered with the metrics.
    pub freshness: Arc<Freshness>,
    pub stats: Arc<QueryStats>,
    /// Why sluice should not get new clients now, if it should not.
    pub not_ready: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

pub async fn serve(endpoints: Arc<Endpoints>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&endpoints, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match (endpoints.not_ready)() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from({
                let mut text = endpoints.metrics.render();
                endpoints.freshness.render(&mut text);
                text
            })))
            .expect("static response parts are valid"),
        "/queries" => match queries_params(req.uri().query().unwrap_or("")) {
            Ok((top, order)) => {
                let rows = endpoints.stats.top(top, order);
                let body = serde_json::to_string_pretty(&serde_json::json!({
                    "fingerprints": endpoints.stats.len(),
                    "queries": rows,
                }))
                .expect("statistics serialize");
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("static response parts are valid")
            }
            Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics, /queries\n".into(),
        ),
    }
}

/// `top` (default 50, at most 10000) and `order` (default total_time).
fn queries_params(query: &str) -> Result<(usize, Order), String> {
    let mut top = 50;
    let mut order = Order::TotalTime;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "top" => {
                top = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| format!("top={value:?}: expected a number from 1 to 10000"))?
            }
            "order" => {
                order = Order::from_name(value)
                    .ok_or_else(|| format!("order={value:?}: expected one of {}", Order::NAMES))?
            }
            other => return Err(format!("unknown parameter {other:?}: use top and order")),
        }
    }
    Ok((top, order))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

//! The configuration file as written: a serde mirror of the TOML, with spans
//! kept on every value that validation may complain about, so that the
//! complaint can name its line. Defaults live here, next to the keys.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub warehouse: Option<Spanned<RawWarehouse>>,
    #[serde(default)]
    pub cluster: RawCluster,
    pub catalog: Option<RawCatalog>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    /// `[stats]`: query statistics by fingerprint.
    #[serde(default)]
    pub stats: RawStats,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub pooling: RawPooling,
}

/// `[auth]`: who checks the client's password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default = "defaults::auth_mode")]
    pub mode: Spanned<String>,
    #[serde(default = "defaults::auth_query")]
    pub auth_query: Spanned<String>,
    #[serde(default = "defaults::auth_cache")]
    pub cache: Spanned<String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        toml::from_str("").expect("every auth key has a default")
    }
}

/// `[pooling]`: node connections shared between client sessions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPooling {
    pub idle_detach: Option<Spanned<String>>,
    pub max_node_connections: Option<Spanned<i64>>,
    #[serde(default = "defaults::wait_timeout")]
    pub wait_timeout: Spanned<String>,
    /// `[[pooling.transaction]]`: clients pooled per transaction.
    #[serde(default)]
    pub transaction: Vec<Spanned<RawTransactionPooling>>,
}

/// One `[[pooling.transaction]]` entry: which clients, matched like rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransactionPooling {
    pub users: Option<Vec<Spanned<String>>>,
    pub applications: Option<Vec<Spanned<String>>>,
    pub databases: Option<Vec<Spanned<String>>>,
}

impl Default for RawPooling {
    fn default() -> Self {
        toml::from_str("").expect("every pooling key has a default")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// A budget for every query; rules with `action = "cancel"` set tighter ones.
    pub max_query_duration: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStats {
    #[serde(default = "defaults::stats_max_fingerprints")]
    pub max_fingerprints: Spanned<i64>,
}

impl Default for RawStats {
    fn default() -> Self {
        toml::from_str("").expect("every stats key has a default")
    }
}

/// One `[[rules]]` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<Spanned<String>>,
    pub users: Option<Vec<Spanned<String>>>,
    pub applications: Option<Vec<Spanned<String>>>,
    pub databases: Option<Vec<Spanned<String>>>,
    pub client_addrs: Option<Vec<Spanned<String>>>,
    pub pattern: Option<Spanned<String>>,
    pub fingerprint: Option<Spanned<String>>,
    pub tables: Option<Vec<Spanned<String>>>,
    pub statement: Option<Vec<Spanned<String>>>,
    pub cross_join: Option<bool>,
    pub select_star: Option<bool>,
    pub no_where: Option<bool>,
    pub no_limit: Option<bool>,
    pub min_joins: Option<Spanned<i64>>,
    pub action: Option<Spanned<String>>,
    pub max_duration: Option<Spanned<String>>,
    pub message: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "defaults::admin_auth")]
    pub auth: Spanned<String>,
    #[serde(default)]
    pub users: Vec<RawAdminUser>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        toml::from_str("").expect("every admin key has a default")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminUser {
    pub name: Spanned<String>,
    pub password: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default = "defaults::empty")]
    pub slack_webhook_url: Spanned<String>,
    #[serde(default = "defaults::alert_cooldown")]
    pub cooldown: Spanned<String>,
    #[serde(default = "defaults::yes")]
    pub send_resolved: bool,
    #[serde(default = "defaults::alert_group_wait")]
    pub group_wait: Spanned<String>,
    #[serde(default = "defaults::alert_evaluation_interval")]
    pub evaluation_interval: Spanned<String>,
    #[serde(default = "defaults::alert_timeout")]
    pub timeout: Spanned<String>,
    #[serde(default = "defaults::alert_max_retries")]
    pub max_retries: Spanned<i64>,
    #[serde(default = "defaults::alert_queue_size")]
    pub queue_size: Spanned<i64>,
    #[serde(default)]
    pub events: RawAlertEvents,
    #[serde(default)]
    pub thresholds: Vec<RawThreshold>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        toml::from_str("").expect("every alerts key has a default")
    }
}

/// Events that alert one by one, each on unless turned off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertEvents {
    #[serde(default = "defaults::yes")]
    pub node_down: bool,
    #[serde(default = "defaults::yes")]
    pub catalog_sync_failed: bool,
    #[serde(default = "defaults::yes")]
    pub query_cancelled: bool,
}

impl Default for RawAlertEvents {
    fn default() -> Self {
        toml::from_str("").expect("every alerts.events key has a default")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub name: Spanned<String>,
    pub metric: Spanned<String>,
    #[serde(default = "defaults::threshold_window")]
    pub window: Spanned<String>,
    pub above: Option<Spanned<f64>>,
    pub below: Option<Spanned<f64>>,
    #[serde(rename = "for", default = "defaults::threshold_for")]
    pub hold: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "defaults::listen")]
    pub listen: Spanned<String>,
    #[serde(default = "defaults::metrics_listen")]
    pub metrics_listen: Spanned<String>,
    #[serde(default = "defaults::max_client_connections")]
    pub max_client_connections: Spanned<i64>,
    #[serde(default = "defaults::worker_threads")]
    pub worker_threads: Spanned<i64>,
    pub max_client_connections_per_user: Option<Spanned<i64>>,
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Spanned<String>,
    #[serde(default = "defaults::startup_timeout")]
    pub startup_timeout: Spanned<String>,
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: Spanned<i64>,
    #[serde(default = "defaults::max_startup_packet_size")]
    pub max_startup_packet_size: Spanned<i64>,
    #[serde(default = "defaults::max_startup_parameters")]
    pub max_startup_parameters: Spanned<i64>,
    #[serde(default = "defaults::watch_config")]
    pub watch_config: bool,
    #[serde(default = "defaults::watch_interval")]
    pub watch_interval: Spanned<String>,
    #[serde(default = "defaults::cancel_rate")]
    pub cancel_rate: Spanned<i64>,
    #[serde(default = "defaults::cancel_burst")]
    pub cancel_burst: Spanned<i64>,
    pub tls: Option<RawServerTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        toml::from_str("").expect("every server key has a default")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default = "defaults::client_tls_mode")]
    pub mode: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWarehouse {
    #[serde(default = "defaults::dialect")]
    pub dialect: Spanned<String>,
    pub nodes: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "defaults::health_check_interval")]
    pub health_check_interval: Spanned<String>,
    #[serde(default = "defaults::health_check_timeout")]
    pub health_check_timeout: Spanned<String>,
    #[serde(default = "defaults::healthy_after")]
    pub healthy_after: Spanned<i64>,
    #[serde(default = "defaults::unhealthy_after")]
    pub unhealthy_after: Spanned<i64>,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Spanned<String>,
    #[serde(default = "defaults::idle_connections")]
    pub idle_connections: Spanned<i64>,
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Spanned<String>,
    #[serde(default = "defaults::service_user")]
    pub service_user: Spanned<String>,
    #[serde(default)]
    pub service_password: String,
    pub service_password_file: Option<Spanned<String>>,
    #[serde(default = "defaults::service_database")]
    pub service_database: Spanned<String>,
    pub tls: Option<RawNodeTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeTls {
    #[serde(default = "defaults::node_tls_mode")]
    pub mode: Spanned<String>,
    pub ca: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// An external catalog copy; absent: sluice runs its own (`data_dir`).
    pub dsn: Option<Spanned<String>>,
    #[serde(default = "defaults::catalog_data_dir")]
    pub data_dir: Spanned<String>,
    pub postgres_bin: Option<Spanned<String>>,
    #[serde(default = "defaults::catalog_probe_interval")]
    pub probe_interval: Spanned<String>,
    #[serde(default = "defaults::catalog_refresh_debounce")]
    pub refresh_debounce: Spanned<String>,
    #[serde(default = "defaults::catalog_max_incremental")]
    pub max_incremental: Spanned<i64>,
    /// Which catalog the sync copies; `warehouse.dialect` when absent.
    pub dialect: Option<Spanned<String>>,
    #[serde(default = "defaults::catalog_schemas")]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub allowed_functions: Vec<String>,
    #[serde(default = "defaults::catalog_pool_size")]
    pub pool_size: Spanned<i64>,
    #[serde(default = "defaults::catalog_acquire_timeout")]
    pub acquire_timeout: Spanned<String>,
    #[serde(default = "defaults::catalog_connect_timeout")]
    pub connect_timeout: Spanned<String>,
    #[serde(default = "defaults::catalog_retry_after")]
    pub retry_after: Spanned<String>,
    #[serde(default = "defaults::catalog_answer_timeout")]
    pub answer_timeout: Spanned<String>,
    pub sync_interval: Option<Spanned<String>>,
    #[serde(default = "defaults::classification_cache_size")]
    pub cache_size: Spanned<i64>,
    #[serde(default = "defaults::max_parse_size")]
    pub max_parse_size: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default = "defaults::instance_id")]
    pub instance_id: Spanned<RawInstanceId>,
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
    #[serde(default = "defaults::cancel_forward_rate")]
    pub cancel_forward_rate: Spanned<i64>,
    #[serde(default = "defaults::cancel_forward_burst")]
    pub cancel_forward_burst: Spanned<i64>,
    #[serde(default = "defaults::cancel_forward_timeout")]
    pub cancel_forward_timeout: Spanned<String>,
}

/// `instance_id = 2`, or `instance_id = "hostname"` (the ordinal a
/// StatefulSet puts at the end of the pod name, plus one).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawInstanceId {
    Number(i64),
    Text(String),
}

impl Default for RawCluster {
    fn default() -> Self {
        toml::from_str("").expect("every cluster key has a default")
    }
}

/// Defaults, one function per key (serde wants functions).
mod defaults {
    use toml::Spanned;

    fn s(v: &str) -> Spanned<String> {
        Spanned::new(0..0, v.to_string())
    }
    fn n(v: i64) -> Spanned<i64> {
        Spanned::new(0..0, v)
    }

    pub fn listen() -> Spanned<String> {
        s("127.0.0.1:5433")
    }
    pub fn auth_mode() -> Spanned<String> {
        s("passthrough")
    }
    pub fn auth_query() -> Spanned<String> {
        s("SELECT usename, passwd FROM pg_shadow WHERE usename = $1")
    }
    pub fn auth_cache() -> Spanned<String> {
        s("60s")
    }
    pub fn wait_timeout() -> Spanned<String> {
        s("30s")
    }
    pub fn metrics_listen() -> Spanned<String> {
        s("127.0.0.1:9187")
    }
    pub fn worker_threads() -> Spanned<i64> {
        n(0)
    }
    pub fn max_client_connections() -> Spanned<i64> {
        n(5000)
    }
    pub fn drain_timeout() -> Spanned<String> {
        s("30s")
    }
    pub fn startup_timeout() -> Spanned<String> {
        s("10s")
    }
    pub fn max_message_size() -> Spanned<i64> {
        n(64 << 20)
    }
    pub fn max_startup_packet_size() -> Spanned<i64> {
        n(10_000)
    }
    pub fn max_startup_parameters() -> Spanned<i64> {
        n(64)
    }
    pub fn watch_config() -> bool {
        true
    }
    pub fn watch_interval() -> Spanned<String> {
        s("2s")
    }
    pub fn cancel_rate() -> Spanned<i64> {
        n(100)
    }
    pub fn cancel_burst() -> Spanned<i64> {
        n(200)
    }
    pub fn max_parse_size() -> Spanned<i64> {
        n(64 << 10)
    }
    pub fn instance_id() -> Spanned<super::RawInstanceId> {
        Spanned::new(0..0, super::RawInstanceId::Number(1))
    }
    pub fn cancel_forward_rate() -> Spanned<i64> {
        n(100)
    }
    pub fn cancel_forward_burst() -> Spanned<i64> {
        n(200)
    }
    pub fn cancel_forward_timeout() -> Spanned<String> {
        s("2s")
    }
    pub fn client_tls_mode() -> Spanned<String> {
        s("prefer")
    }
    pub fn dialect() -> Spanned<String> {
        s("postgres")
    }
    pub fn health_check_interval() -> Spanned<String> {
        s("2s")
    }
    pub fn health_check_timeout() -> Spanned<String> {
        s("3s")
    }
    pub fn healthy_after() -> Spanned<i64> {
        n(1)
    }
    pub fn unhealthy_after() -> Spanned<i64> {
        n(1)
    }
    pub fn connect_timeout() -> Spanned<String> {
        s("5s")
    }
    pub fn idle_connections() -> Spanned<i64> {
        n(32)
    }
    pub fn idle_timeout() -> Spanned<String> {
        s("60s")
    }
    pub fn service_user() -> Spanned<String> {
        s("sluice")
    }
    pub fn service_database() -> Spanned<String> {
        s("postgres")
    }
    pub fn node_tls_mode() -> Spanned<String> {
        s("disable")
    }
    pub fn catalog_schemas() -> Vec<String> {
        ["pg_catalog", "information_schema", "v_catalog"]
            .map(String::from)
            .to_vec()
    }
    pub fn catalog_pool_size() -> Spanned<i64> {
        n(16)
    }
    pub fn catalog_acquire_timeout() -> Spanned<String> {
        s("1s")
    }
    pub fn catalog_connect_timeout() -> Spanned<String> {
        s("2s")
    }
    pub fn catalog_answer_timeout() -> Spanned<String> {
        s("5s")
    }
    pub fn catalog_retry_after() -> Spanned<String> {
        s("5s")
    }
    pub fn catalog_data_dir() -> Spanned<String> {
        s("sluice-catalog")
    }
    pub fn catalog_probe_interval() -> Spanned<String> {
        s("10s")
    }
    pub fn catalog_refresh_debounce() -> Spanned<String> {
        s("100ms")
    }
    pub fn catalog_max_incremental() -> Spanned<i64> {
        n(1000)
    }
    pub fn classification_cache_size() -> Spanned<i64> {
        n(10_000)
    }
    pub fn empty() -> Spanned<String> {
        s("")
    }
    pub fn yes() -> bool {
        true
    }
    pub fn admin_auth() -> Spanned<String> {
        s("scram")
    }
    pub fn alert_cooldown() -> Spanned<String> {
        s("10m")
    }
    pub fn alert_group_wait() -> Spanned<String> {
        s("10s")
    }
    pub fn alert_evaluation_interval() -> Spanned<String> {
        s("5s")
    }
    pub fn alert_timeout() -> Spanned<String> {
        s("10s")
    }
    pub fn alert_max_retries() -> Spanned<i64> {
        n(5)
    }
    pub fn alert_queue_size() -> Spanned<i64> {
        n(1024)
    }
    pub fn threshold_window() -> Spanned<String> {
        s("5m")
    }
    pub fn stats_max_fingerprints() -> Spanned<i64> {
        n(5000)
    }

    pub fn threshold_for() -> Spanned<String> {
        s("0s")
    }
}

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
    pub fn metrics_listen() -> Spanned<String> {
        s("127.0.0.1:9187")
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
    pub fn service_user() -> Spanned<String> {
        s("sluice")
    }
    pub fn service_database() -> Spanned<String> {
        s("postgres")
    }
    pub fn node_tls_mode() -> Spanned<String> {
        s("disable")
    }
}

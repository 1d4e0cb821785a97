//! The sidecar's one TOML file: plain data, defaults embedded (`default.toml`), every bound
//! checked at start with the key a person should change named in the error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The embedded defaults, also printed by `--print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value out of its bounds; `key` is the dotted TOML key to change.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bus: BusConfig,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    pub sessions: SessionsConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub address: String,
    pub token: String,
    pub ca_path: Option<PathBuf>,
    pub client_cert_path: Option<PathBuf>,
    pub client_key_path: Option<PathBuf>,
    pub timeout_ms: u64,
    pub max_frame_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    pub max_body_bytes: u64,
    pub sse_keepalive_ms: u64,
    pub max_history_limit: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    pub listen: String,
    pub max_message_bytes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    pub max_sessions: usize,
    pub idle_timeout_ms: u64,
    pub max_streams: usize,
    pub stream_buffer: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub reality: String,
    pub topics: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_route_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub idempotent: bool,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub reply_topic: String,
    #[serde(default)]
    pub response_type_url: String,
    pub token: Option<String>,
}

fn default_method() -> String {
    "POST".into()
}
fn default_route_timeout() -> u64 {
    5000
}
fn default_backoff() -> u64 {
    100
}
fn default_concurrency() -> usize {
    16
}

/// A listener address, resolved: `None` when it is "off".
pub fn listen_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value == "off" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not an address like 127.0.0.1:4730 ({e}), nor \"off\""),
        )
    })
}

/// Merges `overlay` into `base`, tables key by key (what a file leaves out keeps the default).
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (k, v) in overlay {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

impl Config {
    /// The embedded defaults alone.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_toml_str("<defaults>", "")
    }

    /// Reads `path` over the defaults and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&path.display().to_string(), &text)
    }

    /// Parses `text` over the defaults and validates; `origin` names it in errors.
    pub fn from_toml_str(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let parse = |origin: &str, text: &str| {
            toml::from_str::<toml::Value>(text).map_err(|e| ConfigError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            })
        };
        let mut value = parse("<defaults>", DEFAULT_TOML)?;
        merge(&mut value, parse(origin, text)?);
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn http_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("http.listen", &self.http.listen)
    }

    pub fn grpc_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("grpc.listen", &self.grpc.listen)
    }

    /// Whether the listeners speak TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert_path.is_some()
    }

    /// Every bound, with the key to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.bus;
        if b.address.is_empty() {
            return Err(invalid(
                "bus.address",
                "must name the bus, e.g. 127.0.0.1:4720",
            ));
        }
        if b.address.starts_with("tls://") && b.ca_path.is_none() {
            return Err(invalid(
                "bus.ca_path",
                "a tls:// bus.address needs the CA to trust",
            ));
        }
        if b.client_cert_path.is_some() != b.client_key_path.is_some() {
            return Err(invalid(
                "bus.client_cert_path",
                "bus.client_cert_path and bus.client_key_path go together (mTLS)",
            ));
        }
        in_range("bus.timeout_ms", b.timeout_ms, 100, 600_000)?;
        in_range("bus.max_frame_bytes", b.max_frame_bytes, 1024, 1 << 30)?;

        let h = &self.http;
        in_range("http.max_body_bytes", h.max_body_bytes, 1, 256 << 20)?;
        in_range("http.sse_keepalive_ms", h.sse_keepalive_ms, 100, 3_600_000)?;
        in_range(
            "http.max_history_limit",
            u64::from(h.max_history_limit),
            1,
            10_000_000,
        )?;
        in_range(
            "grpc.max_message_bytes",
            self.grpc.max_message_bytes,
            1024,
            256 << 20,
        )?;

        let http = self.http_listen()?;
        let grpc = self.grpc_listen()?;
        if http.is_none() && grpc.is_none() {
            return Err(invalid(
                "http.listen",
                "http.listen and grpc.listen are both \"off\": nothing would serve",
            ));
        }
        if http.is_some_and(|a| a.port() != 0) && http == grpc {
            return Err(invalid(
                "grpc.listen",
                "must differ from http.listen (each is its own listener)",
            ));
        }
        let t = &self.tls;
        if t.cert_path.is_some() != t.key_path.is_some() {
            return Err(invalid(
                "tls.cert_path",
                "tls.cert_path and tls.key_path go together",
            ));
        }
        for (key, addr) in [("http.listen", http), ("grpc.listen", grpc)] {
            if let Some(addr) = addr {
                if !addr.ip().is_loopback() && !self.tls_enabled() {
                    return Err(invalid(
                        key,
                        format!(
                            "{addr} is not a loopback address: set tls.cert_path and \
                             tls.key_path (TLS 1.3), or listen on 127.0.0.1"
                        ),
                    ));
                }
            }
        }

        let s = &self.sessions;
        in_range("sessions.max_sessions", s.max_sessions as u64, 1, 1_000_000)?;
        in_range(
            "sessions.idle_timeout_ms",
            s.idle_timeout_ms,
            1000,
            86_400_000,
        )?;
        in_range("sessions.max_streams", s.max_streams as u64, 1, 1_000_000)?;
        in_range(
            "sessions.stream_buffer",
            s.stream_buffer as u64,
            1,
            1_000_000,
        )?;

        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }

        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            r.validate(i)?;
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    format!("routes[{i}].name"),
                    format!("{:?} names two routes", r.name),
                ));
            }
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.bus.timeout_ms)
    }
}

impl RouteConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if !name_ok {
            return Err(invalid(key("name"), "must be non-empty [A-Za-z0-9_-]"));
        }
        if self.reality.is_empty() {
            return Err(invalid(key("reality"), "must name a reality"));
        }
        if self.topics.is_empty() {
            return Err(invalid(key("topics"), "must be a topic pattern"));
        }
        if reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
            return Err(invalid(key("method"), "is not an HTTP method"));
        }
        let probe = crate::southbound::render_url(&self.url, &Default::default());
        match reqwest::Url::parse(&probe) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => {
                return Err(invalid(
                    key("url"),
                    format!("scheme {:?} is not http or https", u.scheme()),
                ))
            }
            Err(e) => return Err(invalid(key("url"), format!("not a URL template: {e}"))),
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return Err(invalid(
                    key("headers"),
                    format!("{name:?} is not a valid header"),
                ));
            }
        }
        in_range(&key("timeout_ms"), self.timeout_ms, 1, 600_000)?;
        in_range(&key("retries"), u64::from(self.retries), 0, 10)?;
        if self.retries > 0 && !self.idempotent {
            return Err(invalid(
                key("retries"),
                "retries need idempotent = true: a call that is not idempotent is never retried",
            ));
        }
        in_range(&key("backoff_ms"), self.backoff_ms, 1, 60_000)?;
        in_range(
            &key("max_concurrency"),
            self.max_concurrency as u64,
            1,
            10_000,
        )?;
        Ok(())
    }
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("{value} is out of bounds ({min}..={max})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:4730");
        assert!(c.routes.is_empty());
    }

    #[test]
    fn a_bound_out_of_range_names_its_key() {
        let e = Config::from_toml_str("t", "[sessions]\nmax_sessions = 0\n").unwrap_err();
        assert!(e.to_string().starts_with("sessions.max_sessions:"), "{e}");
    }

    #[test]
    fn non_loopback_without_tls_is_refused() {
        let e = Config::from_toml_str("t", "[http]\nlisten = \"0.0.0.0:4730\"\n").unwrap_err();
        assert!(e.to_string().contains("http.listen"), "{e}");
        assert!(e.to_string().contains("tls.cert_path"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::from_toml_str("t", "[http]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn retries_without_idempotent_are_refused() {
        let text = r#"
[[routes]]
name = "r"
reality = "lab"
topics = "a.b"
url = "http://127.0.0.1:1/x"
retries = 2
"#;
        let e = Config::from_toml_str("t", text).unwrap_err();
        assert!(e.to_string().starts_with("routes[0].retries:"), "{e}");
    }
}

//! Southbound routes: a legacy HTTP service as an operator. Each route holds its own bus
//! session (the route's token, or `bus.token`), subscribes to (reality, topics), calls the
//! endpoint for each pulse with at most `max_concurrency` calls in flight (the subscription is not
//! read past that: the bus's slow-consumer policy then applies), and publishes the answer to the
//! pulse's `reply_to` (or the route's `reply_topic`).
//!
//! A failure (an error status, a timeout, a refused connection) is a pulse too: an error result
//! on the same reply topic — an `arqon.nvm.v1.NvmJobResult` with `error` and `final` when the
//! request was an `NvmJob`, else a JSON object. Only routes marked `idempotent` are retried, with
//! exponential backoff; every outcome is counted per route.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arqonbus_client::proto::nvm::v1::{NvmJob, NvmJobResult};
use arqonbus_client::proto::v1::ArqonMessage;
use arqonbus_client::{Client, ClientError, Outgoing};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio::sync::{watch, Semaphore};

use crate::config::RouteConfig;
use crate::metrics::Metrics;
use crate::sessions::BusTarget;

/// The type URL of error results that are not NVM jobs'.
pub const ERROR_TYPE_URL: &str = "application/vnd.arqon.sidecar.error+json";

/// Fills `{reality}`, `{topic}`, `{sequence}`, `{id}` and `{reply_to}` in a URL template, each
/// value percent-encoded. An unknown name is left as written.
pub fn render_url(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match vars.get(name) {
                    Some(v) => percent_encode(v, &mut out),
                    None if is_var(name) => {} // validation renders with no values
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_var(name: &str) -> bool {
    matches!(name, "reality" | "topic" | "sequence" | "id" | "reply_to")
}

fn percent_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn vars_of(m: &ArqonMessage) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("reality", m.reality_id.clone()),
        ("topic", m.topic.clone()),
        ("sequence", m.sequence.to_string()),
        ("id", m.id.clone()),
        ("reply_to", m.reply_to.clone()),
    ])
}

/// One configured route, running.
pub struct Route {
    config: RouteConfig,
    method: reqwest::Method,
    http: reqwest::Client,
    target: BusTarget,
    token: String,
    metrics: Arc<Metrics>,
    /// Largest answer body read: what the bus could take in one frame.
    max_response_bytes: usize,
}

/// How one call went.
enum Failure {
    Status { status: u16, body: String },
    Timeout,
    Transport(String),
    TooLarge,
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => *status >= 500 || *status == 429,
            Failure::Timeout | Failure::Transport(_) => true,
            Failure::TooLarge => false,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            _ => "error",
        }
    }
}

struct Answer {
    content_type: Option<String>,
    body: Bytes,
}

impl Route {
    pub fn new(
        config: RouteConfig,
        target: BusTarget,
        default_token: &str,
        metrics: Arc<Metrics>,
        max_response_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_max_idle_per_host(config.max_concurrency)
            .build()?;
        let method =
            reqwest::Method::from_bytes(config.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let token = config
            .token
            .clone()
            .unwrap_or_else(|| default_token.to_owned());
        Ok(Self {
            config,
            method,
            http,
            target,
            token,
            metrics,
            max_response_bytes,
        })
    }

    fn label(&self) -> &str {
        &self.config.name
    }

    /// Subscribes and serves until `stop`; a lost bus session is opened again, backing off.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(self.config.max_concurrency));
        let mut backoff = Duration::from_millis(100);
        loop {
            let served = tokio::select! {
                r = self.clone().serve_once(limit.clone()) => r,
                _ = stop.changed() => return,
            };
            match served {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(route = self.label(), error = %e, "route's bus session failed; reconnecting")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn serve_once(self: Arc<Self>, limit: Arc<Semaphore>) -> Result<(), ClientError> {
        let name = format!("arqonbus-sidecar/{}", self.config.name);
        let client = self
            .target
            .connect(&self.token, &name)
            .await
            .map_err(|e| ClientError::Protocol(e.message))?;
        let mut sub = client
            .subscribe(&self.config.reality, &self.config.topics)
            .await?;
        tracing::info!(
            route = self.label(),
            reality = %self.config.reality,
            topics = %self.config.topics,
            "route subscribed"
        );
        while let Some(item) = sub.next().await {
            match item {
                Ok(pulse) => {
                    let permit = limit
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the route's semaphore is never closed");
                    let route = self.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        route.handle(&client, pulse).await;
                        drop(permit);
                    });
                }
                Err(ClientError::Dropped { count }) => {
                    tracing::warn!(
                        route = self.label(),
                        count,
                        "the bus dropped pulses for this route"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Closed)
    }

    /// Calls the endpoint for one pulse and publishes the answer or the failure.
    async fn handle(&self, client: &Client, pulse: ArqonMessage) {
        let attempts = if self.config.idempotent {
            self.config.retries + 1
        } else {
            1
        };
        let mut result = Err(Failure::Transport("no attempt".into()));
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait = Duration::from_millis(self.config.backoff_ms) * (1 << (attempt - 1));
                tokio::time::sleep(wait).await;
                self.metrics.inc(
                    "arqonbus_sidecar_route_retries_total",
                    &[("route", self.label())],
                );
            }
            result = self.call(&pulse).await;
            match &result {
                Err(f) if f.retryable() => continue,
                _ => break,
            }
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(f) => f.outcome(),
        };
        self.metrics.inc(
            "arqonbus_sidecar_route_calls_total",
            &[("route", self.label()), ("outcome", outcome)],
        );
        let reply_topic = if pulse.reply_to.is_empty() {
            self.config.reply_topic.clone()
        } else {
            pulse.reply_to.clone()
        };
        if reply_topic.is_empty() {
            tracing::warn!(
                route = self.label(),
                sequence = pulse.sequence,
                "no reply_to and no reply_topic: the result is not sent"
            );
            self.metrics.inc(
                "arqonbus_sidecar_route_results_total",
                &[("route", self.label()), ("kind", "unsent")],
            );
            return;
        }
        let (kind, outgoing) = match result {
            Ok(answer) => ("reply", self.reply(&pulse, &reply_topic, answer)),
            Err(failure) => ("error", self.error_result(&pulse, &reply_topic, failure)),
        };
        let kind = match client.publish_acked(outgoing).await {
            Ok(_) => kind,
            Err(e) => {
                tracing::warn!(route = self.label(), error = %e, "the result could not be published");
                "unsent"
            }
        };
        self.metrics.inc(
            "arqonbus_sidecar_route_results_total",
            &[("route", self.label()), ("kind", kind)],
        );
    }

    async fn call(&self, pulse: &ArqonMessage) -> Result<Answer, Failure> {
        let url = render_url(&self.config.url, &vars_of(pulse));
        let payload = pulse.payload.clone().unwrap_or_default();
        let mut request = self
            .http
            .request(self.method.clone(), &url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header("x-arqon-reality", &pulse.reality_id)
            .header("x-arqon-topic", &pulse.topic)
            .header("x-arqon-sequence", pulse.sequence.to_string())
            .header("x-arqon-id", &pulse.id);
        if !payload.type_url.is_empty() {
            request = request.header("x-arqon-type-url", &payload.type_url);
            let content_type = if payload.type_url.contains('/')
                && !payload.type_url.starts_with("type.googleapis.com/")
            {
                payload.type_url.as_str()
            } else {
                "application/x-protobuf"
            };
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        for key in ["traceparent", "tracestate"] {
            if let Some(v) = pulse.trace_context.get(key) {
                request = request.header(key, v);
            }
        }
        for (k, v) in &self.config.headers {
            request = request.header(k, v);
        }
        let mut response = request
            .body(payload.value.to_vec())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(Failure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(Failure::Status {
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(Answer {
            content_type,
            body: Bytes::from(body),
        })
    }

    /// Correlation for a result: the request's trace context and its id and sequence.
    fn result_envelope(&self, request: &ArqonMessage, topic: &str) -> Outgoing {
        let mut trace: std::collections::HashMap<String, String> = request
            .trace_context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        trace.insert("arqon-request-id".into(), request.id.clone());
        trace.insert(
            "arqon-request-sequence".into(),
            request.sequence.to_string(),
        );
        Outgoing::new(&request.reality_id, topic)
            .producer(&format!("arqonbus-sidecar/{}", self.config.name))
            .trace_context(trace)
    }

    fn reply(&self, request: &ArqonMessage, topic: &str, answer: Answer) -> Outgoing {
        let type_url = if !self.config.response_type_url.is_empty() {
            self.config.response_type_url.clone()
        } else {
            answer
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into())
        };
        self.result_envelope(request, topic)
            .payload(&type_url, answer.body.to_vec())
    }

    fn error_result(&self, request: &ArqonMessage, topic: &str, failure: Failure) -> Outgoing {
        let (message, status) = match &failure {
            Failure::Status { status, body } => (
                format!(
                    "route {}: {} answered {status}: {body}",
                    self.config.name, self.config.method
                ),
                Some(*status),
            ),
            Failure::Timeout => (
                format!(
                    "route {}: no answer within {} ms (timeout_ms)",
                    self.config.name, self.config.timeout_ms
                ),
                None,
            ),
            Failure::Transport(e) => (format!("route {}: {e}", self.config.name), None),
            Failure::TooLarge => (
                format!(
                    "route {}: the answer is over {} bytes (bus.max_frame_bytes)",
                    self.config.name, self.max_response_bytes
                ),
                None,
            ),
        };
        let envelope = self.result_envelope(request, topic);
        let payload = request.payload.as_ref();
        let nvm_url = <NvmJob as prost::Name>::type_url();
        if let Some(job) = payload
            .filter(|p| p.type_url == nvm_url)
            .and_then(|p| NvmJob::decode(p.value.as_slice()).ok())
        {
            let result = NvmJobResult {
                job_id: job.job_id,
                r#final: true,
                progress: 0.0,
                data: Default::default(),
                error: message,
            };
            return envelope.message(&result);
        }
        let body = serde_json::json!({
            "route": self.config.name,
            "error": message,
            "status": status,
            "request_id": request.id,
            "request_sequence": request.sequence,
        });
        envelope.payload(ERROR_TYPE_URL, body.to_string().into_bytes())
    }
}

fn classify(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Transport(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_known_names_and_encode_values() {
        let vars = BTreeMap::from([
            ("topic", "rig.job.submit".to_string()),
            ("reality", "lab 1/x".to_string()),
        ]);
        assert_eq!(
            render_url("http://h/{reality}/{topic}?x={other}", &vars),
            "http://h/lab%201%2Fx/rig.job.submit?x={other}"
        );
        assert_eq!(render_url("http://h/{id}", &BTreeMap::new()), "http://h/");
    }
}

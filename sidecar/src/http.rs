//! Northbound HTTP: publish, history as JSON lines, subscribe as Server-Sent Events, and the
//! sidecar's own `/healthz` and `/metrics`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arqonbus_client::proto::v1::{
    history_get, start_position, ArqonMessage, HistoryGet, StartPosition,
};
use arqonbus_client::{ClientError, History, Outgoing, SubscribeOptions, Subscription};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use crate::error::{ApiError, Kind};
use crate::sessions::{Session, StreamGuard};
use crate::{json, App};

/// The HTTP listener's routes.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.http.max_body_bytes as usize;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/realities/{reality}/topics/{topic}", post(publish))
        .route("/v1/realities/{reality}/history", get(history))
        .route("/v1/realities/{reality}/subscribe", get(subscribe))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

async fn count_requests(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    app.metrics.inc(
        "arqonbus_sidecar_http_requests_total",
        &[("route", &path), ("status", response.status().as_str())],
    );
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

/// The caller's bearer token, passed to the bus as its session's token; empty without one.
pub fn bearer(value: Option<&str>) -> Result<String, ApiError> {
    let Some(value) = value else {
        return Ok(String::new());
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    token.map(str::to_owned).ok_or_else(|| {
        ApiError::new(
            Kind::Unauthenticated,
            "UNAUTHENTICATED",
            "the authorization header must be `Bearer <token>`",
        )
    })
}

fn header_token(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                Kind::Unauthenticated,
                "UNAUTHENTICATED",
                "the authorization header is not text",
            )
        })?),
    };
    bearer(value)
}

/// W3C trace context headers, for the pulse's `trace_context`.
fn trace_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let v = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), v.to_owned()))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct PublishQuery {
    #[serde(default)]
    ack: bool,
    /// The raw body's type URL (default `application/octet-stream`).
    type_url: Option<String>,
    reply_to: Option<String>,
}

async fn publish(
    State(app): State<Arc<App>>,
    Path((reality, topic)): Path<(String, String)>,
    Query(q): Query<PublishQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = header_token(&headers)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Kind::TooLarge,
                "BODY_TOO_LARGE",
                format!(
                    "the body is over {} bytes (http.max_body_bytes)",
                    app.config.http.max_body_bytes
                ),
            )
        } else {
            ApiError::invalid(format!("cannot read the body: {r}"))
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut message = ArqonMessage {
        reality_id: reality,
        topic,
        ..ArqonMessage::default()
    };
    if is_json {
        let envelope: json::Envelope = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the JSON envelope: {e}")))?;
        envelope.apply(&mut message)?;
    } else {
        message.payload = Some(prost_types::Any {
            type_url: q
                .type_url
                .unwrap_or_else(|| "application/octet-stream".into()),
            value: body.to_vec(),
        });
    }
    if let Some(r) = q.reply_to {
        message.reply_to = r;
    }
    // The caller's W3C headers, unless the envelope set the keys itself.
    for (k, v) in trace_headers(&headers) {
        message.trace_context.entry(k).or_insert(v);
    }
    let session = app.sessions.get(&token).await?;
    let outgoing = Outgoing::from_message(message);
    let result = if q.ack {
        session
            .client
            .publish_acked(outgoing)
            .await
            .map(|a| (StatusCode::OK, Json(json::ack(&a))).into_response())
    } else {
        session.client.publish(outgoing).await.map(|()| {
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"accepted": true})),
            )
                .into_response()
        })
    };
    let response = result.map_err(|e| {
        drop(session);
        app.sessions.forget_if_closed(&token);
        ApiError::from(e)
    })?;
    app.metrics
        .inc("arqonbus_sidecar_published_total", &[("surface", "http")]);
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    #[serde(default = "all_topics")]
    pattern: String,
    from_sequence: Option<u64>,
    from_time_unix_nanos: Option<u64>,
    to_sequence: Option<u64>,
    to_time_unix_nanos: Option<u64>,
    limit: Option<u32>,
}

fn all_topics() -> String {
    ">".into()
}

/// `GET /v1/realities/{reality}/history`: `application/x-ndjson`, one pulse per line, then
/// `{"end": {"count", "next_sequence"}}` (or `{"error": ...}` if the bus failed mid-way).
async fn history(
    State(app): State<Arc<App>>,
    Path(reality): Path<String>,
    Query(q): Query<HistoryQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = header_token(&headers)?;
    let max = app.config.http.max_history_limit;
    let limit = q.limit.unwrap_or(max);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid(format!(
            "limit {limit} is out of bounds (1..={max}, http.max_history_limit)"
        )));
    }
    let query = history_query(reality, q, limit)?;
    let guard = app.sessions.stream_guard()?;
    let session = app.sessions.get(&token).await?;
    let mut stream = session.client.history(query).await?;
    // The first answer decides the status: an error before any pulse is the request's error.
    let first = stream.next().await;
    if let Some(Err(e)) = first {
        return Err(e.into());
    }
    let lines = history_lines(app.clone(), first, stream, session, guard);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

fn history_query(reality: String, q: HistoryQuery, limit: u32) -> Result<HistoryGet, ApiError> {
    let from = match (q.from_sequence, q.from_time_unix_nanos) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give from_sequence or from_time_unix_nanos, not both",
            ))
        }
        (Some(s), None) => Some(history_get::From::FromSequence(s)),
        (None, Some(t)) => Some(history_get::From::FromTimeUnixNanos(t)),
        (None, None) => None,
    };
    let to = match (q.to_sequence, q.to_time_unix_nanos) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give to_sequence or to_time_unix_nanos, not both",
            ))
        }
        (Some(s), None) => Some(history_get::To::ToSequence(s)),
        (None, Some(t)) => Some(history_get::To::ToTimeUnixNanos(t)),
        (None, None) => None,
    };
    Ok(HistoryGet {
        reality_id: reality,
        pattern: q.pattern,
        from,
        to,
        limit,
    })
}

fn line(v: serde_json::Value) -> Result<Bytes, Infallible> {
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

fn history_lines(
    app: Arc<App>,
    first: Option<Result<ArqonMessage, ClientError>>,
    stream: History,
    session: Arc<Session>,
    guard: StreamGuard,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    struct State {
        first: Option<Option<Result<ArqonMessage, ClientError>>>,
        stream: History,
        done: bool,
        _session: Arc<Session>,
        _guard: StreamGuard,
        app: Arc<App>,
    }
    let state = State {
        first: Some(first),
        stream,
        done: false,
        _session: session,
        _guard: guard,
        app,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let item = match s.first.take() {
            Some(first) => first,
            None => s.stream.next().await,
        };
        let out = match item {
            Some(Ok(m)) => {
                s.app.metrics.inc(
                    "arqonbus_sidecar_delivered_total",
                    &[("surface", "history")],
                );
                json::pulse(&m)
            }
            Some(Err(e)) => {
                s.done = true;
                ApiError::from(e).body()
            }
            None => {
                s.done = true;
                let end = s.stream.end().cloned().unwrap_or_default();
                serde_json::json!({"end": {"count": end.count, "next_sequence": end.next_sequence}})
            }
        };
        Some((line(out), s))
    })
}

#[derive(Debug, Deserialize)]
struct SubscribeQuery {
    pattern: String,
    from_sequence: Option<u64>,
    from_time_unix_nanos: Option<u64>,
    last_n: Option<u64>,
    #[serde(default)]
    filter: String,
}

/// The start position a query asks for, at most one of them.
pub fn start_of(
    from_sequence: Option<u64>,
    from_time: Option<u64>,
    last_n: Option<u64>,
) -> Result<Option<StartPosition>, ApiError> {
    let position = match (from_sequence, from_time, last_n) {
        (None, None, None) => return Ok(None),
        (Some(s), None, None) => start_position::Position::FromSequence(s),
        (None, Some(t), None) => start_position::Position::FromTimeUnixNanos(t),
        (None, None, Some(n)) => start_position::Position::LastN(n),
        _ => {
            return Err(ApiError::invalid(
                "give at most one of from_sequence, from_time_unix_nanos, last_n",
            ))
        }
    };
    Ok(Some(StartPosition {
        position: Some(position),
    }))
}

/// `GET /v1/realities/{reality}/subscribe?pattern=...`: Server-Sent Events. Each pulse is an
/// event `pulse` (id = sequence, data = the pulse as JSON); pulses the bus dropped for this
/// stream are an event `dropped` with `{"count"}`; a failure ends the stream with `error`.
async fn subscribe(
    State(app): State<Arc<App>>,
    Path(reality): Path<String>,
    Query(q): Query<SubscribeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = header_token(&headers)?;
    let start = start_of(q.from_sequence, q.from_time_unix_nanos, q.last_n)?;
    let guard = app.sessions.stream_guard()?;
    let session = app.sessions.get(&token).await?;
    let options = SubscribeOptions {
        start,
        causal: false,
        filter: q.filter,
    };
    let sub = session
        .client
        .subscribe_with(&reality, &q.pattern, options)
        .await?;
    let events = sse_events(app.clone(), sub, session, guard);
    let keepalive = Duration::from_millis(app.config.http.sse_keepalive_ms);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response())
}

fn sse_events(
    app: Arc<App>,
    sub: Subscription,
    session: Arc<Session>,
    guard: StreamGuard,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    struct State {
        sub: Subscription,
        done: bool,
        _session: Arc<Session>,
        _guard: StreamGuard,
        app: Arc<App>,
    }
    let state = State {
        sub,
        done: false,
        _session: session,
        _guard: guard,
        app,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let event = match s.sub.next().await {
            Some(Ok(m)) => {
                s.app
                    .metrics
                    .inc("arqonbus_sidecar_delivered_total", &[("surface", "sse")]);
                Event::default()
                    .event("pulse")
                    .id(m.sequence.to_string())
                    .data(json::pulse(&m).to_string())
            }
            Some(Err(ClientError::Dropped { count })) => Event::default()
                .event("dropped")
                .data(serde_json::json!({ "count": count }).to_string()),
            Some(Err(e)) => {
                s.done = true;
                Event::default()
                    .event("error")
                    .data(ApiError::from(e).body().to_string())
            }
            None => {
                s.done = true;
                Event::default().event("error").data(
                    ApiError::new(
                        Kind::Unavailable,
                        "BUS_UNAVAILABLE",
                        "the subscription ended",
                    )
                    .body()
                    .to_string(),
                )
            }
        };
        Some((Ok(event), s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_and_others_refused() {
        assert_eq!(bearer(None).unwrap(), "");
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
    }

    #[test]
    fn two_start_positions_are_refused() {
        assert!(start_of(Some(1), None, Some(2)).is_err());
        assert!(start_of(None, None, None).unwrap().is_none());
    }
}

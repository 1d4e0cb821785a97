//! Northbound gRPC: the service `arqon.sidecar.v1.Bus` (proto/arqon/sidecar/v1/sidecar.proto).

use std::pin::Pin;
use std::sync::Arc;

use arqonbus_client::proto::v1::{ArqonMessage, HistoryGet};
use arqonbus_client::{ClientError, Outgoing, SubscribeOptions};
use futures::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::pb::bus_server::{Bus, BusServer};
use crate::pb::{
    subscribe_event, PublishRequest, PublishResponse, SubscribeEvent, SubscribeRequest,
};
use crate::App;

type EventStream = Pin<Box<dyn Stream<Item = Result<SubscribeEvent, Status>> + Send>>;
type PulseStream = Pin<Box<dyn Stream<Item = Result<ArqonMessage, Status>> + Send>>;

/// The gRPC listener's routes.
pub fn router(app: Arc<App>) -> axum::Router {
    let max = app.config.grpc.max_message_bytes as usize;
    let service = BusServer::new(BusService { app })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    tonic::service::Routes::new(service).into_axum_router()
}

pub struct BusService {
    app: Arc<App>,
}

fn token(metadata: &MetadataMap) -> Result<String, Status> {
    let value = match metadata.get("authorization") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?,
        ),
    };
    crate::http::bearer(value).map_err(Status::from)
}

impl BusService {
    fn count(&self, method: &str, result: &Result<impl Sized, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.app.metrics.inc(
            "arqonbus_sidecar_grpc_requests_total",
            &[("method", method), ("code", &format!("{code:?}"))],
        );
    }

    async fn publish_inner(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let token = token(request.metadata())?;
        let trace: Vec<(String, String)> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| {
                let v = request.metadata().get(k)?.to_str().ok()?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect();
        let PublishRequest { message, ack } = request.into_inner();
        let mut message =
            message.ok_or_else(|| Status::invalid_argument("PublishRequest.message is missing"))?;
        for (k, v) in trace {
            message.trace_context.entry(k).or_insert(v);
        }
        let session = self.app.sessions.get(&token).await?;
        let outgoing = Outgoing::from_message(message);
        let result = if ack {
            session
                .client
                .publish_acked(outgoing)
                .await
                .map(|a| PublishResponse { ack: Some(a) })
        } else {
            session
                .client
                .publish(outgoing)
                .await
                .map(|()| PublishResponse { ack: None })
        };
        let response = result.map_err(|e| {
            drop(session);
            self.app.sessions.forget_if_closed(&token);
            Status::from(ApiError::from(e))
        })?;
        self.app
            .metrics
            .inc("arqonbus_sidecar_published_total", &[("surface", "grpc")]);
        Ok(Response::new(response))
    }

    async fn subscribe_inner(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let token = token(request.metadata())?;
        let req = request.into_inner();
        let guard = self.app.sessions.stream_guard()?;
        let session = self.app.sessions.get(&token).await?;
        let options = SubscribeOptions {
            start: req.start,
            causal: false,
            filter: req.filter,
        };
        let sub = session
            .client
            .subscribe_with(&req.reality_id, &req.pattern, options)
            .await
            .map_err(ApiError::from)?;
        let app = self.app.clone();
        let events = futures::stream::unfold(
            (sub, false, session, guard, app),
            |(mut sub, done, session, guard, app)| async move {
                if done {
                    return None;
                }
                let (item, done) = match sub.next().await {
                    Some(Ok(m)) => {
                        app.metrics
                            .inc("arqonbus_sidecar_delivered_total", &[("surface", "grpc")]);
                        let event = SubscribeEvent {
                            event: Some(subscribe_event::Event::Pulse(m)),
                        };
                        (Ok(event), false)
                    }
                    Some(Err(ClientError::Dropped { count })) => {
                        let event = SubscribeEvent {
                            event: Some(subscribe_event::Event::Dropped(count)),
                        };
                        (Ok(event), false)
                    }
                    Some(Err(e)) => (Err(Status::from(ApiError::from(e))), true),
                    None => (Err(Status::unavailable("the subscription ended")), true),
                };
                Some((item, (sub, done, session, guard, app)))
            },
        );
        Ok(Response::new(Box::pin(events)))
    }

    async fn history_inner(
        &self,
        request: Request<HistoryGet>,
    ) -> Result<Response<PulseStream>, Status> {
        let token = token(request.metadata())?;
        let mut query = request.into_inner();
        let max = self.app.config.http.max_history_limit;
        if query.limit == 0 {
            query.limit = max;
        }
        if query.limit > max {
            return Err(Status::invalid_argument(format!(
                "limit {} is over http.max_history_limit ({max})",
                query.limit
            )));
        }
        let guard = self.app.sessions.stream_guard()?;
        let session = self.app.sessions.get(&token).await?;
        let mut stream = session
            .client
            .history(query)
            .await
            .map_err(ApiError::from)?;
        // An error before any pulse is the call's status, not a stream item.
        let first = stream.next().await;
        if let Some(Err(e)) = first {
            return Err(ApiError::from(e).into());
        }
        let app = self.app.clone();
        let head = futures::stream::iter(first);
        let held = (session, guard);
        let pulses = head.chain(stream).map(move |item| {
            let _held = &held;
            match item {
                Ok(m) => {
                    app.metrics
                        .inc("arqonbus_sidecar_delivered_total", &[("surface", "grpc")]);
                    Ok(m)
                }
                Err(e) => Err(Status::from(ApiError::from(e))),
            }
        });
        Ok(Response::new(Box::pin(pulses)))
    }
}

#[tonic::async_trait]
impl Bus for BusService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let result = self.publish_inner(request).await;
        self.count("Publish", &result);
        result
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let result = self.subscribe_inner(request).await;
        self.count("Subscribe", &result);
        result
    }

    type HistoryStream = PulseStream;

    async fn history(&self, request: Request<HistoryGet>) -> Result<Response<PulseStream>, Status> {
        let result = self.history_inner(request).await;
        self.count("History", &result);
        result
    }
}

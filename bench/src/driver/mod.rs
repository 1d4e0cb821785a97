//! One interface over both buses: publishers that send benchmark pulses, subscribers that
//! receive them. Enum dispatch keeps the hot loops free of boxed futures.

pub mod arqon;
pub mod nats;

use std::fmt;
use std::sync::atomic::Ordering;

use anyhow::Result;
use arqonbus_proto::v1::SpectralMetadata;
use bytes::Bytes;

use crate::payload::Header;
use crate::target::{Kind, Target};

/// An error frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: i32,
    pub name: String,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server error {} {}: {}",
            self.code, self.name, self.message
        )
    }
}

impl std::error::Error for ServerError {}

/// What a subscriber receives.
#[derive(Debug)]
pub enum Event {
    /// A pulse's payload.
    Msg(Bytes),
    /// The server shed this many pulses for a subscription (ArqonBus `Dropped`).
    Dropped(u64),
    ServerError(ServerError),
    /// Any other frame.
    Other,
    /// The connection ended.
    Closed,
}

/// Names of the realities (ArqonBus) or subject prefixes (NATS) a run uses. A per-run tag keeps
/// runs apart when several share a server.
#[derive(Debug, Clone)]
pub struct Names {
    pub realities: Vec<String>,
    /// The run's tag, for scenarios that name realities of their own.
    pub tag: String,
}

impl Names {
    pub fn new(kind: Kind, run_tag: &str, count: usize) -> Names {
        let realities = (0..count.max(1))
            .map(|i| match kind {
                Kind::Arqon => format!("bench-{run_tag}-r{i}"),
                Kind::Nats => format!("bench.{run_tag}.r{i}"),
            })
            .collect();
        Names {
            realities,
            tag: run_tag.to_string(),
        }
    }
}

/// Counts of trouble a connection reported, for the run's notes.
#[derive(Debug, Default, Clone)]
pub struct Trouble {
    pub server_errors: u64,
    pub client_drops: u64,
    pub disconnects: u64,
    pub last_error: Option<String>,
}

pub enum Publisher {
    Arqon(arqon::Publisher),
    Nats(nats::Publisher),
}

impl Publisher {
    pub async fn connect(target: &Target, names: &Names, name: &str) -> Result<Publisher> {
        Ok(match target.kind {
            Kind::Arqon => {
                let s = arqon::connect(target.addr, None, name).await?;
                Publisher::Arqon(s.into_publisher(&names.realities, name))
            }
            Kind::Nats => Publisher::Nats(
                nats::Publisher::connect(target.addr, &names.realities, name).await?,
            ),
        })
    }

    /// Sends (or queues, for a batched write) one pulse.
    pub async fn send(&mut self, reality: usize, header: &Header, size: usize) -> Result<()> {
        match self {
            Publisher::Arqon(p) => p.send(reality, header, size, false).await.map(|_| ()),
            Publisher::Nats(p) => p.send(reality, header, size).await,
        }
    }

    /// Sends one pulse on route `route` with spectral metadata: ArqonBus in the envelope
    /// (`ArqonMessage.spectral`), NATS after the header in the payload.
    pub async fn send_spectral(
        &mut self,
        route: usize,
        header: &Header,
        size: usize,
        spectral: &SpectralMetadata,
    ) -> Result<()> {
        match self {
            Publisher::Arqon(p) => p
                .send_with(route, false, |m| {
                    if let Some(any) = m.payload.as_mut() {
                        header.write(&mut any.value, size);
                    }
                    m.spectral = Some(spectral.clone());
                })
                .await
                .map(|_| ()),
            Publisher::Nats(p) => {
                p.send_payload(route, crate::payload::with_spectral(header, size, spectral))
                    .await
            }
        }
    }

    /// Pushes everything queued onto the socket.
    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Publisher::Arqon(p) => p.flush().await,
            Publisher::Nats(p) => p.flush().await,
        }
    }

    pub fn trouble(&self) -> Trouble {
        match self {
            Publisher::Arqon(p) => {
                let a = p.answers();
                Trouble {
                    server_errors: a.errors.load(Ordering::Relaxed),
                    client_drops: 0,
                    disconnects: a.closed.load(Ordering::Relaxed),
                    last_error: a
                        .last_error
                        .lock()
                        .expect("not poisoned")
                        .as_ref()
                        .map(|e| e.to_string()),
                }
            }
            Publisher::Nats(p) => nats_trouble(&p.events),
        }
    }
}

pub enum Subscriber {
    Arqon(arqon::Subscriber),
    Nats(nats::Subscriber),
}

impl Subscriber {
    /// Connects and subscribes to every reality; returns once the subscriptions are live.
    pub async fn connect(target: &Target, names: &Names, name: &str) -> Result<Subscriber> {
        Ok(match target.kind {
            Kind::Arqon => {
                let mut s = arqon::connect(target.addr, None, name).await?;
                s.subscribe(&names.realities, arqon::TOPIC).await?;
                Subscriber::Arqon(s.into_subscriber())
            }
            Kind::Nats => Subscriber::Nats(
                nats::Subscriber::connect(target.addr, &names.realities, name).await?,
            ),
        })
    }

    pub async fn next(&mut self) -> Result<Event> {
        match self {
            Subscriber::Arqon(s) => s.next().await,
            Subscriber::Nats(s) => s.next().await,
        }
    }

    /// Trouble the client library saw on its own (NATS client-side slow-consumer drops).
    pub fn trouble(&self) -> Trouble {
        match self {
            Subscriber::Arqon(_) => Trouble::default(),
            Subscriber::Nats(s) => nats_trouble(&s.events),
        }
    }
}

fn nats_trouble(e: &nats::Events) -> Trouble {
    Trouble {
        server_errors: e.server_errors.load(Ordering::Relaxed),
        client_drops: e.slow_consumer.load(Ordering::Relaxed),
        disconnects: e.disconnects.load(Ordering::Relaxed),
        last_error: e.last_error.lock().expect("not poisoned").clone(),
    }
}

//! The NATS peer, on the async-nats client.
//!
//! Each harness connection is its own `async_nats::Client` (its own TCP connection), as each
//! ArqonBus connection is, so both buses see the same number of sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, ConnectOptions, Subject};
use bytes::Bytes;
use futures::stream::{SelectAll, StreamExt};

use super::Event;
use crate::payload::Header;

/// Messages the client buffers per subscription before it drops them as a slow consumer. The
/// default (65,536) is raised so that a burst the harness is about to drain is not counted as
/// the server's loss.
const SUBSCRIPTION_CAPACITY: usize = 1 << 18;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client library reported about a connection, through its event callback.
#[derive(Default)]
pub struct Events {
    /// Messages dropped by the client because a subscription's buffer was full.
    pub slow_consumer: AtomicU64,
    pub server_errors: AtomicU64,
    pub disconnects: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// The subject a benchmark pulse of `reality` travels on.
pub fn subject(reality: &str) -> String {
    format!("{reality}.pulse")
}

pub async fn connect(addr: SocketAddr, name: &str) -> Result<(Client, Arc<Events>)> {
    let events = Arc::new(Events::default());
    let ev = events.clone();
    let client = ConnectOptions::new()
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connection_timeout(Duration::from_secs(10))
        .event_callback(move |event| {
            let ev = ev.clone();
            async move {
                match event {
                    async_nats::Event::SlowConsumer(_) => {
                        ev.slow_consumer.fetch_add(1, Ordering::Relaxed);
                    }
                    async_nats::Event::ServerError(e) => {
                        ev.server_errors.fetch_add(1, Ordering::Relaxed);
                        *ev.last_error.lock().expect("not poisoned") = Some(e.to_string());
                    }
                    async_nats::Event::Disconnected => {
                        ev.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
        .connect(format!("nats://{addr}"))
        .await
        .with_context(|| format!("connecting to NATS at {addr}"))?;
    Ok((client, events))
}

pub struct Publisher {
    client: Client,
    subjects: Vec<Subject>,
    pub events: Arc<Events>,
}

impl Publisher {
    pub async fn connect(addr: SocketAddr, realities: &[String], name: &str) -> Result<Self> {
        let (client, events) = connect(addr, name).await?;
        let subjects = realities
            .iter()
            .map(|r| Subject::from(subject(r)))
            .collect();
        Ok(Publisher {
            client,
            subjects,
            events,
        })
    }

    /// A publisher on explicit subjects (route `i` is `subjects[i]`).
    pub async fn connect_subjects(
        addr: SocketAddr,
        subjects: &[String],
        name: &str,
    ) -> Result<Self> {
        let (client, events) = connect(addr, name).await?;
        Ok(Publisher {
            client,
            subjects: subjects.iter().map(|s| Subject::from(s.as_str())).collect(),
            events,
        })
    }

    /// Publishes `payload` on route `route`.
    pub async fn send_payload(&mut self, route: usize, payload: Bytes) -> Result<()> {
        self.client
            .publish(self.subjects[route].clone(), payload)
            .await
            .context("NATS publish")?;
        Ok(())
    }

    pub async fn send(&mut self, reality: usize, header: &Header, size: usize) -> Result<()> {
        let payload = header.to_payload(size);
        self.client
            .publish(self.subjects[reality].clone(), payload)
            .await
            .context("NATS publish")?;
        Ok(())
    }

    /// Waits until everything published so far is written to the socket.
    pub async fn flush(&mut self) -> Result<()> {
        self.client.flush().await.context("NATS flush")?;
        Ok(())
    }
}

pub struct Subscriber {
    _client: Client,
    subs: SelectAll<async_nats::Subscriber>,
    pub events: Arc<Events>,
}

impl Subscriber {
    /// Subscribes to every reality's subject and returns once the server has registered the
    /// subscriptions. NATS has no Subscribed answer; instead the client publishes to a private
    /// probe subject it also subscribed to, after its real subscriptions: the server handles a
    /// connection's operations in order, so when the probe comes back the subscriptions are in
    /// place.
    pub async fn connect(addr: SocketAddr, realities: &[String], name: &str) -> Result<Self> {
        let subjects: Vec<String> = realities.iter().map(|r| subject(r)).collect();
        Self::connect_subjects(addr, &subjects, name).await
    }

    /// Subscribes to explicit subjects; returns once the server has registered them.
    pub async fn connect_subjects(
        addr: SocketAddr,
        subjects: &[String],
        name: &str,
    ) -> Result<Self> {
        let (client, events) = connect(addr, name).await?;
        let mut subs = SelectAll::new();
        for subject in subjects {
            subs.push(
                client
                    .subscribe(subject.clone())
                    .await
                    .context("NATS subscribe")?,
            );
        }
        let probe = client.new_inbox();
        let mut probe_sub = client
            .subscribe(probe.clone())
            .await
            .context("NATS subscribe")?;
        client.publish(probe, Bytes::from_static(b"ready")).await?;
        client.flush().await?;
        match tokio::time::timeout(READY_TIMEOUT, probe_sub.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("NATS connection closed while subscribing"),
            Err(_) => bail!("NATS did not confirm the subscriptions within {READY_TIMEOUT:?}"),
        }
        probe_sub.unsubscribe().await.ok();
        Ok(Subscriber {
            _client: client,
            subs,
            events,
        })
    }

    /// The next message. Cancel-safe.
    pub async fn next(&mut self) -> Result<Event> {
        Ok(match self.subs.next().await {
            Some(msg) => Event::Msg(msg.payload),
            None => Event::Closed,
        })
    }
}

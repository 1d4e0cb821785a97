//! Tenant A's floods. Each runs from the start of its phase to the phase's deadline, on the
//! harness's flood runtime, and counts what it did in shared counters as it goes, so that a
//! flood cut off at the deadline (a write blocked because the bus stopped reading, say) still
//! reports everything up to that moment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::future::join_all;
use tokio::time::Instant;

use super::plan::FloodKind;
use crate::driver::arqon::{self, HistoryEvent, Incoming, Session, TOPIC};
use crate::driver::ServerError;
use crate::payload::{now_ns, Header};
use crate::placement::connect_on_shard;

/// What every flood needs to know.
#[derive(Debug, Clone)]
pub struct FloodSetup {
    pub addr: SocketAddr,
    /// Tenant A's Hello token.
    pub token: String,
    pub shards: u32,
    /// Connections (churn: connection slots) per shard.
    pub connections: usize,
    pub payload_bytes: usize,
    /// Per shard: the reality of A's that shard owns, for the publish flood.
    pub publish_realities: Vec<String>,
    /// Per shard: the retained realities its history readers take in turn.
    pub history_realities: Vec<Vec<String>>,
    pub history_inflight: usize,
    pub policy_reality: String,
    pub policy_inflight: usize,
    /// Longest a churn handshake may take before it counts as failed.
    pub handshake_timeout: Duration,
}

/// What one shard's share of a flood did.
#[derive(Default)]
pub struct ShardCounters {
    /// Publishes handed to the socket (publish), history reads answered (history), publishes
    /// answered (policy), handshakes completed on this shard (churn).
    pub ops: AtomicU64,
    /// Pulses delivered to A's subscriber (publish), pulses read (history), publishes accepted
    /// (policy).
    pub pulses: AtomicU64,
    /// Pulses the bus shed for A's subscriber (publish).
    pub shed: AtomicU64,
    /// Refusals by error code.
    pub refused: Mutex<BTreeMap<String, u64>>,
}

/// The counters of one flood phase.
pub struct FloodCounters {
    pub shards: Vec<ShardCounters>,
    /// Connections that could not be made or ended early, handshakes that failed: by kind.
    pub failures: Mutex<BTreeMap<String, u64>>,
}

impl FloodCounters {
    pub fn new(shards: u32) -> Self {
        FloodCounters {
            shards: (0..shards).map(|_| ShardCounters::default()).collect(),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    fn fail(&self, what: String) {
        add(&self.failures, what, 1);
    }
}

/// How a flood went, besides its counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodTimes {
    /// Connecting and placing the flood's connections, before it started.
    pub setup_ms: f64,
    /// From the end of the setup to the deadline (or to the end of the last connection).
    pub active_secs: f64,
}

fn add(map: &Mutex<BTreeMap<String, u64>>, key: String, n: u64) {
    *map.lock().expect("not poisoned").entry(key).or_insert(0) += n;
}

/// Runs one flood until `deadline`.
pub async fn run(
    kind: FloodKind,
    setup: Arc<FloodSetup>,
    counters: Arc<FloodCounters>,
    deadline: Instant,
) -> FloodTimes {
    let began = Instant::now();
    let work = match kind {
        FloodKind::Publish => publish(&setup, &counters).await,
        FloodKind::History => history(&setup, &counters).await,
        FloodKind::Policy => policy(&setup, &counters).await,
        FloodKind::Churn => churn(&setup, &counters),
    };
    let started = Instant::now();
    // Every connection's loop ends with an error or at the deadline, whichever comes first;
    // at the deadline they are dropped, which closes their connections.
    let _ = tokio::time::timeout_at(deadline, join_all(work)).await;
    FloodTimes {
        setup_ms: started.duration_since(began).as_secs_f64() * 1e3,
        active_secs: Instant::now()
            .min(deadline)
            .duration_since(started)
            .as_secs_f64(),
    }
}

type Work = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Wraps one connection's loop: its error, if it ends in one, is counted as a failure.
fn task(
    counters: &Arc<FloodCounters>,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<()>> + Send + 'static,
) -> Work {
    let counters = counters.clone();
    Box::pin(async move {
        if let Err(e) = fut.await {
            counters.fail(format!("{what}: {}", failure_kind(&e)));
        }
    })
}

/// One flood connection's loop, given its connection, shard, index on the shard, the setup and
/// the shard's counters.
type Each<F> = fn(Session, u32, u32, Arc<FloodSetup>, Arc<FloodCounters>) -> F;

/// Places `connections` connections with A's token on every shard (the ones that cannot be
/// placed are counted as failures) and hands each to `each`; the loops start when the returned
/// work is polled.
async fn on_every_shard<F>(
    setup: &Arc<FloodSetup>,
    counters: &Arc<FloodCounters>,
    what: &'static str,
    each: Each<F>,
) -> Vec<Work>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut work = Vec::new();
    for shard in 0..setup.shards {
        let placed =
            join_all((0..setup.connections).map(|i| {
                let name = format!("tenant-a-{}-{shard}-{i}", what.replace(' ', "-"));
                async move {
                    connect_on_shard(setup.addr, &name, &setup.token, shard, setup.shards).await
                }
            }))
            .await;
        for (i, r) in placed.into_iter().enumerate() {
            match r {
                Ok(session) => work.push(task(
                    counters,
                    what,
                    each(session, shard, i as u32, setup.clone(), counters.clone()),
                )),
                Err(e) => counters.fail(format!("placing a {what}: {}", failure_kind(&e))),
            }
        }
    }
    work
}

/// Publish flood: on every shard, one subscriber of A's reality owned there and `connections`
/// publishers writing to it without acks as fast as the bus reads them.
async fn publish(setup: &Arc<FloodSetup>, counters: &Arc<FloodCounters>) -> Vec<Work> {
    let mut work = Vec::new();
    for shard in 0..setup.shards {
        let reality = setup.publish_realities[shard as usize].clone();
        let subscriber = async {
            let mut s = connect_on_shard(
                setup.addr,
                "tenant-a-drain",
                &setup.token,
                shard,
                setup.shards,
            )
            .await?;
            s.subscribe(std::slice::from_ref(&reality), TOPIC).await?;
            Ok::<_, anyhow::Error>(s)
        };
        match subscriber.await {
            Ok(s) => {
                let c = counters.clone();
                work.push(task(counters, "A's subscriber", async move {
                    drain(s, &c.shards[shard as usize]).await
                }));
            }
            Err(e) => counters.fail(format!("A's subscriber: {}", failure_kind(&e))),
        }
    }
    let publishers = on_every_shard(
        setup,
        counters,
        "publisher",
        |s, shard, i, setup, c| async move {
            let reality = &setup.publish_realities[shard as usize];
            publish_unacked(
                s,
                reality,
                i,
                setup.payload_bytes,
                &c.shards[shard as usize],
            )
            .await
        },
    );
    work.extend(publishers.await);
    work
}

/// Counts what A's subscriber receives.
async fn drain(session: Session, c: &ShardCounters) -> Result<()> {
    let mut sub = session.into_subscriber();
    loop {
        match sub.next_incoming().await? {
            Incoming::Deliver { .. } => {
                c.pulses.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Dropped { count, .. } => {
                c.shed.fetch_add(count, Ordering::Relaxed);
            }
            Incoming::ServerError(e) => add(&c.refused, e.name, 1),
            Incoming::Other => {}
            Incoming::Closed => return Err(anyhow!("the server closed the connection")),
        }
    }
}

/// Publishes handed to the socket between two counts.
const PUBLISH_BATCH: u64 = 64;

async fn publish_unacked(
    session: Session,
    reality: &str,
    index: u32,
    size: usize,
    c: &ShardCounters,
) -> Result<()> {
    let mut p = session.into_publisher(&[reality.to_string()], "tenant-a-flood");
    let mut answers = p.take_acks().context("the answer stream")?;
    // Refusals of publishes without ack come at most every 100 ms per connection, each saying
    // how many publishes it stands for.
    let refusals = async {
        while let Some(a) = answers.recv().await {
            if let Err(e) = a.result {
                add(&c.refused, e.name.clone(), refusals_reported(&e.message));
            }
        }
    };
    let sending = async {
        let mut seq = 0u64;
        loop {
            for _ in 0..PUBLISH_BATCH {
                p.send(0, &flood_header(index, seq), size, false).await?;
                seq += 1;
            }
            p.flush().await?;
            c.ops.fetch_add(PUBLISH_BATCH, Ordering::Relaxed);
        }
    };
    tokio::select! {
        r = sending => r,
        _ = refusals => Err(anyhow!("the server closed the connection")),
    }
}

/// How many refused publishes one refusal of publishes without ack stands for: the bus answers
/// at most one per 100 ms per connection, its message ending in "(N publishes without ack
/// refused since the last report)" when it stands for more than one.
pub fn refusals_reported(message: &str) -> u64 {
    const TAIL: &str = " publishes without ack refused since the last report)";
    message
        .strip_suffix(TAIL)
        .and_then(|head| head.rsplit_once('('))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1)
}

/// The header of A's pulse `seq` from connection `index` (A's latency is not measured).
pub fn flood_header(index: u32, seq: u64) -> Header {
    let t = now_ns();
    Header {
        publisher: index,
        seq,
        reality: 0,
        flags: 0,
        intended_ns: t,
        sent_ns: t,
    }
}

/// History flood: on every shard, `connections` readers each keeping `history_inflight`
/// whole-reality reads in flight.
async fn history(setup: &Arc<FloodSetup>, counters: &Arc<FloodCounters>) -> Vec<Work> {
    on_every_shard(
        setup,
        counters,
        "history reader",
        |s, shard, i, setup, c| async move {
            let realities = &setup.history_realities[shard as usize];
            let inflight = setup.history_inflight;
            read_history(
                s,
                realities,
                i as usize,
                inflight,
                &c.shards[shard as usize],
            )
            .await
        },
    )
    .await
}

async fn read_history(
    mut session: Session,
    realities: &[String],
    first: usize,
    inflight: usize,
    c: &ShardCounters,
) -> Result<()> {
    // Reader `first` starts at its own place in the list, so the readers of a shard spread
    // over its realities.
    let mut next = first;
    for _ in 0..inflight {
        ask_history(&mut session, realities, &mut next).await?;
    }
    loop {
        match session.next_history_event().await? {
            HistoryEvent::Chunk { pulses, .. } => {
                c.pulses.fetch_add(pulses, Ordering::Relaxed);
            }
            HistoryEvent::End { .. } => {
                c.ops.fetch_add(1, Ordering::Relaxed);
                ask_history(&mut session, realities, &mut next).await?;
            }
            HistoryEvent::Error { error, .. } => {
                add(&c.refused, error.name, 1);
                ask_history(&mut session, realities, &mut next).await?;
            }
            HistoryEvent::Other => {}
        }
    }
}

/// Asks for the whole of the next reality in turn.
async fn ask_history(session: &mut Session, realities: &[String], next: &mut usize) -> Result<()> {
    let reality = &realities[*next % realities.len()];
    *next += 1;
    session.send_history_get(reality, ">", 0).await.map(|_| ())
}

/// Policy flood: on every shard, `connections` publishers of acked pulses to the policy reality,
/// `policy_inflight` in flight each; every answer is counted by its code.
async fn policy(setup: &Arc<FloodSetup>, counters: &Arc<FloodCounters>) -> Vec<Work> {
    on_every_shard(
        setup,
        counters,
        "policy publisher",
        |s, shard, i, setup, c| async move {
            publish_acked(s, &setup, i, &c.shards[shard as usize]).await
        },
    )
    .await
}

async fn publish_acked(
    session: Session,
    setup: &FloodSetup,
    index: u32,
    c: &ShardCounters,
) -> Result<()> {
    let mut p = session.into_publisher(
        std::slice::from_ref(&setup.policy_reality),
        "tenant-a-policy",
    );
    let mut answers = p.take_acks().context("the answer stream")?;
    let mut outstanding = 0usize;
    let mut seq = 0u64;
    loop {
        while outstanding < setup.policy_inflight {
            p.send(0, &flood_header(index, seq), setup.payload_bytes, true)
                .await?;
            outstanding += 1;
            seq += 1;
        }
        p.flush().await?;
        let mut next = Some(
            answers
                .recv()
                .await
                .ok_or_else(|| anyhow!("the server closed the connection"))?,
        );
        while let Some(a) = next {
            outstanding -= 1;
            c.ops.fetch_add(1, Ordering::Relaxed);
            match a.result {
                Ok(_) => {
                    c.pulses.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => add(&c.refused, e.name, 1),
            }
            next = answers.try_recv().ok();
        }
    }
}

/// Churn: `connections` slots per shard, each connecting, saying Hello with A's token and
/// closing on Welcome, over and over. The kernel picks the shard; each handshake is counted on
/// the shard its Welcome names.
fn churn(setup: &Arc<FloodSetup>, counters: &Arc<FloodCounters>) -> Vec<Work> {
    (0..setup.connections * setup.shards as usize)
        .map(|_| {
            let (setup, counters) = (setup.clone(), counters.clone());
            Box::pin(async move {
                loop {
                    let hello =
                        arqon::connect_with_token(setup.addr, None, "tenant-a-churn", &setup.token);
                    match tokio::time::timeout(setup.handshake_timeout, hello).await {
                        Ok(Ok(session)) => {
                            let shard = session.welcome.shard as usize;
                            match counters.shards.get(shard) {
                                Some(c) => {
                                    c.ops.fetch_add(1, Ordering::Relaxed);
                                }
                                None => counters.fail(format!("Welcome named shard {shard}")),
                            }
                        }
                        Ok(Err(e)) => {
                            counters.fail(format!("handshake: {}", failure_kind(&e)));
                            // A failure that comes at once (no port left, refused) would
                            // otherwise spin the harness instead of loading the bus.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(_) => counters.fail("handshake: timed out".to_string()),
                    }
                }
            }) as Work
        })
        .collect()
}

/// A short name for what went wrong: the server's error code, an I/O error's kind, or the
/// error's first words.
pub fn failure_kind(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<ServerError>() {
            return s.name.clone();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{:?}", io.kind());
        }
    }
    let text = e.to_string();
    text.split(':').next().unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_refusals_count_what_they_stand_for() {
        let one = "tenant `tenant-a` is publishing faster than publish_pulses_per_sec";
        assert_eq!(refusals_reported(one), 1);
        let many = format!("{one} (4321 publishes without ack refused since the last report)");
        assert_eq!(refusals_reported(&many), 4321);
        // A parenthesis in the reason itself does not confuse it.
        let nested =
            "policy `x (y)` failed (17 publishes without ack refused since the last report)";
        assert_eq!(refusals_reported(nested), 17);
        assert_eq!(
            refusals_reported("(abc publishes without ack refused since the last report)"),
            1
        );
    }

    #[test]
    fn failures_are_named_by_code_or_io_kind() {
        let server: anyhow::Error = ServerError {
            code: 11,
            name: "QUOTA_EXCEEDED".into(),
            message: "tenant over max_connections".into(),
        }
        .into();
        assert_eq!(failure_kind(&server.context("Hello")), "QUOTA_EXCEEDED");
        let io: anyhow::Error = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable).into();
        assert_eq!(
            failure_kind(&io.context("connecting to 127.0.0.1:1")),
            "AddrNotAvailable"
        );
        assert_eq!(
            failure_kind(&anyhow!("the server closed the connection")),
            "the server closed the connection"
        );
    }
}

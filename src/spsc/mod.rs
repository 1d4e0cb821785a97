//! The full mesh of bounded single-producer/single-consumer rings between shards.
//!
//! The rings are glommio's shared channels (a lock-free SPSC queue plus cross-reactor wake-ups).
//! There are two meshes, with different message types, so that no cycle of waits can form:
//!
//! - **requests** ([`crate::shard::ToOwner`]): a connection's shard asks a reality's owner to
//!   sequence a pulse or to change a subscription's interest. A full ring makes the requesting
//!   connection wait.
//! - **deliveries** ([`crate::shard::FromOwner`]): the owner sends sequenced pulses, acks and
//!   subscription confirmations back. Consuming a delivery never waits on anything (it only
//!   queues bytes for local sockets, bounded by the slow-consumer policy), so the delivery
//!   rings always drain, and an owner waiting on a full delivery ring always makes progress.
//!
//! Deliveries pass through an [`Outbox`] so that pulses enter a ring in the order they were
//! sequenced even when the ring is momentarily full.

mod outbox;

pub use outbox::Outbox;

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

/// One shard's ends of a mesh before they are connected on the shard's executor.
pub struct MeshEnds<T: Send + 'static> {
    /// `senders[j]` feeds the ring to shard `j` (`None` for this shard itself).
    pub senders: Vec<Option<SharedSender<T>>>,
    /// `receivers[j]` drains the ring from shard `j` (`None` for this shard itself).
    pub receivers: Vec<Option<SharedReceiver<T>>>,
}

/// Builds an N×N mesh of rings of `capacity` slots and hands each shard its ends.
pub fn full_mesh<T: Send + 'static>(shards: usize, capacity: usize) -> Vec<MeshEnds<T>> {
    let mut ends: Vec<MeshEnds<T>> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from == to {
                continue;
            }
            let (tx, rx) = shared_channel::new_bounded(capacity);
            ends[from].senders[to] = Some(tx);
            ends[to].receivers[from] = Some(rx);
        }
    }
    ends
}

/// Connects receivers on the current executor. Each waits for its peer's sender, so they are
/// connected concurrently.
pub async fn connect_receivers<T: Send + 'static>(
    receivers: Vec<Option<SharedReceiver<T>>>,
) -> Vec<(usize, ConnectedReceiver<T>)> {
    let pending = receivers
        .into_iter()
        .enumerate()
        .filter_map(|(peer, rx)| rx.map(|rx| async move { (peer, rx.connect().await) }));
    futures::future::join_all(pending).await
}

/// Connects senders on the current executor, concurrently; `None` stays in place for self.
pub async fn connect_senders<T: Send + 'static>(
    senders: Vec<Option<SharedSender<T>>>,
) -> Vec<Option<ConnectedSender<T>>> {
    let pending = senders.into_iter().map(|tx| async move {
        match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        }
    });
    futures::future::join_all(pending).await
}

//! A well-behaved client publishing acked pulses as fast as acks come back, while a test makes
//! something else misbehave: how many acks it got, and the slowest one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arqonbus_client::{Client, Outgoing};

pub struct Bystander {
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    worst_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts `client` publishing to `reality`; every publish must be acked.
pub fn start(client: Client, reality: &str) -> Bystander {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let worst_us = Arc::new(AtomicU64::new(0));
    let reality = reality.to_owned();
    let task = tokio::spawn({
        let (stop, acks, worst_us) = (stop.clone(), acks.clone(), worst_us.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .publish_acked(Outgoing::new(&reality, "calm.work.done").bytes(b"ok".to_vec()))
                    .await
                    .expect("the bystander's pulses are never refused");
                acks.fetch_add(1, Ordering::Relaxed);
                worst_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        }
    });
    Bystander {
        stop,
        acks,
        worst_us,
        task,
    }
}

impl Bystander {
    /// Acks received so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// Stops publishing; the acks it got in all, and the slowest publish-to-ack it saw.
    pub async fn stop(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let acks = self.acks.clone();
        self.task.await.unwrap();
        let worst = Duration::from_micros(self.worst_us.load(Ordering::Relaxed));
        (acks.load(Ordering::Relaxed), worst)
    }
}

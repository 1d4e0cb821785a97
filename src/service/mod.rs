//! Life under systemd (`Type=notify`, see `systemd/arqonbus.service`).
//!
//! - `READY=1` once [`crate::Server::start`] has returned: every listener bound, every retained
//!   reality recovered, every shard accepting.
//! - `WATCHDOG=1` every half `WatchdogSec`, but only when every shard's heartbeat advanced since
//!   the previous check: a reactor stuck in a busy loop or a blocking call stops the pings, and
//!   systemd restarts the bus. A thread that pinged unconditionally would only prove that the
//!   process exists.
//! - `STOPPING=1` as soon as shutdown begins (SIGTERM raises the stop flag).
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) nothing is sent and no thread is started.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::health::{Liveness, Phase, Status};

/// How often the supervisor looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// True when a service manager is listening for notifications.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Tells systemd the bus is ready, with a one-line status for `systemctl status`.
pub fn notify_ready(status: &Status) {
    let line = match status.listen_addr() {
        Some(addr) => format!("listening on {addr} with {} shards", status.shard_count()),
        None => "ready".to_owned(),
    };
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Starts the thread that pings the watchdog while every shard turns and says STOPPING when
/// shutdown begins. `None` outside systemd.
pub fn spawn_supervisor(status: Arc<Status>) -> Option<JoinHandle<()>> {
    if !under_systemd() {
        return None;
    }
    let watchdog = sd_notify::watchdog_enabled();
    if let Some(timeout) = watchdog {
        tracing::info!(?timeout, "systemd watchdog enabled");
    }
    std::thread::Builder::new()
        .name("sd-supervisor".into())
        .spawn(move || {
            let mut supervisor = Supervisor::new(&status, watchdog, Instant::now());
            loop {
                std::thread::sleep(POLL);
                match supervisor.tick(&status, Instant::now()) {
                    Tick::Wait => {}
                    Tick::Ping => send(&[NotifyState::Watchdog]),
                    Tick::Stalled(shards) => tracing::error!(
                        ?shards,
                        "a shard's reactor has not turned since the last watchdog check; not \
                         pinging the systemd watchdog"
                    ),
                    Tick::Stopping => {
                        send(&[
                            NotifyState::Stopping,
                            NotifyState::Status("stopping: draining subscriber queues"),
                        ]);
                        return;
                    }
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "cannot start the systemd supervisor thread"))
        .ok()
}

/// What the supervisor should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Nothing is due.
    Wait,
    /// Every shard turned since the last check: send WATCHDOG=1.
    Ping,
    /// These shards did not turn since the last check: send nothing, so systemd restarts the bus
    /// if they stay stuck.
    Stalled(Vec<usize>),
    /// Shutdown has begun: send STOPPING=1 and stop supervising.
    Stopping,
}

/// The watchdog decision, separate from the clock and the socket so it can be tested.
pub struct Supervisor {
    /// Half the watchdog timeout, so one missed check still leaves time for the next.
    check_every: Option<Duration>,
    next_check: Option<Instant>,
    liveness: Liveness,
}

impl Supervisor {
    /// `watchdog` is systemd's timeout (WATCHDOG_USEC), `None` when the watchdog is off.
    pub fn new(status: &Status, watchdog: Option<Duration>, now: Instant) -> Self {
        let check_every = watchdog.map(|timeout| timeout / 2);
        let mut liveness = Liveness::default();
        liveness.observe(&status.heartbeats(), now);
        Self {
            check_every,
            next_check: check_every.map(|every| now + every),
            liveness,
        }
    }

    pub fn tick(&mut self, status: &Status, now: Instant) -> Tick {
        if status.phase() == Phase::Stopping {
            return Tick::Stopping;
        }
        let (Some(every), Some(due)) = (self.check_every, self.next_check) else {
            return Tick::Wait;
        };
        if now < due {
            return Tick::Wait;
        }
        self.next_check = Some(now + every);
        if self.liveness.observe(&status.heartbeats(), now) {
            Tick::Ping
        } else {
            Tick::Stalled(self.liveness.stalled(now, every / 2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardCounters;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn pings_only_while_every_shard_beats_then_stops() {
        let status = Status::new();
        let shards: Vec<_> = (0..2).map(|_| Arc::new(ShardCounters::default())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        status.attach(
            shards.clone(),
            stop.clone(),
            "127.0.0.1:1".parse().unwrap(),
            crate::health::ShardFailures::new(2),
        );
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut sup = Supervisor::new(&status, Some(Duration::from_secs(10)), t0);

        shards[0].heartbeat.inc();
        shards[1].heartbeat.inc();
        assert_eq!(
            sup.tick(&status, at(1_000)),
            Tick::Wait,
            "not due before 5 s"
        );
        assert_eq!(sup.tick(&status, at(5_000)), Tick::Ping);
        // Shard 1 stops turning.
        shards[0].heartbeat.inc();
        assert_eq!(sup.tick(&status, at(10_000)), Tick::Stalled(vec![1]));
        shards[0].heartbeat.inc();
        assert_eq!(sup.tick(&status, at(15_000)), Tick::Stalled(vec![1]));
        // It recovers: pings resume.
        shards[0].heartbeat.inc();
        shards[1].heartbeat.inc();
        assert_eq!(sup.tick(&status, at(20_000)), Tick::Ping);
        stop.store(true, Ordering::Release);
        assert_eq!(sup.tick(&status, at(20_001)), Tick::Stopping);
    }

    #[test]
    fn without_a_watchdog_it_only_waits_for_stopping() {
        let status = Status::new();
        let stop = Arc::new(AtomicBool::new(false));
        let shards = vec![Arc::new(ShardCounters::default())];
        status.attach(
            shards,
            stop.clone(),
            "127.0.0.1:1".parse().unwrap(),
            crate::health::ShardFailures::new(1),
        );
        let t0 = Instant::now();
        let mut sup = Supervisor::new(&status, None, t0);
        assert_eq!(
            sup.tick(&status, t0 + Duration::from_secs(3600)),
            Tick::Wait
        );
        stop.store(true, Ordering::Release);
        assert_eq!(sup.tick(&status, t0), Tick::Stopping);
    }
}

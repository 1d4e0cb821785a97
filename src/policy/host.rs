//! The process-wide side of CASIL: one wasmtime `Engine`, the epoch ticker, the registry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{Config as WasmConfig, Engine, Module, OptLevel};

use super::{CompiledPolicy, EpochDemand, PolicyError, PolicySpec, Registry};
use crate::config::PolicyConfig;

/// Native stack a policy call may use. Deep recursion traps instead of overflowing the shard.
const MAX_WASM_STACK_BYTES: usize = 512 << 10;
/// How often the ticker wakes while no policy is loaded (it is woken at once by a load).
const DORMANT_TICK: Duration = Duration::from_millis(250);

/// Shared by every shard (behind an `Arc`). Nothing here is touched per pulse except the
/// registry's version number (one atomic load).
pub struct PolicyHost {
    engine: Engine,
    pub registry: Arc<Registry>,
    /// How many modules (policies and operators) are loaded: the ticker idles at zero.
    demand: Arc<EpochDemand>,
    config: PolicyConfig,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    /// Epoch increments so far (tests and diagnostics).
    ticks: Arc<AtomicU64>,
}

impl PolicyHost {
    /// Builds the engine (fuel metering and epoch interruption on) and starts the ticker.
    pub fn new(config: &PolicyConfig) -> Result<Self, PolicyError> {
        Self::with_max_deadline(config, config.max_deadline_ms)
    }

    /// As [`PolicyHost::new`]; `max_deadline_ms` is the longest deadline of any module that uses the engine (policies
    /// and operators): the ticker idles only once nothing has been loaded for longer than that.
    pub fn with_max_deadline(
        config: &PolicyConfig,
        max_deadline_ms: u64,
    ) -> Result<Self, PolicyError> {
        let mut wasm = WasmConfig::new();
        // NaN canonicalisation makes floating point bit-exact across machines: hosted operators
        // need it for deterministic replay, and it costs policies nothing they would notice.
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK_BYTES)
            .cranelift_nan_canonicalization(true)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&wasm).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let demand = Arc::new(EpochDemand::default());
        let registry = Arc::new(Registry::new(config.max_policies, demand.clone()));
        let tick = Duration::from_millis(config.epoch_tick_ms);
        // With no policy loaded nothing needs the epoch to advance, and a bus without policies
        // should not wake a thousand times a second: the ticker goes dormant, but only once the
        // catalog has been empty for longer than any call's deadline (a call of a policy
        // unloaded meanwhile may still be running), and a load wakes it at once.
        let dormant_after = Duration::from_millis(config.max_deadline_ms.max(max_deadline_ms))
            + Duration::from_secs(1);
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let demand = demand.clone();
            let ticks = ticks.clone();
            std::thread::Builder::new()
                .name("casil-epoch".into())
                .spawn(move || {
                    let mut empty_since: Option<Instant> = None;
                    while !stop.load(Ordering::Acquire) {
                        let dormant = if demand.loaded() == 0 {
                            empty_since.get_or_insert_with(Instant::now).elapsed() >= dormant_after
                        } else {
                            empty_since = None;
                            false
                        };
                        if dormant {
                            std::thread::park_timeout(DORMANT_TICK);
                        } else {
                            std::thread::sleep(tick);
                        }
                        engine.increment_epoch();
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        demand.set_ticker(ticker.thread().clone());
        Ok(Self {
            engine,
            registry,
            demand,
            config: config.clone(),
            ticker_stop,
            ticker: Some(ticker),
            ticks,
        })
    }

    /// How many times the epoch has advanced since start.
    pub fn epoch_ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// The load count every registry on this engine keeps (the ticker idles at zero).
    pub fn demand(&self) -> &Arc<EpochDemand> {
        &self.demand
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Compiles a module (binary or text format). Slow (milliseconds): callers on a shard run
    /// it on the blocking pool.
    pub fn compile(&self, spec: PolicySpec, wasm: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        let module = Module::new(&self.engine, wasm).map_err(|e| PolicyError::Compile {
            name: spec.name.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok(CompiledPolicy::new(spec, module, wasm))
    }

    /// Epoch ticks that give a call at least `deadline_ms` (and at most one tick more): the
    /// next tick may come at once, so one extra.
    pub fn deadline_ticks(&self, deadline_ms: u64) -> u64 {
        deadline_ms.div_ceil(self.config.epoch_tick_ms) + 1
    }
}

impl Drop for PolicyHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("policies", &self.registry.len())
            .finish()
    }
}

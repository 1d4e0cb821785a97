//! The process-wide side of CASIL: one wasmtime `Engine`, the epoch ticker, the registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config as WasmConfig, Engine, Module, OptLevel};

use super::{CompiledPolicy, PolicyError, PolicySpec, Registry};
use crate::config::PolicyConfig;

/// Native stack a policy call may use. Deep recursion traps instead of overflowing the shard.
const MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// Shared by every shard (behind an `Arc`). Nothing here is touched per pulse except the
/// registry's version number (one atomic load).
pub struct PolicyHost {
    engine: Engine,
    pub registry: Registry,
    config: PolicyConfig,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl PolicyHost {
    /// Builds the engine (fuel metering and epoch interruption on) and starts the ticker.
    pub fn new(config: &PolicyConfig) -> Result<Self, PolicyError> {
        let mut wasm = WasmConfig::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK_BYTES)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&wasm).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let tick = Duration::from_millis(config.epoch_tick_ms);
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("casil-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            engine,
            registry: Registry::new(config.max_policies),
            config: config.clone(),
            ticker_stop,
            ticker: Some(ticker),
        })
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

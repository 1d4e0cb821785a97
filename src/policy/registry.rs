//! The process-wide set of compiled Wasm modules of one kind (policies, operators), and the
//! version number shards watch.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::Thread;

use sha2::{Digest, Sha256};
use wasmtime::Module;

use super::{input, PolicySpec};

/// A policy ready to instantiate on any shard. Immutable: replacing a policy installs a new
/// `CompiledPolicy`, and shards tell the two apart by pointer.
pub struct CompiledPolicy {
    pub spec: PolicySpec,
    pub(super) module: Module,
    /// SHA-256 of the module's bytes, as audited.
    pub sha256: [u8; 32],
    pub wasm_bytes: usize,
    /// `params` and `policy_name` of PolicyInput, encoded once: appended to every input.
    pub(super) input_suffix: Vec<u8>,
}

impl CompiledPolicy {
    pub(super) fn new(spec: PolicySpec, module: Module, wasm: &[u8]) -> Self {
        let input_suffix = input::encode_input_suffix(&spec.name, &spec.params);
        Self {
            sha256: Sha256::digest(wasm).into(),
            wasm_bytes: wasm.len(),
            input_suffix,
            spec,
            module,
        }
    }

    pub fn sha256_hex(&self) -> String {
        crate::audit::hex(&self.sha256)
    }
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("name", &self.spec.name)
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

/// What a registry needs of the modules it holds.
pub trait Catalogued {
    /// What the registry calls its entries in errors ("policy", "operator").
    const KIND: &'static str;
    fn name(&self) -> &str;
    /// SHA-256 of the module's bytes, in hex (audit records).
    fn sha256_hex(&self) -> String;
    /// Entries are kept in ascending `(order, name)`.
    fn order(&self) -> i32 {
        0
    }
}

impl Catalogued for CompiledPolicy {
    const KIND: &'static str = "policy";
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn sha256_hex(&self) -> String {
        CompiledPolicy::sha256_hex(self)
    }
    fn order(&self) -> i32 {
        self.spec.order
    }
}

/// The loaded entries in order (ascending `order`, then name).
pub type Catalog<T> = Arc<Vec<Arc<T>>>;

/// A registry is full.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load {kind} `{name}`: {kind}.max_{kind}s ({max}) are loaded; unload one first")]
pub struct RegistryFull {
    pub kind: &'static str,
    pub name: String,
    pub max: u64,
}

/// How many Wasm modules of any kind are loaded, and the epoch ticker to wake when one is: the
/// ticker idles while nothing needs deadlines. Shared by every registry of the process.
#[derive(Debug, Default)]
pub struct EpochDemand {
    loaded: AtomicUsize,
    ticker: OnceLock<Thread>,
}

impl EpochDemand {
    pub fn loaded(&self) -> usize {
        self.loaded.load(Ordering::Acquire)
    }

    pub(super) fn set_ticker(&self, ticker: Thread) {
        let _ = self.ticker.set(ticker);
    }

    fn added(&self) {
        self.loaded.fetch_add(1, Ordering::AcqRel);
        if let Some(ticker) = self.ticker.get() {
            // Deadlines count epoch ticks: they must come every tick from now on.
            ticker.unpark();
        }
    }

    fn removed(&self) {
        self.loaded.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Written by whoever loads or unloads (rarely, under a lock); read by shards only when the
/// version they hold is stale.
pub struct Registry<T: Catalogued = CompiledPolicy> {
    version: AtomicU64,
    catalog: RwLock<Catalog<T>>,
    max: u64,
    demand: Arc<EpochDemand>,
}

impl<T: Catalogued> Registry<T> {
    pub fn new(max: u64, demand: Arc<EpochDemand>) -> Self {
        Self {
            version: AtomicU64::new(0),
            catalog: RwLock::new(Arc::new(Vec::new())),
            max,
            demand,
        }
    }

    /// The version of the catalog; it changes on every load and unload.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The version and the catalog of that version (or a later one).
    pub fn snapshot(&self) -> (u64, Catalog<T>) {
        let version = self.version();
        let catalog = self.read().clone();
        (version, catalog)
    }

    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        self.read().iter().find(|p| p.name() == name).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Would installing an entry of this name fit? A replacement always fits.
    pub fn check_install(&self, name: &str) -> Result<(), RegistryFull> {
        let catalog = self.read();
        let replaces = catalog.iter().any(|p| p.name() == name);
        if !replaces && catalog.len() as u64 >= self.max {
            return Err(RegistryFull {
                kind: T::KIND,
                name: name.to_owned(),
                max: self.max,
            });
        }
        Ok(())
    }

    /// Installs an entry, replacing the one of the same name. Returns the replaced one.
    pub fn install(&self, entry: Arc<T>) -> Result<Option<Arc<T>>, RegistryFull> {
        self.check_install(entry.name())?;
        let mut guard = self.write();
        let mut next: Vec<_> = guard.iter().cloned().collect();
        let old = next
            .iter()
            .position(|p| p.name() == entry.name())
            .map(|i| next.remove(i));
        next.push(entry);
        next.sort_by(|a, b| (a.order(), a.name()).cmp(&(b.order(), b.name())));
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        drop(guard);
        if old.is_none() {
            self.demand.added();
        }
        Ok(old)
    }

    /// Unloads an entry by name; `None` when none had that name.
    pub fn remove(&self, name: &str) -> Option<Arc<T>> {
        let mut guard = self.write();
        let i = guard.iter().position(|p| p.name() == name)?;
        let mut next: Vec<_> = guard.iter().cloned().collect();
        let old = next.remove(i);
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        drop(guard);
        self.demand.removed();
        Some(old)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog<T>> {
        // A panic while holding the lock leaves a consistent catalog (it is swapped whole).
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalog<T>> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }
}

//! The process-wide set of compiled policies, and the version number shards watch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::Thread;

use sha2::{Digest, Sha256};
use wasmtime::Module;

use super::{input, PolicyError, PolicySpec};

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

/// The loaded policies in evaluation order (ascending `order`, then name).
pub type Catalog = Arc<Vec<Arc<CompiledPolicy>>>;

/// Written by whoever loads or unloads (rarely, under a lock); read by shards only when the
/// version they hold is stale.
pub struct Registry {
    version: AtomicU64,
    catalog: RwLock<Catalog>,
    max_policies: u64,
    /// The epoch ticker, woken when a policy is installed (it idles while there is none).
    ticker: OnceLock<Thread>,
}

impl Registry {
    pub fn new(max_policies: u64) -> Self {
        Self {
            version: AtomicU64::new(0),
            catalog: RwLock::new(Arc::new(Vec::new())),
            max_policies,
            ticker: OnceLock::new(),
        }
    }

    /// The thread to wake when a policy is installed.
    pub(super) fn set_ticker(&self, ticker: Thread) {
        let _ = self.ticker.set(ticker);
    }

    /// The version of the catalog; it changes on every load and unload.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The version and the catalog of that version (or a later one).
    pub fn snapshot(&self) -> (u64, Catalog) {
        let version = self.version();
        let catalog = self.read().clone();
        (version, catalog)
    }

    pub fn get(&self, name: &str) -> Option<Arc<CompiledPolicy>> {
        self.read().iter().find(|p| &*p.spec.name == name).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Would installing a policy of this name fit? A replacement always fits.
    pub fn check_install(&self, name: &str) -> Result<(), PolicyError> {
        let catalog = self.read();
        let replaces = catalog.iter().any(|p| &*p.spec.name == name);
        if !replaces && catalog.len() as u64 >= self.max_policies {
            return Err(PolicyError::Full {
                name: name.to_owned(),
                max: self.max_policies,
            });
        }
        Ok(())
    }

    /// Installs a policy, replacing the one of the same name. Returns the replaced one.
    pub fn install(
        &self,
        policy: Arc<CompiledPolicy>,
    ) -> Result<Option<Arc<CompiledPolicy>>, PolicyError> {
        self.check_install(&policy.spec.name)?;
        let mut guard = self.write();
        let mut next: Vec<_> = guard.iter().cloned().collect();
        let old = next
            .iter()
            .position(|p| p.spec.name == policy.spec.name)
            .map(|i| next.remove(i));
        next.push(policy);
        next.sort_by(|a, b| (a.spec.order, &*a.spec.name).cmp(&(b.spec.order, &*b.spec.name)));
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        drop(guard);
        if let Some(ticker) = self.ticker.get() {
            // Deadlines count epoch ticks: they must come every tick from now on.
            ticker.unpark();
        }
        Ok(old)
    }

    /// Unloads a policy by name; `None` when none had that name.
    pub fn remove(&self, name: &str) -> Option<Arc<CompiledPolicy>> {
        let mut guard = self.write();
        let i = guard.iter().position(|p| &*p.spec.name == name)?;
        let mut next: Vec<_> = guard.iter().cloned().collect();
        let old = next.remove(i);
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        Some(old)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        // A panic while holding the lock leaves a consistent catalog (it is swapped whole).
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }
}

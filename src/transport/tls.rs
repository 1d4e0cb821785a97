//! TLS 1.3 (rustls with the ring provider): the server configuration from PEM files, and its
//! reload on SIGHUP.
//!
//! The current configuration sits behind a mutex with a generation number beside it. Each shard
//! keeps its own acceptor and compares generations (one relaxed load) before a handshake; only
//! after a reload does it take the lock, once, to pick up the new configuration. Connections
//! already established keep the session they negotiated: a reload never drops one.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_rustls::rustls::{self, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why certificates could not be loaded. Names the file and the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} ({path}): {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("{key} ({path}) holds no certificate")]
    NoCertificate { key: &'static str, path: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The crypto provider every TLS configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration: TLS 1.3 only, with client certificates verified against
/// `client_ca_path` when one is set (required or optional per `require_client_cert`).
pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs("tls.cert_path", &config.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_path).map_err(|e| TlsError::File {
        key: "tls.key_path",
        path: config.key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err)?;
    let builder = match &config.client_ca_path {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs("tls.client_ca_path", ca_path)? {
                roots.add(ca).map_err(rustls_err)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            );
            let verifier = if config.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder.with_single_cert(certs, key).map_err(rustls_err)?;
    Ok(Arc::new(server))
}

/// The live server configuration, replaceable while the server runs.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsConfig,
    generation: AtomicU64,
    current: Mutex<Arc<ServerConfig>>,
}

impl TlsReloader {
    pub fn load(files: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            current: Mutex::new(server_config(files)?),
            files: files.clone(),
            generation: AtomicU64::new(1),
        })
    }

    /// Reads the files again. On an error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.files)?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current configuration and its generation.
    pub fn current(&self) -> (u64, Arc<ServerConfig>) {
        let config = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation(), config.clone())
    }
}

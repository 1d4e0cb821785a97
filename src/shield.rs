//! The shield: what every shard consults at the edge of the data path before a request goes
//! further — who the session is (tokens, client certificates, the failure rate limit), what its
//! tenant may still use (quotas), and the TLS configuration new handshakes use.
//!
//! Built once on the main thread and shared read-only by every shard; the only shared writes
//! are the tenants' connection and subscription counts and the failure map, none per pulse.

use crate::auth::Auth;
use crate::config::{Config, ConfigError};
use crate::tenant::Tenants;
use crate::transport::tls::{TlsError, TlsReloader};

#[derive(Debug)]
pub struct Shield {
    pub auth: Auth,
    pub tenants: Tenants,
    pub tls: Option<TlsReloader>,
    /// Typed circuits, checked at Hello and on every publish on their edges.
    pub circuits: crate::circuit::Circuits,
}

/// Why the shield could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ShieldError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Shield {
    pub fn from_config(config: &Config) -> Result<Self, ShieldError> {
        let tls = match &config.tls {
            Some(files) => Some(TlsReloader::load(files)?),
            None => None,
        };
        Ok(Self {
            auth: Auth::from_config(config)?,
            tenants: Tenants::from_config(config),
            tls,
            circuits: crate::circuit::Circuits::default(),
        })
    }
}

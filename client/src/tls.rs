//! TLS for the client: which roots to trust, and an optional client certificate (mTLS).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::ClientError;

/// How to speak TLS to the bus.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; by default the host of the address.
    pub server_name: Option<String>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Tls(format!("{what}: {e}"))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(&format!("cannot read {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(bad(
            &path.display().to_string(),
            "no certificate in the file",
        ));
    }
    Ok(certs)
}

impl TlsOptions {
    /// Trusts `roots`; presents `identity` (certificate chain and key) when given.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, ClientError> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root).map_err(|e| bad("root certificate", e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", e))?
            .with_root_certificates(store);
        let config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("client certificate", e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// From PEM files: the CA to trust, and optionally a client certificate and its key.
    pub fn from_pem_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let identity = match client {
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(&format!("cannot read {}", key.display()), e))?;
                Some((read_certs(cert)?, key))
            }
            None => None,
        };
        Self::new(read_certs(ca)?, identity)
    }

    /// Checks the server's certificate against `name` instead of the address's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    pub(crate) fn name_for(&self, host: &str) -> Result<ServerName<'static>, ClientError> {
        let name = self.server_name.as_deref().unwrap_or(host).to_owned();
        ServerName::try_from(name).map_err(|e| bad("server name", e))
    }
}

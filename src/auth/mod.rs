//! Identity: signed tokens, client certificates, grants, and the rate limit on failures.
//!
//! A session's identity is settled once, at Hello: from a token signed by a trusted Ed25519
//! key (tenant, subject, roles, grants, expiry), or from the client certificate's common name
//! (mTLS), or — when tokens are not required — as an anonymous session of
//! `auth.anonymous_tenant`. A token and a certificate on one connection must name the same
//! tenant and subject. A token must be signed by the key its `kid` names (any trusted key when
//! it names none), carry `auth.audience` when that is set, and not be on the revocation list.

mod cert;
mod guard;
mod identity;
pub mod revocation;
pub mod token;

pub use cert::{subject_common_name, CertIdentity};
pub use guard::AuthGuard;
pub use identity::{Access, Grant, Identity, CONTROL_PREFIX};
pub use revocation::{RevocationError, RevocationList, Revoked};
pub use token::{Claims, Role, TokenError};

use std::sync::Arc;

use crate::config::{Config, ConfigError};

/// The server's authentication settings, shared by every shard (read-only but for the
/// revocation list, which a reload replaces).
#[derive(Debug)]
pub struct Auth {
    tokens: token::TokenPolicy,
    require_token: bool,
    anonymous_tenant: Arc<str>,
    pub guard: AuthGuard,
    /// `auth.revocation_file`, when configured.
    pub revocations: Option<RevocationList>,
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let auth = &config.auth;
        let keys = auth
            .trusted_keys
            .iter()
            .map(|k| {
                Ok(token::TrustedKey {
                    id: k.id().map(str::to_owned),
                    key: token::decode_public(k.key())?,
                })
            })
            .collect::<Result<Vec<_>, token::KeyError>>()
            .map_err(|e| ConfigError::Invalid {
                key: "auth.trusted_keys",
                reason: e.to_string(),
            })?;
        let revocations = match &auth.revocation_file {
            None => None,
            Some(path) => Some(
                RevocationList::load(config.resolve_path(path), auth.max_revocation_file_bytes)
                    .map_err(|e| ConfigError::Invalid {
                        key: "auth.revocation_file",
                        reason: e.to_string(),
                    })?,
            ),
        };
        Ok(Self {
            tokens: token::TokenPolicy {
                keys,
                audience: auth.audience.clone(),
            },
            require_token: auth.require_token,
            anonymous_tenant: Arc::from(auth.anonymous_tenant.as_str()),
            guard: AuthGuard::new(auth),
            revocations,
        })
    }

    /// The tenant of sessions without a token.
    pub fn anonymous_tenant(&self) -> Arc<str> {
        self.anonymous_tenant.clone()
    }

    /// Settles a session's identity from its Hello token and its client certificate, if any.
    /// The error is sent to the client with UNAUTHENTICATED.
    pub fn authenticate(
        &self,
        token: &str,
        cert: Option<&CertIdentity>,
        now_unix_secs: u64,
    ) -> Result<Identity, String> {
        if token.is_empty() {
            if self.require_token {
                return Err("this server requires a token in Hello".into());
            }
            return Ok(match cert {
                Some(c) => Identity::anonymous(
                    c.tenant
                        .as_deref()
                        .map(Arc::from)
                        .unwrap_or_else(|| self.anonymous_tenant.clone()),
                    c.subject.clone(),
                ),
                None => Identity::anonymous(self.anonymous_tenant.clone(), String::new()),
            });
        }
        if self.tokens.keys.is_empty() {
            // Signed tokens are not in use on this server (and not required, or the
            // configuration would have been refused): the token means nothing here.
            return Ok(Identity::anonymous(
                self.anonymous_tenant.clone(),
                String::new(),
            ));
        }
        let claims = self
            .tokens
            .verify(token, now_unix_secs)
            .map_err(|e| e.to_string())?;
        if let Some(c) = cert {
            let same_tenant =
                c.tenant.as_deref().unwrap_or(&self.anonymous_tenant) == claims.tenant;
            if !same_tenant || c.subject != claims.sub {
                return Err(format!(
                    "the token is for `{}/{}` but the client certificate is for `{}/{}`",
                    claims.tenant,
                    claims.sub,
                    c.tenant.as_deref().unwrap_or(&self.anonymous_tenant),
                    c.subject
                ));
            }
        }
        Identity::from_claims(claims)
    }
}

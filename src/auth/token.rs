//! Signed tokens: `base64url(JSON claims) "." base64url(Ed25519 signature)`.
//!
//! The signature covers the first part exactly as sent (its base64url text), so verification
//! never re-serializes JSON. Keys are 32-byte Ed25519 seeds (private) and points (public),
//! written as standard base64 in files and configuration.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Longest token accepted; a Hello is refused before any parsing past it.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// What a token may carry a session to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May publish within the token's `publish` grants.
    Publisher,
    /// May subscribe and read history within the token's `subscribe` grants.
    Subscriber,
    /// May publish to `sys.control.*` (within its grants).
    Controller,
    /// Everything, everywhere.
    Admin,
}

/// The signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub tenant: String,
    /// Who the session is (a person, agent or service).
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// `reality-glob:topic-pattern` grants for publishing.
    #[serde(default)]
    pub publish: Vec<String>,
    /// `reality-glob:topic-pattern` grants for subscribing and history.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issue time, Unix seconds.
    #[serde(default)]
    pub iat: u64,
    /// When present, the only capabilities an operator manifest (SAM handshake) of this subject
    /// may claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

/// Why a token was refused. The message goes to the client, so it says what, never which key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token is not `claims.signature` in base64url")]
    Malformed,
    #[error("token signature is not from a trusted key")]
    BadSignature,
    #[error("token claims are not valid: {0}")]
    Claims(String),
    #[error("token expired at {exp} (now {now}, Unix seconds)")]
    Expired { exp: u64, now: u64 },
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key is not base64 of 32 bytes: {0}")]
    Format(String),
    #[error("public key is not a valid Ed25519 point")]
    BadPoint,
}

/// Signs `claims` with `key`.
pub fn issue(key: &SigningKey, claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let body = URL_SAFE_NO_PAD.encode(json);
    let signature = key.sign(body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// Checks the signature against every trusted key, then the expiry against `now_unix_secs`.
pub fn verify(
    token: &str,
    trusted: &[VerifyingKey],
    now_unix_secs: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let (body, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .map(|s| Signature::from_bytes(&s))
        .ok_or(TokenError::Malformed)?;
    if !trusted
        .iter()
        .any(|k| k.verify(body.as_bytes(), &signature).is_ok())
    {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&json).map_err(|e| TokenError::Claims(e.to_string()))?;
    if claims.exp <= now_unix_secs {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now: now_unix_secs,
        });
    }
    Ok(claims)
}

/// A new private key from the operating system's random source.
pub fn generate_key() -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The text form of a private key (base64 of the 32-byte seed).
pub fn encode_private(key: &SigningKey) -> String {
    STANDARD.encode(key.to_bytes())
}

/// The text form of a public key (base64 of 32 bytes), as `auth.trusted_keys` lists it.
pub fn encode_public(key: &VerifyingKey) -> String {
    STANDARD.encode(key.to_bytes())
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::Format(e.to_string()))?;
    <[u8; 32]>::try_from(bytes).map_err(|b| KeyError::Format(format!("{} bytes", b.len())))
}

pub fn decode_private(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&decode32(text)?))
}

pub fn decode_public(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&decode32(text)?).map_err(|_| KeyError::BadPoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            tenant: "lab".into(),
            sub: "ada".into(),
            roles: vec![Role::Publisher],
            publish: vec!["lab-*:rig.>".into()],
            subscribe: vec![],
            exp,
            iat: 0,
            capabilities: None,
        }
    }

    #[test]
    fn issued_tokens_verify_and_round_trip_their_claims() {
        let key = generate_key().unwrap();
        let token = issue(&key, &claims(100));
        let got = verify(&token, &[key.verifying_key()], 99).unwrap();
        assert_eq!(got, claims(100));
    }

    #[test]
    fn expired_forged_and_tampered_tokens_are_refused() {
        let key = generate_key().unwrap();
        let other = generate_key().unwrap();
        let trusted = [key.verifying_key()];
        let token = issue(&key, &claims(100));
        assert!(matches!(
            verify(&token, &trusted, 100),
            Err(TokenError::Expired { .. })
        ));
        let forged = issue(&other, &claims(100));
        assert_eq!(verify(&forged, &trusted, 1), Err(TokenError::BadSignature));
        // Same signature, different claims.
        let (_, sig) = token.split_once('.').unwrap();
        let mut wider = claims(100);
        wider.publish = vec!["*:>".into()];
        let (body, _) = issue(&key, &wider)
            .split_once('.')
            .map(|(b, s)| (b.to_owned(), s.to_owned()))
            .unwrap();
        assert_eq!(
            verify(&format!("{body}.{sig}"), &trusted, 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify("nodot", &trusted, 1), Err(TokenError::Malformed));
    }

    #[test]
    fn keys_round_trip_through_text() {
        let key = generate_key().unwrap();
        let back = decode_private(&encode_private(&key)).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let public = decode_public(&encode_public(&key.verifying_key())).unwrap();
        assert_eq!(public, key.verifying_key());
        assert!(decode_public("AAAA").is_err());
    }
}

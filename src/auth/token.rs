//! Signed tokens: `base64url(JSON claims) "." base64url(Ed25519 signature)`.
//!
//! The signature covers the first part exactly as sent (its base64url text), so verification
//! never re-serializes JSON. Keys are 32-byte Ed25519 seeds (private) and points (public),
//! written as standard base64 in files and configuration.
//!
//! A token names the key that signed it in its `kid` claim (an id given to the key in
//! `auth.trusted_keys`). The claims are decoded before the signature is checked — that is how
//! the key is found — but nothing in them is believed until the named key's signature holds:
//! only that key is tried, so a token cannot be checked against a key it does not name. A token
//! without `kid` (issued before key ids) is checked against every trusted key. Signatures are
//! checked with `verify_strict` (no small-order keys, canonical `S`), so a signature has exactly
//! one valid form.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
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
    /// The id of the trusted key that signed the token (`auth.trusted_keys` entry `id`); when
    /// present, only that key is tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The token's own id, for the revocation list (`auth.revocation_file`); `token issue`
    /// makes a UUIDv7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The bus the token is for; required to equal `auth.audience` when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
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
    #[error("token names key `{kid}`, which this server does not trust")]
    UnknownKey { kid: String },
    #[error("token is for audience {got}, not this server's `{expected}`")]
    WrongAudience { expected: String, got: String },
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key is not base64 of 32 bytes: {0}")]
    Format(String),
    #[error("public key is not a valid Ed25519 point")]
    BadPoint,
    #[error("public key is a small-order point, which no signature can be checked against")]
    Weak,
}

/// Signs `claims` with `key`.
pub fn issue(key: &SigningKey, claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let body = URL_SAFE_NO_PAD.encode(json);
    let signature = key.sign(body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// A trusted public key and the id tokens name it by (`kid`), if it has one.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: Option<String>,
    pub key: VerifyingKey,
}

/// What a token must satisfy on this server: the keys it may be signed by and, when set, the
/// audience it must name.
#[derive(Debug, Clone, Default)]
pub struct TokenPolicy {
    pub keys: Vec<TrustedKey>,
    pub audience: Option<String>,
}

impl TokenPolicy {
    /// Finds the key the token names (or, without `kid`, any key whose signature holds), checks
    /// the signature strictly, then the expiry against `now_unix_secs` and the audience.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Claims, TokenError> {
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
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&json).map_err(|e| TokenError::Claims(e.to_string()))?;
        let signed = |k: &TrustedKey| k.key.verify_strict(body.as_bytes(), &signature).is_ok();
        let trusted = match &claims.kid {
            Some(kid) => {
                let named = self
                    .keys
                    .iter()
                    .find(|k| k.id.as_deref() == Some(kid.as_str()));
                let named = named.ok_or_else(|| TokenError::UnknownKey { kid: kid.clone() })?;
                signed(named)
            }
            // Tokens from before key ids: any trusted key, as then.
            None => self.keys.iter().any(signed),
        };
        if !trusted {
            return Err(TokenError::BadSignature);
        }
        if claims.exp <= now_unix_secs {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now: now_unix_secs,
            });
        }
        if let Some(expected) = &self.audience {
            if claims.aud.as_deref() != Some(expected.as_str()) {
                return Err(TokenError::WrongAudience {
                    expected: expected.clone(),
                    got: claims
                        .aud
                        .as_deref()
                        .map_or("(none)".to_owned(), |a| format!("`{a}`")),
                });
            }
        }
        Ok(claims)
    }
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

/// A public key; a small-order ("weak") point is refused: it would check no signature.
pub fn decode_public(text: &str) -> Result<VerifyingKey, KeyError> {
    let key = VerifyingKey::from_bytes(&decode32(text)?).map_err(|_| KeyError::BadPoint)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
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
            kid: None,
            jti: None,
            aud: None,
        }
    }

    fn trusting(keys: &[(Option<&str>, &SigningKey)]) -> TokenPolicy {
        TokenPolicy {
            keys: keys
                .iter()
                .map(|(id, k)| TrustedKey {
                    id: id.map(str::to_owned),
                    key: k.verifying_key(),
                })
                .collect(),
            audience: None,
        }
    }

    #[test]
    fn issued_tokens_verify_and_round_trip_their_claims() {
        let key = generate_key().unwrap();
        let token = issue(&key, &claims(100));
        let got = trusting(&[(None, &key)]).verify(&token, 99).unwrap();
        assert_eq!(got, claims(100));
        let full = Claims {
            kid: Some("k1".into()),
            jti: Some("0192-abc".into()),
            aud: Some("bus-a".into()),
            ..claims(100)
        };
        let got = trusting(&[(Some("k1"), &key)])
            .verify(&issue(&key, &full), 99)
            .unwrap();
        assert_eq!(got, full);
    }

    #[test]
    fn claims_without_the_new_fields_still_parse_and_unknown_fields_do_not() {
        let old = r#"{"tenant":"lab","sub":"ada","roles":["publisher"],"exp":5}"#;
        let parsed: Claims = serde_json::from_str(old).unwrap();
        assert_eq!((parsed.kid, parsed.jti, parsed.aud), (None, None, None));
        let new = r#"{"tenant":"lab","sub":"ada","exp":5,"kid":"k1","jti":"t1","aud":"bus"}"#;
        let parsed: Claims = serde_json::from_str(new).unwrap();
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.jti.as_deref(), Some("t1"));
        assert_eq!(parsed.aud.as_deref(), Some("bus"));
        let odd = r#"{"tenant":"lab","sub":"ada","exp":5,"scope":"all"}"#;
        assert!(serde_json::from_str::<Claims>(odd).is_err());
        // Serialized without the absent fields: older servers read what newer CLIs issue.
        let text = serde_json::to_string(&claims(5)).unwrap();
        assert!(!text.contains("kid") && !text.contains("aud"), "{text}");
    }

    #[test]
    fn a_token_naming_a_key_is_checked_against_that_key_only() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        let policy = trusting(&[(Some("a"), &a), (Some("b"), &b), (None, &b)]);
        let by_b = |kid: Option<&str>| {
            issue(
                &b,
                &Claims {
                    kid: kid.map(str::to_owned),
                    ..claims(100)
                },
            )
        };
        assert!(policy.verify(&by_b(Some("b")), 1).is_ok());
        // Signed by b, which is trusted, but naming a: a alone is tried.
        assert_eq!(
            policy.verify(&by_b(Some("a")), 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            policy.verify(&by_b(Some("c")), 1),
            Err(TokenError::UnknownKey { kid: "c".into() })
        );
        // Without kid, any trusted key (compatibility with tokens issued before key ids).
        assert!(policy.verify(&by_b(None), 1).is_ok());
    }

    #[test]
    fn an_audience_when_configured_must_be_named() {
        let key = generate_key().unwrap();
        let mut policy = trusting(&[(None, &key)]);
        let for_aud = |aud: Option<&str>| {
            issue(
                &key,
                &Claims {
                    aud: aud.map(str::to_owned),
                    ..claims(100)
                },
            )
        };
        assert!(policy.verify(&for_aud(Some("elsewhere")), 1).is_ok());
        policy.audience = Some("bus-a".into());
        assert!(policy.verify(&for_aud(Some("bus-a")), 1).is_ok());
        assert!(matches!(
            policy.verify(&for_aud(Some("bus-b")), 1),
            Err(TokenError::WrongAudience { .. })
        ));
        assert!(matches!(
            policy.verify(&for_aud(None), 1),
            Err(TokenError::WrongAudience { .. })
        ));
    }

    #[test]
    fn expired_forged_and_tampered_tokens_are_refused() {
        let key = generate_key().unwrap();
        let other = generate_key().unwrap();
        let trusted = trusting(&[(None, &key)]);
        let token = issue(&key, &claims(100));
        assert!(matches!(
            trusted.verify(&token, 100),
            Err(TokenError::Expired { .. })
        ));
        let forged = issue(&other, &claims(100));
        assert_eq!(trusted.verify(&forged, 1), Err(TokenError::BadSignature));
        // Same signature, different claims.
        let (_, sig) = token.split_once('.').unwrap();
        let mut wider = claims(100);
        wider.publish = vec!["*:>".into()];
        let (body, _) = issue(&key, &wider)
            .split_once('.')
            .map(|(b, s)| (b.to_owned(), s.to_owned()))
            .unwrap();
        assert_eq!(
            trusted.verify(&format!("{body}.{sig}"), 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(trusted.verify("nodot", 1), Err(TokenError::Malformed));
    }

    #[test]
    fn a_small_order_key_verifies_nothing() {
        // The identity point as a public key, with R = identity and S = 0: the plain Ed25519
        // equation [S]B = R + [k]A holds for every message, so `verify` accepts this forgery;
        // `verify_strict` refuses small-order keys and R.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = TrustedKey {
            id: None,
            key: VerifyingKey::from_bytes(&identity).unwrap(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(100)).unwrap());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode(sig));
        let policy = TokenPolicy {
            keys: vec![weak],
            audience: None,
        };
        assert_eq!(policy.verify(&forged, 1), Err(TokenError::BadSignature));
        assert!(decode_public(&STANDARD.encode(identity)).is_err());
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

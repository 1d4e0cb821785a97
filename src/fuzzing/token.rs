//! Signed tokens (`auth/token.rs`) and the identity a session gets from one.

use std::cell::OnceCell;

use ed25519_dalek::{Signer, SigningKey};

use crate::auth::token::{self, MAX_TOKEN_BYTES};
use crate::auth::{Auth, Identity};
use crate::config::AuthConfig;
use crate::routing::Pattern;

/// The seed of the one key the target's server trusts. The seeds in `fuzz/seeds/token/` are
/// signed with it, so the fuzzer starts past the signature check.
pub const FUZZ_KEY_SEED: [u8; 32] = [7; 32];
/// "Now" for expiry checks: fixed, so a run is reproducible.
pub const FUZZ_NOW_UNIX_SECS: u64 = 1_800_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&FUZZ_KEY_SEED)
}

thread_local! {
    static AUTH: OnceCell<Auth> = const { OnceCell::new() };
}

/// The first byte picks what the rest is:
/// - 0: a token as a client sends it in Hello;
/// - 1: the JSON claims of a token, which the target signs with the trusted key: the fuzzer
///   cannot forge a signature, and the claims parser and grants are only reached behind one;
/// - 2: a key as `auth.trusted_keys` or `arqonbus token` reads it.
pub fn token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => authenticate(&text),
        1 => {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            use base64::Engine;
            let body = URL_SAFE_NO_PAD.encode(rest);
            let signature = key().sign(body.as_bytes());
            let signed = format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
            authenticate(&signed);
        }
        _ => keys(&text),
    }
}

fn authenticate(text: &str) {
    AUTH.with(|cell| {
        let auth = cell.get_or_init(|| {
            let config = crate::config::Config {
                auth: AuthConfig {
                    require_token: true,
                    trusted_keys: vec![crate::config::TrustedKeyConfig::Key(token::encode_public(
                        &key().verifying_key(),
                    ))],
                    ..AuthConfig::default()
                },
                ..crate::config::Config::default()
            };
            Auth::from_config(&config).expect("the fuzz key is a valid public key")
        });
        let Ok(identity) = auth.authenticate(text, None, FUZZ_NOW_UNIX_SECS) else {
            return;
        };
        // Only a token signed by the trusted key, not expired and within the size bound gets
        // this far.
        assert!(
            text.len() <= MAX_TOKEN_BYTES,
            "an oversized token was accepted"
        );
        let exp = identity
            .expires_unix_secs
            .expect("a signed token has an expiry");
        assert!(exp > FUZZ_NOW_UNIX_SECS, "an expired token was accepted");
        exercise(&identity);
    });
}

/// The checks every later request runs against the identity the token gave.
fn exercise(identity: &Identity) {
    let now = FUZZ_NOW_UNIX_SECS;
    for (reality, topic) in [("lab", "a.b"), ("", "sys.control.policy.load"), ("x*", ">")] {
        let _ = identity.check_publish(reality, topic, now);
        let _ = identity.check_params(reality, now);
        if let Ok(pattern) = Pattern::parse(topic) {
            let _ = identity.check_subscribe(reality, &pattern, topic, now);
        }
    }
    let _ = identity.check_capabilities(&["sense".to_owned()]);
}

fn keys(text: &str) {
    if let Ok(k) = token::decode_private(text) {
        let again = token::decode_private(&token::encode_private(&k)).expect("own encoding");
        assert_eq!(
            again.to_bytes(),
            k.to_bytes(),
            "a private key changed in a round trip"
        );
    }
    if let Ok(k) = token::decode_public(text) {
        let again = token::decode_public(&token::encode_public(&k)).expect("own encoding");
        assert_eq!(again, k, "a public key changed in a round trip");
    }
}

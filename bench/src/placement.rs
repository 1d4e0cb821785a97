//! Where things land on a multi-shard ArqonBus: a reality's owner shard (the bus's own hash),
//! reality names chosen for their owner, and connections reconnected until the kernel put them
//! on a wanted shard (Welcome says which).
//!
//! The kernel spreads accepted connections over the shards' SO_REUSEPORT listeners by a hash of
//! the four-tuple, so a client cannot ask for a shard: it connects again until one lands where
//! it wants. With S shards a wanted shard takes S tries on average.

use std::net::SocketAddr;

use anyhow::{bail, Result};

use crate::driver::arqon;

/// The owner shard of `reality` on a bus of `shards` shards: xxh3-64 of the name modulo the
/// shard count, as the bus computes it (src/routing).
pub fn owner_shard(reality: &str, shards: u32) -> u32 {
    assert!(shards > 0, "a bus has at least one shard");
    (xxhash_rust::xxh3::xxh3_64(reality.as_bytes()) % u64::from(shards)) as u32
}

/// The first of `{prefix}-0`, `{prefix}-1`, … whose owner is `shard`. Deterministic, so every
/// run with the same prefix uses the same names.
pub fn reality_owned_by(prefix: &str, shard: u32, shards: u32) -> String {
    assert!(shard < shards, "shard {shard} of {shards}");
    // Each name has a 1/shards chance; a million misses in a row does not happen for any
    // realistic shard count, and the loop still ends.
    (0..1_000_000u32)
        .map(|k| format!("{prefix}-{k}"))
        .find(|name| owner_shard(name, shards) == shard)
        .unwrap_or_else(|| panic!("no name {prefix}-k is owned by shard {shard} of {shards}"))
}

/// Most connections made while looking for a shard before giving up.
pub const MAX_PLACEMENT_TRIES: u32 = 200;

/// Connects (Hello with `token`, empty for none) until the connection lands on a shard `wanted`
/// accepts. Fails when the server says it runs more than `shards` shards, or after
/// [`MAX_PLACEMENT_TRIES`] connections.
pub async fn connect_where(
    addr: SocketAddr,
    client_name: &str,
    token: &str,
    shards: u32,
    wanted: impl Fn(u32) -> bool,
) -> Result<arqon::Session> {
    for _ in 0..MAX_PLACEMENT_TRIES {
        let session = arqon::connect_with_token(addr, None, client_name, token).await?;
        let shard = session.welcome.shard;
        if shard >= shards {
            bail!(
                "the server put a connection on shard {shard}: it runs more than {shards} shards"
            );
        }
        if wanted(shard) {
            return Ok(session);
        }
    }
    bail!("{MAX_PLACEMENT_TRIES} connections all landed on shards that were not wanted")
}

/// [`connect_where`] for one given shard.
pub async fn connect_on_shard(
    addr: SocketAddr,
    client_name: &str,
    token: &str,
    shard: u32,
    shards: u32,
) -> Result<arqon::Session> {
    if shard >= shards {
        bail!("shard {shard} does not exist on a bus of {shards} shards");
    }
    connect_where(addr, client_name, token, shards, |s| s == shard).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_bus_hash() {
        // The server pins the same values (src/routing): `owner_shard("lab-1", n)`, n = 1..=8.
        let placements: Vec<u32> = (1..=8).map(|n| owner_shard("lab-1", n)).collect();
        assert_eq!(placements, [0, 1, 2, 3, 4, 5, 0, 3]);
    }

    #[test]
    fn names_are_found_for_every_shard_and_are_stable() {
        for shards in 1..=8 {
            for shard in 0..shards {
                let name = reality_owned_by("tenant-b-probe", shard, shards);
                assert!(name.starts_with("tenant-b-probe-"), "{name}");
                assert_eq!(owner_shard(&name, shards), shard, "{name} of {shards}");
                assert_eq!(name, reality_owned_by("tenant-b-probe", shard, shards));
            }
        }
        // Two shards of one bus get two different names.
        assert_ne!(
            reality_owned_by("x", 0, 2),
            reality_owned_by("x", 1, 2),
            "one name cannot have two owners"
        );
    }

    #[test]
    #[should_panic(expected = "shard 2 of 2")]
    fn a_shard_beyond_the_count_is_a_bug() {
        reality_owned_by("x", 2, 2);
    }
}

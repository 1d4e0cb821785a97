//! Where a pulse goes: topic and reality syntax, subscription patterns, and the stable hash that
//! names a reality's owner shard.

mod topic;

pub use topic::{validate_reality, validate_topic, NameError, Pattern};

/// The owner shard of a reality: a stable hash (xxh3, fixed by its specification, so it does not
/// change between builds or machines) modulo the shard count.
pub fn owner_shard(reality: &str, shards: usize) -> usize {
    debug_assert!(shards > 0);
    (xxhash_rust::xxh3::xxh3_64(reality.as_bytes()) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        // Pinned values: a change here would move every reality to another shard on upgrade.
        let placements: Vec<usize> = (1..=8).map(|n| owner_shard("lab-1", n)).collect();
        assert_eq!(placements, PINNED_LAB_1, "owner placement changed");
        for n in 1..=8 {
            assert!(owner_shard("anything", n) < n);
        }
    }

    /// `owner_shard("lab-1", n)` for n = 1..=8, as computed by xxh3-64.
    const PINNED_LAB_1: [usize; 8] = [0, 1, 2, 3, 4, 5, 0, 3];
}

//! The data dir's secret hash key, for everything keyed by strings that clients choose.
//! (Pure: the store makes the key from the operating system's random source and keeps it.)
//!
//! Event fingerprints (the dedupe window's keys) and the shard an account belongs to are SipHash-1-3
//! under a 128-bit key made at random when the data dir is created (`m/key` in sled). An agent
//! that does not know the key cannot craft event ids whose fingerprints collide in the dedupe
//! tables, nor accounts that all land on one shard. The in-memory maps keyed by account (totals,
//! subscriptions, the committed view) use per-process random keys (ahash, std's SipHash).

use std::hash::Hasher;

use siphasher::sip::SipHasher13;
use siphasher::sip128::{Hasher128, SipHasher13 as SipHasher13x128};

/// A 128-bit SipHash key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in logs.
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    pub const fn new(k0: u64, k1: u64) -> HashKey {
        HashKey { k0, k1 }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.k0.to_le_bytes());
        out[8..].copy_from_slice(&self.k1.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<HashKey> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        let (a, b) = bytes.split_at(8);
        Some(HashKey::new(
            u64::from_le_bytes(a.try_into().ok()?),
            u64::from_le_bytes(b.try_into().ok()?),
        ))
    }

    /// The 128-bit dedupe fingerprint of (account, event id).
    pub fn fingerprint(&self, account: &str, event_id: &str) -> u128 {
        let mut h = SipHasher13x128::new_with_keys(self.k0, self.k1);
        h.write(account.as_bytes());
        // 0xFF never occurs in UTF-8, so ("ab", "c") and ("a", "bc") differ.
        h.write(&[0xFF]);
        h.write(event_id.as_bytes());
        h.finish128().as_u128()
    }

    /// The shard that owns `account`: stable for the life of the data dir and a shard count.
    pub fn shard_of(&self, account: &str, shards: usize) -> usize {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(account.as_bytes());
        (h.finish() % shards as u64) as usize
    }

    /// A 64-bit seed for hashes that are compared, never used to place a key (the content hash).
    pub fn seed(&self) -> u64 {
        self.k0 ^ self.k1.rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_every_hash_and_survives_its_bytes() {
        let a = HashKey::new(1, 2);
        let b = HashKey::new(1, 3);
        assert_ne!(a.fingerprint("acme", "e-1"), b.fingerprint("acme", "e-1"));
        assert_ne!(a.fingerprint("ab", "c"), a.fingerprint("a", "bc"));
        assert_eq!(HashKey::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(HashKey::from_bytes(&[0; 15]), None);
        let spread: std::collections::BTreeSet<usize> = (0..64).map(|i| a.shard_of(&format!("acct-{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "64 accounts over 4 shards use every shard");
    }
}

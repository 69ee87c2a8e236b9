//! Every key prefix of the data dir, in one registry. A key's first bytes say what its value is;
//! two tables sharing a prefix would read each other's values, so [`REGISTRY`] lists them all,
//! each with what it holds, and a check at build time keeps them distinct (no prefix is the
//! start of another). ARCHITECTURE.md's storage layout documents each one; a test holds the two
//! together. Every module of the store builds its keys from these constants.

/// Meta keys: the data dir's hash key, the next commit's seq, whether closes have final totals.
pub const META: &[u8] = b"m/";
/// The data dir's 128-bit SipHash key.
pub const HASH_KEY: &[u8] = b"m/key";
/// The xxh3 seed of data dirs from before the keyed fingerprints (refused when they hold data).
pub const LEGACY_SEED_KEY: &[u8] = b"m/seed";
/// The seq the next commit gets (big-endian u64), written by every commit.
pub const NEXT_SEQ_KEY: &[u8] = b"m/next_seq";
/// Set once every close has its final totals (closes written by earlier releases have none).
pub const FINALS_WRITTEN_KEY: &[u8] = b"m/finals";

/// `b/<seq><part>`: a block of rated records.
pub const BLOCK: &[u8] = b"b/";
/// `x/<seq>`: the accounts with records in a commit's blocks.
pub const INDEX: &[u8] = b"x/";
/// `s/<seq><n>`: a suspense entry.
pub const SUSPENSE: &[u8] = b"s/";
/// `u/<account>\xFF<from>[<add-on plan>]`: a subscription stored through the Admin API.
pub const SUBSCRIPTION: &[u8] = b"u/";
/// `a/<account>|<period>|<threshold>`: a spend alert raised.
pub const ALERT: &[u8] = b"a/";
/// `k/<plan>\xFF<period>`: a closed billing period and its announcement.
pub const CLOSE: &[u8] = b"k/";
/// `t/<plan>\xFF<number>`: a tariff version published.
pub const VERSION: &[u8] = b"t/";
/// `d/<account>`: an account whose records failed their check at start.
pub const DAMAGE: &[u8] = b"d/";
/// `f/<period>\xFF<account>\xFF<plan>`: the final totals of a closed period.
pub const FINAL: &[u8] = b"f/";
/// `r/<plan>\xFF<period>`: a period whose records retention removed.
pub const RETIRED: &[u8] = b"r/";
/// `c/<correction id>`: a correction asked for under this id. (Earlier releases kept shard
/// checkpoints as `c/<shard u32>` with binary values; `Store::open` removes those.)
pub const CORRECTION: &[u8] = b"c/";
/// `j/<adjustment id>`: a closed period's correction to announce.
pub const ADJUSTMENT: &[u8] = b"j/";
/// `l/<seq><n>`: a ledger entry.
pub const LEDGER: &[u8] = b"l/";
/// `y/<seq>`: the accounts with ledger entries in a commit.
pub const LEDGER_INDEX: &[u8] = b"y/";
/// `w/<account>`: a wallet's settings.
pub const WALLET: &[u8] = b"w/";
/// `n/<account>\xFF<top-up id>`: a top-up applied under this id.
pub const TOPUP: &[u8] = b"n/";
/// `g/<session id>`: a charging session.
pub const SESSION: &[u8] = b"g/";
/// `e/<account>|<entry>|<kind>`: a balance alert to announce.
pub const BALANCE_ALERT: &[u8] = b"e/";
/// `p/<account>\xFF<session>\xFF<seq>`: a part of a partial session not merged yet.
pub const PART: &[u8] = b"p/";
/// `h/<day><fingerprint>`: the dedupe claim of an event whose account rules changed.
pub const MOVED: &[u8] = b"h/";
/// `0c/...`: where checkpoints were kept inside sled by earlier releases; removed at open.
pub const LEGACY_CHECKPOINT: &[u8] = b"0c/";

/// Every prefix, with what it holds.
pub const REGISTRY: [(&[u8], &str); 22] = [
    (META, "the hash key, the next seq, the finals flag"),
    (BLOCK, "blocks of rated records"),
    (INDEX, "the accounts of each commit's blocks"),
    (SUSPENSE, "suspense entries"),
    (SUBSCRIPTION, "subscriptions stored through the Admin API"),
    (ALERT, "spend alerts raised"),
    (CLOSE, "closed billing periods"),
    (VERSION, "tariff versions published"),
    (DAMAGE, "accounts whose records failed their check"),
    (FINAL, "final totals of closed periods"),
    (RETIRED, "periods retention removed"),
    (CORRECTION, "correction ids"),
    (ADJUSTMENT, "closed periods' corrections to announce"),
    (LEDGER, "ledger entries"),
    (LEDGER_INDEX, "the accounts of each commit's ledger entries"),
    (WALLET, "wallet settings"),
    (TOPUP, "top-up ids"),
    (SESSION, "charging sessions"),
    (BALANCE_ALERT, "balance alerts to announce"),
    (PART, "parts of partial sessions"),
    (MOVED, "claims of events whose account rules changed"),
    (LEGACY_CHECKPOINT, "checkpoints of earlier releases (removed at open)"),
];

/// True when `a` starts with `b` or `b` with `a`.
const fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let n = if a.len() < b.len() { a.len() } else { b.len() };
    let mut i = 0;
    while i < n {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// True when every prefix is distinct from every other (none is the start of another).
const fn distinct(registry: &[(&[u8], &str)]) -> bool {
    let mut i = 0;
    while i < registry.len() {
        let mut j = i + 1;
        while j < registry.len() {
            if overlaps(registry[i].0, registry[j].0) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

const _: () = assert!(distinct(&REGISTRY), "two key prefixes of the data dir overlap");

/// `prefix` followed by `seq` big-endian (so keys sort by seq).
pub fn with_seq(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 12);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `prefix`, `seq` and `n` big-endian: the `n`th entry of commit `seq`.
pub fn with_seq_n(prefix: &[u8], seq: u64, n: u32) -> Vec<u8> {
    let mut k = with_seq(prefix, seq);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The seq of a key `<2-byte prefix><seq u64 BE>...`.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(2..10)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefixes_are_distinct_and_the_meta_keys_are_meta() {
        assert!(distinct(&REGISTRY));
        // A registry with a clash is caught.
        let clash: [(&[u8], &str); 2] = [(b"p/", "parts"), (b"p/x", "other")];
        assert!(!distinct(&clash));
        for key in [HASH_KEY, LEGACY_SEED_KEY, NEXT_SEQ_KEY, FINALS_WRITTEN_KEY] {
            assert!(key.starts_with(META), "{key:?}");
        }
    }

    /// Every prefix (but the legacy ones) has its row in ARCHITECTURE.md's storage layout, and
    /// every row there names a registered prefix.
    #[test]
    fn every_prefix_is_documented_in_the_storage_layout() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap();
        let start = text.find("## Storage layout").expect("a storage layout section");
        let section = &text[start..];
        let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
        let rows: Vec<&str> = section[..end].lines().filter(|l| l.starts_with("| `")).collect();
        for (prefix, what) in REGISTRY {
            if prefix == LEGACY_CHECKPOINT || prefix.len() > 2 {
                continue;
            }
            let name = format!("| `{}", String::from_utf8_lossy(prefix));
            assert!(
                rows.iter().any(|r| r.starts_with(&name)),
                "ARCHITECTURE.md's storage layout has no row for {name}` ({what})"
            );
        }
        for row in rows {
            let key = row.trim_start_matches("| `");
            assert!(
                REGISTRY.iter().any(|(p, _)| key.as_bytes().starts_with(p)),
                "ARCHITECTURE.md documents a key no prefix of the registry covers: {row}"
            );
        }
    }
}

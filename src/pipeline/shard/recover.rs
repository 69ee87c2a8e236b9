//! Recovery: every shard's state from its last checkpoint and the blocks after it.

use chrono::{DateTime, Utc};
use tracing::{error, warn};

use super::ShardState;
use crate::pipeline::RatingContext;
use crate::pipeline::dedupe::ColdTier;
use crate::store::checkpoint::{Checkpoint, CheckpointFiles};
use crate::store::codec::{self, CodecError};
use crate::store::cold::ColdDir;
use crate::store::segments::SegmentMeta;
use crate::store::{Store, StoreError};

/// Rebuilds every shard's state: the latest checkpoint of each shard (when they were taken with
/// the current shard count) with the id segments it names, then every block after it, checksums
/// verified. Ids older than the window at `now` (the pipeline's clock, the same one ingest checks
/// TOO_OLD against) are dropped. Also returns, per shard, the segments its checkpoint named (the
/// next checkpoint names them too, until a cold run makes them redundant).
pub fn recover(
    store: &Store,
    ctx: &RatingContext,
    shards: usize,
    window_days: u32,
    now: DateTime<Utc>,
) -> Result<(Vec<ShardState>, Vec<Vec<SegmentMeta>>), StoreError> {
    let mut states: Vec<ShardState> = (0..shards).map(|_| ShardState::default()).collect();
    let mut segments: Vec<Vec<SegmentMeta>> = vec![Vec::new(); shards];
    // Per shard: the first commit seq its checkpoint does not reflect (0 without one).
    let mut next: Vec<u64> = vec![0; shards];
    let data_dir = std::path::Path::new(store.dir());
    let (colds, rebuild) = open_cold_tiers(data_dir, shards)?;
    let files = CheckpointFiles::new(data_dir);
    for k in 0..shards {
        if rebuild[k] {
            // Its cold tier is gone: every id of the window comes back from the blocks.
            continue;
        }
        let checkpoint = match files.read(k) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(error) => {
                warn!(%error, "checkpoint not usable; its shard is rebuilt from the blocks");
                continue;
            }
        };
        if checkpoint.shards as usize != shards {
            warn!(
                shard = k,
                taken_with = checkpoint.shards,
                shards,
                "checkpoint was taken with another shard count; replaying all blocks"
            );
            next = vec![0; shards];
            states = (0..shards).map(|_| ShardState::default()).collect();
            segments = vec![Vec::new(); shards];
            break;
        }
        match load_checkpoint(&files, k, &checkpoint, ctx) {
            Ok((state, named)) => {
                states[k] = state;
                segments[k] = named;
                next[k] = checkpoint.next_seq;
            }
            Err(error) => warn!(shard = k, %error, "checkpoint not usable; its shard is rebuilt from the blocks"),
        }
    }
    for (k, state) in states.iter_mut().enumerate() {
        // New segments are numbered above every file on disk, named or left over.
        let next_number = files.segment_numbers(k).into_iter().max().map_or(0, |n| n + 1);
        state.dedupe.number_segments_from(next_number);
    }
    let from = next.iter().copied().min().unwrap_or(0);
    let key = store.key();
    let mut damage: Vec<(String, String)> = Vec::new();
    for item in store.blocks_from(from) {
        let (seq, name, bytes) = item?;
        let opened = codec::open_block(&bytes)
            .and_then(|(_, payload)| codec::records(payload).collect::<Result<Vec<_>, CodecError>>());
        let records = match opened {
            Ok(records) => records,
            Err(error) => {
                // The accounts of the commit come from its index entry; without it, which totals
                // are wrong is unknown and nothing can be served: refuse to start.
                let accounts = store
                    .block_accounts(seq)
                    .map_err(|_| store.corrupt(name.clone(), error.clone()))?;
                let why = format!("{name} in {} failed its check ({error})", store.sled_file());
                error!(
                    file = %store.sled_file(),
                    key = %name,
                    %error,
                    accounts = accounts.len(),
                    "stored records are corrupted: the totals of the accounts in this commit are not served \
                     and their batches are refused until the data dir is restored from a backup"
                );
                damage.extend(accounts.into_iter().map(|a| (a, why.clone())));
                continue;
            }
        };
        for record in records {
            let k = key.shard_of(&record.account_id, shards);
            if seq < next[k] {
                continue;
            }
            let plan = ctx.catalogue.plan(record.booked().0).ok_or_else(|| {
                store.corrupt(
                    name.clone(),
                    CodecError::Invalid("record names a plan missing from the catalogue"),
                )
            })?;
            // Dedupe keys on the account the event was sent with (normalization rules may have changed it).
            states[k].apply(&record, key.fingerprint(record.sent_account(), &record.event_id), plan);
        }
    }
    store.record_damage(&damage)?;
    for (s, cold) in states.iter_mut().zip(colds) {
        s.evict(now, window_days);
        s.dedupe.set_cold(cold);
    }
    Ok((states, segments))
}

/// One shard's state from its checkpoint: an `RCK4` one with the id segments it names (each
/// checked), an earlier one with the window in its state.
fn load_checkpoint(
    files: &CheckpointFiles,
    shard: usize,
    checkpoint: &Checkpoint,
    ctx: &RatingContext,
) -> Result<(ShardState, Vec<SegmentMeta>), String> {
    if !checkpoint.segmented {
        let state = ShardState::decode(&checkpoint.state, ctx).map_err(|e| e.to_string())?;
        return Ok((state, Vec::new()));
    }
    let (mut state, named) = ShardState::decode_segmented(&checkpoint.state, ctx).map_err(|e| e.to_string())?;
    for meta in &named {
        let claims = files.read_segment(shard, meta)?;
        state.dedupe.load_segment(&claims);
    }
    Ok((state, named))
}

/// Opens each shard's dedupe cold tier. One that fails its check (or was written with another
/// shard count) is deleted, logged with its path, and its shard marked for a replay of every
/// block, which puts the ids back in memory until they spill again: never a silent miss.
fn open_cold_tiers(data_dir: &std::path::Path, shards: usize) -> Result<(Vec<ColdTier>, Vec<bool>), StoreError> {
    let mut tiers = Vec::with_capacity(shards);
    let mut rebuild = vec![false; shards];
    for (k, rebuild) in rebuild.iter_mut().enumerate() {
        let dir = ColdDir::new(data_dir, k, shards);
        match ColdTier::open(dir.clone()) {
            Ok(tier) => tiers.push(tier),
            Err(damage) => {
                error!(
                    shard = k,
                    path = %damage.path,
                    why = %damage.why,
                    "dedupe cold tier not usable; rebuilding it from the blocks"
                );
                dir.wipe().map_err(|error| StoreError::Io {
                    path: dir.path().display().to_string(),
                    error,
                })?;
                tiers.push(ColdTier::empty(dir));
                *rebuild = true;
            }
        }
    }
    ColdDir::remove_other_shards(data_dir, shards).map_err(|error| StoreError::Io {
        path: data_dir.join("dedupe").display().to_string(),
        error,
    })?;
    Ok((tiers, rebuild))
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::record::RatedRecord;
    use crate::domain::subscription::SubscriptionBook;
    use crate::pipeline::dedupe::Seen;
    use crate::store::Commit;
    use crate::store::compact::SegmentWriter;

    /// The shipped tariffs, no subscriptions, no rules.
    fn context() -> RatingContext {
        RatingContext {
            catalogue: crate::domain::tariff_file::parse_catalogue(include_str!("../../../config/tariffs.toml"))
                .unwrap(),
            subscriptions: SubscriptionBook::default(),
            mediation: Default::default(),
        }
    }

    fn record(event_id: &str, charge: i64, at: DateTime<Utc>) -> RatedRecord {
        RatedRecord {
            content: 77,
            event_id: event_id.into(),
            account_id: "acme".into(),
            meter: "api.requests".into(),
            quantity: Decimal::from(10),
            timestamp_unix_nanos: at.timestamp_nanos_opt().unwrap(),
            attributes: Vec::new(),
            plan: "saas-pro".into(),
            version: 1,
            period: "2026-11".into(),
            period_usage_before: Decimal::ZERO,
            subscription_discount: None,
            rated_quantity: Decimal::from(10),
            charge: Decimal::new(charge, 9),
            correction: None,
            as_sent: None,
        }
    }

    /// A data dir written before the compact layout (`RTB1` blocks, fingerprints stored) and one
    /// block written since (`RTB2`, fingerprints recomputed) recover into the same state: both
    /// records in the totals, both ids claimed.
    #[test]
    fn blocks_of_both_layouts_recover_with_their_ids_claimed() {
        let dir = std::env::temp_dir().join(format!("ratingd-recover-layouts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir).unwrap();
        let key = store.key();
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .to_utc();
        let old = record("e-old", 1_000, at);
        let new = record("e-new", 2_500, at);
        let mut v1 = Vec::new();
        codec::append_framed_v1(&mut v1, key.fingerprint("acme", "e-old"), &old.as_ref());
        let mut segment = SegmentWriter::default();
        segment.begin(Vec::new());
        segment.push(&new.as_ref());
        for parts in [
            vec![codec::seal_block_v1(1, &v1)],
            codec::seal_segments([segment.finish().as_slice()]),
        ] {
            store
                .commit(Commit {
                    parts,
                    accounts: vec!["acme".into()],
                    ..Commit::default()
                })
                .unwrap();
        }
        let (states, _) = recover(&store, &context(), 1, 35, at + chrono::Duration::hours(1)).unwrap();
        let totals: Vec<_> = states[0].all_totals().collect();
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].total_charge, Decimal::new(3_500, 9));
        assert_eq!(totals[0].meters[0].events, 2);
        for id in ["e-old", "e-new"] {
            assert_eq!(
                states[0]
                    .dedupe
                    .check(key.fingerprint("acme", id), 77)
                    .expect("readable"),
                Seen::Duplicate,
                "{id}"
            );
        }
        assert_eq!(
            states[0]
                .dedupe
                .check(key.fingerprint("acme", "e-other"), 77)
                .expect("readable"),
            Seen::New
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record whose account normalization rules changed claims the account it was sent with:
    /// the one a resend is fingerprinted with.
    #[test]
    fn a_normalized_record_claims_the_account_it_was_sent_with() {
        let dir = std::env::temp_dir().join(format!("ratingd-recover-as-sent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir).unwrap();
        let key = store.key();
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .to_utc();
        let moved = RatedRecord {
            as_sent: Some(Box::new(crate::domain::record::AsSent {
                account_id: "radius".into(),
                meter: "api.requests".into(),
                quantity: Decimal::from(10),
                attributes: vec![("imsi".into(), "262011234567890".into())],
                rules: vec!["sim-to-account".into()],
            })),
            ..record("e-sim", 1_000, at)
        };
        let mut segment = SegmentWriter::default();
        segment.begin(Vec::new());
        segment.push(&moved.as_ref());
        store
            .commit(Commit {
                parts: codec::seal_segments([segment.finish().as_slice()]),
                accounts: vec!["acme".into()],
                ..Commit::default()
            })
            .unwrap();
        let (states, _) = recover(&store, &context(), 1, 35, at + chrono::Duration::hours(1)).unwrap();
        let check = |account: &str| states[0].dedupe.check(key.fingerprint(account, "e-sim"), 77).unwrap();
        assert_eq!(check("radius"), Seen::Duplicate);
        assert_eq!(check("acme"), Seen::New);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

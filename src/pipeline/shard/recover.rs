//! Recovery: every shard's state from its last checkpoint and the blocks after it.

use chrono::{DateTime, Utc};
use tracing::{error, warn};

use super::ShardState;
use crate::pipeline::RatingContext;
use crate::store::checkpoint::CheckpointFiles;
use crate::store::codec::{self, CodecError};
use crate::store::{Store, StoreError};

/// Rebuilds every shard's state: the latest checkpoint of each shard (when they were taken with
/// the current shard count), then every block after it, checksums verified. Ids older than the
/// window at `now` (the pipeline's clock, the same one ingest checks TOO_OLD against) are dropped.
pub fn recover(
    store: &Store,
    ctx: &RatingContext,
    shards: usize,
    window_days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<ShardState>, StoreError> {
    let mut states: Vec<ShardState> = (0..shards).map(|_| ShardState::default()).collect();
    // Per shard: the first commit seq its checkpoint does not reflect (0 without one).
    let mut next: Vec<u64> = vec![0; shards];
    let files = CheckpointFiles::new(std::path::Path::new(store.dir()));
    for k in 0..shards {
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
            break;
        }
        match ShardState::decode(&checkpoint.state, ctx) {
            Ok(state) => {
                states[k] = state;
                next[k] = checkpoint.next_seq;
            }
            Err(error) => warn!(shard = k, %error, "checkpoint not usable; its shard is rebuilt from the blocks"),
        }
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
            let plan = ctx.catalogue.plan(&record.plan).ok_or_else(|| {
                store.corrupt(
                    name.clone(),
                    CodecError::Invalid("record names a plan missing from the catalogue"),
                )
            })?;
            states[k].apply(&record, plan);
        }
    }
    store.record_damage(&damage)?;
    for s in &mut states {
        s.evict(now, window_days);
    }
    Ok(states)
}

//! The pipeline's errors: why a batch could not be taken in or acknowledged, and why the
//! pipeline could not start. Services map them to statuses at the edge.

use std::sync::Arc;

use crate::store::StoreError;

/// Why a batch could not be taken in or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// A commit failed (its error as text): nothing more is taken until a restart.
    #[error("storage failed, ratingd takes no more work until restarted: {0}")]
    StorageFailed(String),
    #[error("ratingd is shutting down")]
    ShuttingDown,
    /// The account's stored records failed their check at start (`why` names the file and key).
    #[error("the records of account {account:?} cannot be trusted: {why}; restore the data dir from a backup")]
    Damaged { account: String, why: Arc<str> },
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Recovery could not read the data dir.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A shard or the committer thread could not be started.
    #[error("cannot start a pipeline thread: {0}")]
    Thread(std::io::Error),
}

//! Every error a client can get, and its gRPC status: the one mapping, written as exhaustive
//! matches (no catch-all arm), so a new error cannot reach a client without a deliberate code.
//!
//! - bad input: `INVALID_ARGUMENT` (or `RESOURCE_EXHAUSTED` when over a size limit);
//! - no such thing: `NOT_FOUND`;
//! - not allowed: `UNAUTHENTICATED` / `PERMISSION_DENIED`;
//! - ratingd cannot serve now (storage failed, shutting down, storage unreachable):
//!   `UNAVAILABLE`; data that cannot be trusted: `DATA_LOSS`;
//! - a rule of the tariffs or of stored data stands in the way: `FAILED_PRECONDITION`.
//!
//! Lower layers keep their own error enums ([`PipelineError`], [`StoreError`], [`RerateError`],
//! [`SubscriptionError`], the billing cycle's [`StatementError`], security's [`AuthError`], the
//! contract's [`InputError`]); they are wrapped here whole and mapped variant by variant. This
//! is the only place that knows them all.

use tonic::{Code, Status};

use crate::billing::statement::StatementError;
use crate::domain::mediation::RuleErrors;
use crate::domain::subscription::SubscriptionError;
use crate::domain::tariff_file::TariffErrors;
use crate::pipeline::PipelineError;
use crate::pipeline::balance::BalanceError;
use crate::pipeline::corrections::CorrectionError;
use crate::rating::RerateError;
use crate::security::auth::AuthError;
use crate::store::StoreError;
use crate::wire::InputError;

/// Every error a service (or the guard in front of them) answers a call with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // Authentication and authorisation.
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "batch {batch_id} refused whole: event {index} has account {account:?}, outside the accounts of token \
         {token:?} (those that start with {prefix:?})"
    )]
    BatchOutOfScope {
        batch_id: u64,
        index: usize,
        account: String,
        token: String,
        prefix: String,
    },
    #[error("not answered within the request timeout of {seconds} s")]
    Timeout { seconds: f64 },

    // Input.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    MessageTooLarge(String),
    #[error("batch {batch_id} holds {events} events; the limit is {limit}")]
    BatchTooLarge { batch_id: u64, events: usize, limit: usize },
    #[error("n must be between 1 and {max}")]
    BadTopN { max: usize },
    #[error("at most {max} events per quote")]
    TooManyQuoteEvents { max: usize },
    #[error("give exactly one of plan_id and account_id")]
    QuoteTarget,
    #[error("event id {event_id:?} is used by several accounts ({first}, {second}, ...); give account_id")]
    AmbiguousEventId {
        event_id: String,
        first: String,
        second: String,
    },
    #[error("give a reason or ids")]
    ReprocessNeedsSelection,
    #[error("{given} subscriptions in one call; the limit is {limit}")]
    TooManySubscriptions { given: usize, limit: usize },
    #[error("{}unknown plan {plan:?}", .index.map(|i| format!("subscription {i}: ")).unwrap_or_default())]
    UnknownPlan { index: Option<usize>, plan: String },
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error("cannot read {path}: {error}")]
    TariffFileUnreadable { path: String, error: String },
    #[error("{}", .0.to_string().replace('\n', "; "))]
    TariffFile(TariffErrors),
    #[error("cannot read the mediation rules {path}: {error}")]
    RulesFileUnreadable { path: String, error: String },
    #[error("mediation rules: {}", .0.to_string().replace('\n', "; "))]
    RulesFile(RuleErrors),
    #[error("plans in use are missing from the new file: {}", .0.join(", "))]
    PlansInUseMissing(Vec<String>),
    #[error(
        "the new file edits versions in force: {}; a version in force is never edited: add a version with a \
         later effective_from (tariff corrections and re-rating are a later release's)",
        .0.join("; ")
    )]
    VersionsEdited(Vec<String>),
    #[error("the new file makes subscriptions in force clash: {0}")]
    SubscriptionsClash(String),
    #[error("{0}")]
    ChargeNotBillable(String),
    #[error("charge {charge_id:?} of account {account:?} was already added with other content")]
    ChargeConflict { account: String, charge_id: String },

    // Not found.
    #[error("no usage for account {account:?} in period {period:?}")]
    NoTotals { account: String, period: String },
    #[error("no usage of meter {meter:?} for {account:?} in {period:?}")]
    NoMeterUsage {
        meter: String,
        account: String,
        period: String,
    },
    #[error("no rated record {event_id:?} for account {account:?}")]
    NoRecord { event_id: String, account: String },
    /// Retention removed what was asked for: `what` names it, with the retention and the date.
    #[error(
        "{what} (retention_days = {days}, removed on {removed_at}; the retention export holds them when one is configured)"
    )]
    Retired {
        what: String,
        days: u32,
        removed_at: String,
    },
    #[error("account {0:?} has no subscription")]
    NoSubscription(String),
    #[error("no suspense entry {0}")]
    NoSuspenseEntry(String),

    // Rules of the tariffs or the stored data.
    #[error("plan {0:?} is no longer in the tariff catalogue")]
    PlanGone(String),
    #[error(transparent)]
    Rerate(#[from] RerateError),
    #[error(transparent)]
    Statement(#[from] StatementError),

    // Corrections.
    #[error("{0}")]
    BadCorrection(String),
    #[error("{0}")]
    NothingToCorrect(String),
    #[error("correction id {id:?} was already used for another request ({earlier}); use a new id")]
    CorrectionIdTaken { id: String, earlier: String },
    #[error(transparent)]
    Correction(#[from] CorrectionError),

    // Balances and charging.
    #[error(transparent)]
    Balance(#[from] BalanceError),

    // ratingd itself.
    #[error("batch {batch_id} refused whole: {cause}")]
    BatchRefused { batch_id: u64, cause: PipelineError },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a blocking task failed: {0}")]
    TaskFailed(String),
}

/// The status code of a pipeline error, wherever it surfaces.
fn pipeline_code(e: &PipelineError) -> Code {
    match e {
        PipelineError::StorageFailed(_) | PipelineError::ShuttingDown => Code::Unavailable,
        PipelineError::Damaged { .. } => Code::DataLoss,
    }
}

impl ApiError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Auth(e) => match e {
                AuthError::MissingToken
                | AuthError::MalformedToken
                | AuthError::UnknownToken
                | AuthError::ExpiredToken => Code::Unauthenticated,
                AuthError::RoleNotAllowed { .. } | AuthError::AccountOutOfScope { .. } => Code::PermissionDenied,
            },
            ApiError::BatchOutOfScope { .. } => Code::PermissionDenied,
            ApiError::Timeout { .. } => Code::DeadlineExceeded,
            ApiError::MessageTooLarge(_) | ApiError::BatchTooLarge { .. } | ApiError::TooManyQuoteEvents { .. } => {
                Code::ResourceExhausted
            }
            // Every bad field of a request, whichever conversion finds it.
            ApiError::Input(_)
            | ApiError::BadTopN { .. }
            | ApiError::QuoteTarget
            | ApiError::AmbiguousEventId { .. }
            | ApiError::ReprocessNeedsSelection
            | ApiError::TooManySubscriptions { .. }
            | ApiError::UnknownPlan { .. }
            | ApiError::Subscription(_)
            | ApiError::TariffFileUnreadable { .. }
            | ApiError::TariffFile(_)
            | ApiError::RulesFileUnreadable { .. }
            | ApiError::RulesFile(_)
            | ApiError::PlansInUseMissing(_) => Code::InvalidArgument,
            ApiError::VersionsEdited(_) | ApiError::SubscriptionsClash(_) | ApiError::ChargeNotBillable(_) => {
                Code::FailedPrecondition
            }
            ApiError::ChargeConflict { .. } => Code::AlreadyExists,
            ApiError::NoTotals { .. }
            | ApiError::NoMeterUsage { .. }
            | ApiError::NoRecord { .. }
            | ApiError::Retired { .. }
            | ApiError::NoSubscription(_)
            | ApiError::NoSuspenseEntry(_) => Code::NotFound,
            ApiError::PlanGone(_) | ApiError::Rerate(_) => Code::FailedPrecondition,
            ApiError::Statement(e) => match e {
                StatementError::PlanGone(_) | StatementError::Rerate(_) => Code::FailedPrecondition,
                // The records read back do not match the committed totals: one cannot be trusted.
                StatementError::RecordsDisagree { .. } => Code::DataLoss,
            },
            ApiError::BatchRefused { cause, .. } => pipeline_code(cause),
            ApiError::Pipeline(e) => pipeline_code(e),
            ApiError::Store(e) => match e {
                // The disk or sled failed: ratingd cannot serve this now.
                StoreError::Sled(_) | StoreError::Io { .. } => Code::Unavailable,
                // A stored value failed its check: what it holds cannot be trusted.
                StoreError::Corrupt { .. } => Code::DataLoss,
                StoreError::UnkeyedDataDir(_) => Code::FailedPrecondition,
            },
            ApiError::BadCorrection(_) => Code::InvalidArgument,
            ApiError::NothingToCorrect(_) => Code::NotFound,
            ApiError::CorrectionIdTaken { .. } => Code::AlreadyExists,
            ApiError::Correction(e) => match e {
                CorrectionError::UnknownEvent(_) => Code::NotFound,
                CorrectionError::Invalid(_) => Code::InvalidArgument,
                CorrectionError::NoOpenPeriod(_) => Code::FailedPrecondition,
                CorrectionError::Pipeline(e) => pipeline_code(e),
                CorrectionError::Storage(_) => Code::Unavailable,
            },
            ApiError::Balance(e) => match e {
                BalanceError::UnknownSession(_) | BalanceError::NoBalance(_) => Code::NotFound,
                BalanceError::SessionExists(_) | BalanceError::IdTaken(_) => Code::AlreadyExists,
                BalanceError::SessionEnded(_) | BalanceError::Insufficient(_) | BalanceError::NoTariff(_) => {
                    Code::FailedPrecondition
                }
                BalanceError::Invalid(_) => Code::InvalidArgument,
                BalanceError::Storage(_) => Code::Unavailable,
                BalanceError::Pipeline(e) => pipeline_code(e),
            },
            ApiError::TaskFailed(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Bad input answers through the one mapping, wherever a handler meets it.
impl From<InputError> for Status {
    fn from(e: InputError) -> Status {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_storage_error_gets_the_same_code_everywhere() {
        let corrupt = || {
            ApiError::Store(StoreError::Corrupt {
                file: "d".into(),
                key: "b/1/0".into(),
                error: crate::store::codec::CodecError::Checksum,
            })
        };
        assert_eq!(corrupt().code(), Code::DataLoss);
        let io = ApiError::Store(StoreError::Sled(sled::Error::Io(std::io::Error::other("disk"))));
        assert_eq!(io.code(), Code::Unavailable);
        assert_eq!(
            ApiError::Pipeline(PipelineError::ShuttingDown).code(),
            Code::Unavailable
        );
        let status = Status::from(ApiError::BatchRefused {
            batch_id: 7,
            cause: PipelineError::Damaged {
                account: "a".into(),
                why: "b/1/0 in d/db failed its check".into(),
            },
        });
        assert_eq!(status.code(), Code::DataLoss);
        assert!(
            status
                .message()
                .starts_with("batch 7 refused whole: the records of account \"a\"")
        );
    }
}

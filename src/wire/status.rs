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
//! [`SubscriptionError`]); they are wrapped here whole and mapped variant by variant.

use tonic::{Code, Status};

use crate::domain::mediation::RuleErrors;
use crate::domain::subscription::SubscriptionError;
use crate::domain::tariff_file::TariffErrors;
use crate::pipeline::PipelineError;
use crate::pipeline::balance::BalanceError;
use crate::pipeline::corrections::CorrectionError;
use crate::rating::RerateError;
use crate::store::StoreError;

/// What a subscription from a request got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionInputError {
    #[error("account_id must be 1..=128 bytes")]
    AccountId,
    #[error("{field}: {text:?} is not an RFC 3339 date-time")]
    Time { field: &'static str, text: String },
    #[error("discount_percent: {0}")]
    DiscountNotExact(String),
    #[error("discount_percent must be greater than 0 and at most 100")]
    DiscountRange,
    #[error("alert_thresholds: {0:?} is not a positive decimal")]
    AlertThreshold(String),
}

/// Every error a service (or the guard in front of them) answers a call with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // Authentication and authorisation.
    #[error("no authorization header (want \"Bearer <token>\")")]
    MissingToken,
    #[error("the authorization header is not \"Bearer <token>\"")]
    MalformedToken,
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error("the token has expired")]
    ExpiredToken,
    #[error("token {token:?} has role {role}; {method} needs {needed}")]
    RoleNotAllowed {
        token: String,
        role: &'static str,
        method: String,
        needed: &'static str,
    },
    #[error("token {token:?} may only use accounts that start with {prefix:?}, not {account:?}")]
    AccountOutOfScope {
        token: String,
        prefix: String,
        account: String,
    },
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
    #[error("malformed protobuf message: {0}")]
    MalformedMessage(String),
    #[error("{0}")]
    MessageTooLarge(String),
    #[error("batch {batch_id} holds {events} events; the limit is {limit}")]
    BatchTooLarge { batch_id: u64, events: usize, limit: usize },
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{field}: {text:?} is not an RFC 3339 date-time")]
    BadTime { field: &'static str, text: String },
    #[error("malformed page_token")]
    BadPageToken,
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
    #[error("unknown reason")]
    UnknownReason,
    #[error("malformed id {0:?}")]
    BadSuspenseId(String),
    #[error("give a reason or ids")]
    ReprocessNeedsSelection,
    #[error("{given} subscriptions in one call; the limit is {limit}")]
    TooManySubscriptions { given: usize, limit: usize },
    #[error("{}{error}", .index.map(|i| format!("subscription {i}: ")).unwrap_or_default())]
    BadSubscription {
        index: Option<usize>,
        error: SubscriptionInputError,
    },
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
    BadCharge(String),
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
    #[error("the records of {account:?} {period:?} sum to {records} but the totals say {totals}")]
    RecordsDisagree {
        account: String,
        period: String,
        records: rust_decimal::Decimal,
        totals: rust_decimal::Decimal,
    },

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
    #[error("{field}: {detail}")]
    BadAmount { field: &'static str, detail: String },
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
            ApiError::MissingToken | ApiError::MalformedToken | ApiError::UnknownToken | ApiError::ExpiredToken => {
                Code::Unauthenticated
            }
            ApiError::RoleNotAllowed { .. } | ApiError::AccountOutOfScope { .. } | ApiError::BatchOutOfScope { .. } => {
                Code::PermissionDenied
            }
            ApiError::Timeout { .. } => Code::DeadlineExceeded,
            ApiError::MessageTooLarge(_) | ApiError::BatchTooLarge { .. } | ApiError::TooManyQuoteEvents { .. } => {
                Code::ResourceExhausted
            }
            ApiError::MalformedMessage(_)
            | ApiError::Required(_)
            | ApiError::BadTime { .. }
            | ApiError::BadPageToken
            | ApiError::BadTopN { .. }
            | ApiError::QuoteTarget
            | ApiError::AmbiguousEventId { .. }
            | ApiError::UnknownReason
            | ApiError::BadSuspenseId(_)
            | ApiError::ReprocessNeedsSelection
            | ApiError::TooManySubscriptions { .. }
            | ApiError::BadSubscription { .. }
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
            ApiError::BadCharge(_) => Code::InvalidArgument,
            ApiError::ChargeConflict { .. } => Code::AlreadyExists,
            ApiError::NoTotals { .. }
            | ApiError::NoMeterUsage { .. }
            | ApiError::NoRecord { .. }
            | ApiError::Retired { .. }
            | ApiError::NoSubscription(_)
            | ApiError::NoSuspenseEntry(_) => Code::NotFound,
            ApiError::PlanGone(_) | ApiError::Rerate(_) => Code::FailedPrecondition,
            ApiError::RecordsDisagree { .. } => Code::DataLoss,
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
            ApiError::BadAmount { .. } => Code::InvalidArgument,
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

//! What a request got wrong, found while converting it to domain values: always the caller's
//! fault (INVALID_ARGUMENT at the service edge). The conversions here know nothing of the
//! pipeline's or the store's errors; the edge maps every error to a status.

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

/// Bad input in a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("malformed protobuf message: {0}")]
    MalformedMessage(String),
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{field}: {text:?} is not an RFC 3339 date-time")]
    BadTime { field: &'static str, text: String },
    #[error("malformed page_token")]
    BadPageToken,
    #[error("unknown reason")]
    UnknownReason,
    #[error("malformed id {0:?}")]
    BadSuspenseId(String),
    #[error("{}{error}", .index.map(|i| format!("subscription {i}: ")).unwrap_or_default())]
    BadSubscription {
        index: Option<usize>,
        error: SubscriptionInputError,
    },
    #[error("{0}")]
    BadCharge(String),
    #[error("{field}: {detail}")]
    BadAmount { field: &'static str, detail: String },
}

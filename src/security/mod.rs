//! Who may call what, and the bounds on what they send (SPEC section 10, docs/security.md).
//!
//! - [`auth`]: bearer tokens with roles and account scopes, and [`auth::AuthError`], why one is
//!   refused;
//! - [`tls`]: the listener's certificates and the plaintext rule.
//!
//! The guard in front of every service, and the mapping of refusals to statuses, are the service
//! edge's (`edge::guard`). Nothing here names tonic. Every refusal goes through [`refused`]: one metric, and a log line per reason at most once a
//! second (with the count of those not logged), so hostile traffic cannot flood the log. Events
//! rejected one by one into suspense are logged the same way (`telemetry::count_ack`).

pub mod auth;
pub mod tls;

use tracing::warn;

use crate::telemetry::RateLimitedLog;

/// Why a request (or a whole batch) was refused; the label of `ratingd_requests_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token, a malformed or unknown one, or one that expired.
    Unauthenticated,
    /// A token without the role, or a batch or query outside the token's account scope.
    PermissionDenied,
    /// Over a configured limit (message size, events per batch).
    ResourceExhausted,
    /// A unary call that took longer than `limits.request_timeout_seconds`.
    DeadlineExceeded,
    /// A message that does not decode.
    InvalidArgument,
    /// A batch or query for an account whose stored records failed their check at start.
    DataLoss,
}

impl Refused {
    pub const ALL: [Refused; 6] = [
        Refused::Unauthenticated,
        Refused::PermissionDenied,
        Refused::ResourceExhausted,
        Refused::DeadlineExceeded,
        Refused::InvalidArgument,
        Refused::DataLoss,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refused::Unauthenticated => "unauthenticated",
            Refused::PermissionDenied => "permission_denied",
            Refused::ResourceExhausted => "resource_exhausted",
            Refused::DeadlineExceeded => "deadline_exceeded",
            Refused::InvalidArgument => "invalid_argument",
            Refused::DataLoss => "data_loss",
        }
    }
}

/// `n` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    // Invariant: the OS random source (getrandom) does not fail on Linux once booted.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source works");
    bytes
}

/// One limiter per reason.
static REFUSAL_LOG: [RateLimitedLog; Refused::ALL.len()] = [const { RateLimitedLog::new() }; Refused::ALL.len()];

/// Counts a refusal and logs it, at most once a second per reason.
pub fn refused(reason: Refused, method: &str, detail: &str) {
    metrics::counter!(crate::telemetry::REQUESTS_REFUSED, "reason" => reason.label()).increment(1);
    if let Some(held_back) = REFUSAL_LOG[reason as usize].allow() {
        warn!(
            reason = reason.label(),
            method,
            detail,
            not_logged_since_last = held_back,
            "request refused"
        );
    }
}

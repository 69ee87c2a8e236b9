//! Who may call what, and the bounds on what they send (SPEC section 10, docs/security.md).
//!
//! - [`auth`]: bearer tokens with roles and account scopes;
//! - [`guard`]: the tower layer in front of every gRPC service: checks the token before the
//!   request body is read, bounds unary calls in time, and reports over-size messages as
//!   `RESOURCE_EXHAUSTED`;
//! - [`keyed`]: the data dir's secret hash key for client-chosen strings;
//! - [`tls`]: the listener's certificates and the plaintext rule.
//!
//! Every refusal goes through [`refused`]: one metric, and a log line per reason at most once a
//! second (with the count of those not logged), so hostile traffic cannot flood the log.

pub mod auth;
pub mod guard;
pub mod keyed;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

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

    /// The refusal a status code stands for, if it is one.
    pub fn of(code: tonic::Code) -> Option<Refused> {
        match code {
            tonic::Code::Unauthenticated => Some(Refused::Unauthenticated),
            tonic::Code::PermissionDenied => Some(Refused::PermissionDenied),
            tonic::Code::ResourceExhausted => Some(Refused::ResourceExhausted),
            tonic::Code::DeadlineExceeded => Some(Refused::DeadlineExceeded),
            tonic::Code::InvalidArgument => Some(Refused::InvalidArgument),
            tonic::Code::DataLoss => Some(Refused::DataLoss),
            _ => None,
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

/// Per reason: the second of the last log line, and how many refusals were not logged since.
static LAST_LOGGED: [AtomicU64; Refused::ALL.len()] = [const { AtomicU64::new(0) }; Refused::ALL.len()];
static UNLOGGED: [AtomicU64; Refused::ALL.len()] = [const { AtomicU64::new(0) }; Refused::ALL.len()];

/// Counts a refusal and logs it, at most once a second per reason.
pub fn refused(reason: Refused, method: &str, detail: &str) {
    metrics::counter!(crate::telemetry::REQUESTS_REFUSED, "reason" => reason.label()).increment(1);
    let i = reason as usize;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_LOGGED[i].load(Ordering::Relaxed);
    if now > last
        && LAST_LOGGED[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let also = UNLOGGED[i].swap(0, Ordering::Relaxed);
        warn!(
            reason = reason.label(),
            method,
            detail,
            not_logged_since_last = also,
            "request refused"
        );
    } else {
        UNLOGGED[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// [`refused`] for a status about to be returned, if its code is a refusal.
pub fn note(method: &str, status: &tonic::Status) {
    if let Some(reason) = Refused::of(status.code()) {
        refused(reason, method, status.message());
    }
}

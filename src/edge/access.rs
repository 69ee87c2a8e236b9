//! Who is calling and what they may touch: the caller the guard put into a request's extensions,
//! the account-scope check every handler makes before it reads or writes an account, and the
//! count of refusals a handler answers.

use tonic::{Code, Request, Status};

use super::ApiError;
use crate::security::auth::Principal;
use crate::security::{Refused, refused};

/// The caller of a request, if tokens are in use; `None` when ratingd runs without tokens.
pub fn principal<T>(request: &Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

/// Checks that the caller (if any) may touch `account`.
pub fn check_account<T>(request: &Request<T>, account: &str) -> Result<(), ApiError> {
    principal(request).map_or(Ok(()), |p| p.check_account(account).map_err(ApiError::from))
}

/// The refusal a status code stands for, if it is one (the label of
/// `ratingd_requests_refused_total`).
pub fn refusal_of(code: Code) -> Option<Refused> {
    match code {
        Code::Unauthenticated => Some(Refused::Unauthenticated),
        Code::PermissionDenied => Some(Refused::PermissionDenied),
        Code::ResourceExhausted => Some(Refused::ResourceExhausted),
        Code::DeadlineExceeded => Some(Refused::DeadlineExceeded),
        Code::InvalidArgument => Some(Refused::InvalidArgument),
        Code::DataLoss => Some(Refused::DataLoss),
        _ => None,
    }
}

/// Counts and logs (rate-limited) a status about to be returned, if its code is a refusal.
pub fn note(method: &str, status: &Status) {
    if let Some(reason) = refusal_of(status.code()) {
        refused(reason, method, status.message());
    }
}

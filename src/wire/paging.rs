//! One page-size rule for every listing, and the page tokens: opaque lowercase hex of the last
//! position returned (a record's commit and index, an account id, a suspense entry's key).

use super::InputError;
use crate::domain::hex::{hex, unhex};
use crate::domain::usage::SuspenseId;

use crate::limits::DEFAULT_PAGE;
pub use crate::limits::MAX_PAGE;

/// The page size of a listing request: 0 means the default, anything larger is capped.
pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// The token after a record at (commit seq, index in the commit).
pub fn record_token((seq, index): (u64, u32)) -> String {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend_from_slice(&index.to_be_bytes());
    hex(&bytes)
}

pub fn parse_record_token(token: &str) -> Result<(u64, u32), InputError> {
    let bytes = unhex(token).filter(|b| b.len() == 12).ok_or(InputError::BadPageToken)?;
    let seq = u64::from_be_bytes(bytes[..8].try_into().map_err(|_| InputError::BadPageToken)?);
    let index = u32::from_be_bytes(bytes[8..].try_into().map_err(|_| InputError::BadPageToken)?);
    Ok((seq, index))
}

/// The token after a ledger entry's number.
pub fn ledger_token(number: u64) -> String {
    hex(&number.to_be_bytes())
}

pub fn parse_ledger_token(token: &str) -> Result<u64, InputError> {
    let bytes = unhex(token).filter(|b| b.len() == 8).ok_or(InputError::BadPageToken)?;
    Ok(u64::from_be_bytes(
        bytes.try_into().map_err(|_| InputError::BadPageToken)?,
    ))
}

/// The token after an account id.
pub fn account_token(account: &str) -> String {
    hex(account.as_bytes())
}

pub fn parse_account_token(token: &str) -> Result<String, InputError> {
    unhex(token)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(InputError::BadPageToken)
}

/// A suspense entry's id as clients see it (also the token after it).
pub fn suspense_id(id: &SuspenseId) -> String {
    hex(&id.0)
}

pub fn parse_suspense_token(token: &str) -> Result<SuspenseId, InputError> {
    unhex(token).map(SuspenseId).ok_or(InputError::BadPageToken)
}

pub fn parse_suspense_id(id: &str) -> Result<SuspenseId, InputError> {
    unhex(id)
        .map(SuspenseId)
        .ok_or_else(|| InputError::BadSuspenseId(id.to_string()))
}

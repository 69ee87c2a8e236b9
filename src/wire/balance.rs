//! Balances and charging sessions between proto and domain: requests checked into pipeline
//! operations, wallets, ledger entries and sessions out.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::ApiError;
use super::convert::{instant, reason_to_proto};
use super::proto;
use crate::domain::balance::{LedgerEntry, Session, Wallet, at_record_scale};
use crate::domain::money::{Currency, MAX_INPUT_SCALE, parse_exact};
use crate::domain::usage::{MAX_ACCOUNT_BYTES, MAX_ID_BYTES, RejectReason};
use crate::pipeline::balance::BalanceOp;
use crate::pipeline::intake::{QUANTITY_RULE, quantity_of};

/// Largest amount a top-up, credit limit or threshold may have: far beyond any balance, and
/// small enough that no sum of them loses a digit.
const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Most units one Authorize or Update may ask for.
const MAX_REQUESTED_UNITS: i64 = 1_000_000_000;

fn bad(field: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::BadAmount {
        field,
        detail: detail.into(),
    }
}

fn required(field: &'static str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.is_empty() || text.len() > max {
        return Err(bad(field, format!("must be 1..={max} bytes")));
    }
    Ok(())
}

/// An amount of `currency`: a plain decimal within its minor unit places, `0 <= amount <= 1e12`
/// (`positive`: above zero).
fn amount(field: &'static str, text: &str, currency: Currency, positive: bool) -> Result<Decimal, ApiError> {
    let amount = parse_exact(text).map_err(|m| bad(field, m))?;
    if amount.is_sign_negative() && !amount.is_zero() || positive && amount.is_zero() {
        let want = if positive { "> 0" } else { ">= 0" };
        return Err(bad(field, format!("must be {want}, got {amount}")));
    }
    if amount > Decimal::from(MAX_AMOUNT) {
        return Err(bad(field, format!("must be at most {MAX_AMOUNT}")));
    }
    let places = currency.minor_unit().unwrap_or(MAX_INPUT_SCALE);
    if amount.normalize().scale() > places {
        return Err(bad(
            field,
            format!("{amount} has more places than {currency} has ({places})"),
        ));
    }
    Ok(amount)
}

fn currency(text: &str) -> Result<Currency, ApiError> {
    text.parse().map_err(|m: String| bad("currency", m))
}

/// A quantity of units, as a session reports it.
pub fn units(field: &'static str, q: Option<proto::Quantity>) -> Result<Decimal, ApiError> {
    let q = q.ok_or(ApiError::Required(field))?;
    let units = quantity_of(q.units, q.nanos).ok_or_else(|| bad(field, QUANTITY_RULE))?;
    if units > Decimal::from(MAX_REQUESTED_UNITS) {
        return Err(bad(field, format!("must be at most {MAX_REQUESTED_UNITS}")));
    }
    Ok(units)
}

pub fn top_up(p: proto::TopUpRequest) -> Result<BalanceOp, ApiError> {
    required("account_id", &p.account_id, MAX_ACCOUNT_BYTES)?;
    required("id", &p.id, MAX_ID_BYTES)?;
    let currency = currency(&p.currency)?;
    let amount = amount("amount", &p.amount, currency, true)?;
    let expires = if p.expires_at.is_empty() {
        None
    } else {
        Some(instant("expires_at", &p.expires_at)?)
    };
    Ok(BalanceOp::TopUp {
        account: p.account_id,
        currency,
        amount,
        id: p.id,
        expires,
    })
}

pub fn limits(p: proto::SetBalanceLimitsRequest) -> Result<BalanceOp, ApiError> {
    required("account_id", &p.account_id, MAX_ACCOUNT_BYTES)?;
    let currency = currency(&p.currency)?;
    let credit_limit = if p.credit_limit.is_empty() {
        None
    } else {
        Some(amount("credit_limit", &p.credit_limit, currency, false)?)
    };
    let low_balance = if p.set_low_balance_thresholds {
        let list = p
            .low_balance_thresholds
            .iter()
            .map(|t| amount("low_balance_thresholds", t, currency, false))
            .collect::<Result<Vec<_>, _>>()?;
        Some(list)
    } else {
        None
    };
    Ok(BalanceOp::Configure {
        account: p.account_id,
        currency,
        credit_limit,
        low_balance,
    })
}

pub fn authorize(p: proto::AuthorizeRequest) -> Result<BalanceOp, ApiError> {
    required("session_id", &p.session_id, MAX_ID_BYTES)?;
    required("account_id", &p.account_id, MAX_ACCOUNT_BYTES)?;
    required("meter", &p.meter, MAX_ID_BYTES)?;
    let started = if p.started_at.is_empty() {
        None
    } else {
        Some(instant("started_at", &p.started_at)?)
    };
    Ok(BalanceOp::Authorize {
        started,
        requested: units("requested_units", p.requested_units)?,
        session: p.session_id,
        account: p.account_id,
        meter: p.meter,
        attributes: p.attributes.into_iter().map(|a| (a.key, a.value)).collect(),
    })
}

/// A balance figure, with the 9 places of record charges.
fn text(d: Decimal) -> String {
    at_record_scale(d).to_string()
}

fn rfc3339(nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339()
}

pub fn wallet_to_proto(account: &str, wallet: Option<&Wallet>, already_applied: bool) -> proto::BalanceResponse {
    let balances = wallet
        .map(|w| {
            w.purses
                .iter()
                .map(|p| proto::CurrencyBalance {
                    currency: p.currency.to_string(),
                    available: text(p.available()),
                    reserved: text(p.reserved),
                    credit_limit: text(p.credit_limit),
                    topped_up: text(p.topped_up),
                    adjusted: text(p.adjusted),
                    committed: text(p.committed),
                    expired: text(p.expired),
                    low_balance_thresholds: p.low_balance.iter().map(|t| t.normalize().to_string()).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    proto::BalanceResponse {
        account_id: account.to_string(),
        balances,
        already_applied,
    }
}

pub fn entry_to_proto(e: &LedgerEntry) -> proto::LedgerEntry {
    proto::LedgerEntry {
        number: e.number,
        kind: e.kind.as_str().to_string(),
        currency: e.currency.to_string(),
        // As entered for a top-up, with 9 places for what rating computed.
        amount: e.amount.to_string(),
        id: e.id.clone(),
        at: rfc3339(e.at_unix_nanos),
        available_after: text(e.available_after),
        reserved_after: text(e.reserved_after),
        detail: e.detail.clone(),
    }
}

pub fn grant_to_proto(granted: Decimal, s: &Session) -> proto::GrantResponse {
    proto::GrantResponse {
        session_id: s.id.clone(),
        granted_units: granted.normalize().to_string(),
        total_granted_units: s.granted.normalize().to_string(),
        reserved: text(s.reserved),
        currency: s.currency.to_string(),
        expires_at: rfc3339(s.expires_unix_nanos),
        started_at: rfc3339(s.started_unix_nanos),
    }
}

pub fn ended_to_proto(s: &Session) -> proto::TerminateResponse {
    let Some(o) = &s.outcome else {
        return proto::TerminateResponse {
            session_id: s.id.clone(),
            ..Default::default()
        };
    };
    let rejected = o.rejected.as_ref().and_then(|(reason, _)| {
        RejectReason::ALL
            .iter()
            .find(|r| r.as_str() == reason)
            .map(|r| reason_to_proto(*r) as i32)
    });
    proto::TerminateResponse {
        session_id: s.id.clone(),
        used_units: o.used.normalize().to_string(),
        charge: text(o.charge),
        currency: s.currency.to_string(),
        released: text(o.released),
        overdraft: text(o.overdraft),
        beyond_grant_units: o.beyond_grant.normalize().to_string(),
        rejected: rejected.unwrap_or(0),
        rejected_detail: o
            .rejected
            .as_ref()
            .map(|(r, d)| format!("{r}: {d}"))
            .unwrap_or_default(),
        terminated_at: rfc3339(o.at_unix_nanos),
    }
}

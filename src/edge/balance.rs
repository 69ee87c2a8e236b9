//! Balance and charging requests checked into pipeline operations: ids, amounts within their
//! currency's places and [`MAX_AMOUNT`], units within [`MAX_REQUESTED_UNITS`]. A bad field is
//! [`InputError::BadAmount`] naming it.

use rust_decimal::Decimal;

use crate::domain::money::{Currency, MAX_INPUT_SCALE, parse_exact};
use crate::domain::usage::{QUANTITY_RULE, quantity_of};
use crate::limits::{MAX_ACCOUNT_BYTES, MAX_AMOUNT, MAX_ID_BYTES, MAX_REQUESTED_UNITS};
use crate::pipeline::balance::BalanceOp;
use crate::wire::InputError;
use crate::wire::convert::instant;
use crate::wire::proto;

fn bad(field: &'static str, detail: impl Into<String>) -> InputError {
    InputError::BadAmount {
        field,
        detail: detail.into(),
    }
}

fn required(field: &'static str, text: &str, max: usize) -> Result<(), InputError> {
    if text.is_empty() || text.len() > max {
        return Err(bad(field, format!("must be 1..={max} bytes")));
    }
    Ok(())
}

/// An amount of `currency`: a plain decimal within its minor unit places, `0 <= amount <= 1e12`
/// (`positive`: above zero).
fn amount(field: &'static str, text: &str, currency: Currency, positive: bool) -> Result<Decimal, InputError> {
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

fn currency(text: &str) -> Result<Currency, InputError> {
    text.parse().map_err(|m: String| bad("currency", m))
}

/// A quantity of units, as a session reports it.
pub fn units(field: &'static str, q: Option<proto::Quantity>) -> Result<Decimal, InputError> {
    let q = q.ok_or(InputError::Required(field))?;
    let units = quantity_of(q.units, q.nanos).ok_or_else(|| bad(field, QUANTITY_RULE))?;
    if units > Decimal::from(MAX_REQUESTED_UNITS) {
        return Err(bad(field, format!("must be at most {MAX_REQUESTED_UNITS}")));
    }
    Ok(units)
}

pub fn top_up(p: proto::TopUpRequest) -> Result<BalanceOp, InputError> {
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

pub fn limits(p: proto::SetBalanceLimitsRequest) -> Result<BalanceOp, InputError> {
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

pub fn authorize(p: proto::AuthorizeRequest) -> Result<BalanceOp, InputError> {
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
        // Set by the pipeline's normalization (Pipeline::normalized).
        as_sent: None,
    })
}

//! Proto -> domain conversion and every input check of an event. Each failed check gives the
//! event a reject reason and a detail; nothing here panics on any input.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::config::Limits;
use crate::domain::keyed::HashKey;
use crate::domain::tariff::Catalogue;
use crate::domain::usage::{RejectReason, UsageEvent};
use crate::pipeline::{RejectedEvent, ValidEvent};
use crate::store::codec::SuspenseEntry;
use crate::wire::proto;

/// The time checks of one batch, read from the clock once per batch.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub oldest_nanos: i64,
    pub newest_nanos: i64,
    pub now_nanos: i64,
}

impl Window {
    pub fn at(now: DateTime<Utc>, window_days: u32, skew_seconds: u32) -> Window {
        let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        Window {
            oldest_nanos: now_nanos.saturating_sub(i64::from(window_days) * 86_400 * 1_000_000_000),
            newest_nanos: now_nanos.saturating_add(i64::from(skew_seconds) * 1_000_000_000),
            now_nanos,
        }
    }
}

/// Hash of what must be equal for a resend to be a DUPLICATE rather than a CONFLICT.
fn content_hash(seed: u64, e: &proto::UsageEvent, units: i64, nanos: i32) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    h.update(e.meter.as_bytes());
    h.update(&[0xFF]);
    h.update(&units.to_le_bytes());
    h.update(&nanos.to_le_bytes());
    h.update(&e.timestamp_unix_nanos.to_le_bytes());
    for a in &e.attributes {
        h.update(a.key.as_bytes());
        h.update(&[0xFF]);
        h.update(a.value.as_bytes());
        h.update(&[0xFE]);
    }
    h.digest()
}

/// One converted event: valid and on its way to rating, or rejected with its suspense entry.
pub enum Converted {
    Valid(ValidEvent),
    Rejected(RejectedEvent),
}

/// Converts one event, or says why it is rejected.
pub fn convert(
    index: u32,
    e: proto::UsageEvent,
    key: &HashKey,
    window: &Window,
    limits: &Limits,
    catalogue: &Catalogue,
) -> Converted {
    let (units, nanos) = e.quantity.map_or((0, 0), |q| (q.units, q.nanos));
    let check = || -> Result<Decimal, (RejectReason, String)> {
        let invalid = |detail: String| Err((RejectReason::InvalidField, detail));
        let max_id = limits.max_id_bytes;
        for (name, id) in [
            ("event_id", &e.event_id),
            ("account_id", &e.account_id),
            ("meter", &e.meter),
        ] {
            if id.is_empty() || id.len() > max_id {
                return invalid(format!("{name} must be 1..={max_id} bytes"));
            }
        }
        if e.quantity.is_none() {
            return invalid("quantity is missing".into());
        }
        if units < 0 || !(0..1_000_000_000).contains(&nanos) {
            return invalid("quantity must be >= 0 with 0 <= nanos < 1e9".into());
        }
        if e.attributes.len() > limits.max_attributes {
            return invalid(format!("more than {} attributes", limits.max_attributes));
        }
        for (i, a) in e.attributes.iter().enumerate() {
            if a.key.is_empty()
                || a.key.len() > limits.max_attribute_bytes
                || a.value.len() > limits.max_attribute_bytes
            {
                return invalid(format!(
                    "attribute keys must be 1..={0} bytes and values at most {0}",
                    limits.max_attribute_bytes
                ));
            }
            if e.attributes[..i].iter().any(|b| b.key == a.key) {
                return invalid(format!("attribute {:?} given twice", a.key));
            }
        }
        if e.timestamp_unix_nanos < window.oldest_nanos {
            return Err((RejectReason::TooOld, "timestamp is older than the dedupe window".into()));
        }
        if e.timestamp_unix_nanos > window.newest_nanos {
            return Err((
                RejectReason::TooFarInFuture,
                "timestamp is beyond the allowed clock skew".into(),
            ));
        }
        if !catalogue.knows_meter(&e.meter) {
            return Err((
                RejectReason::UnknownMeter,
                format!("no tariff defines meter {:?}", e.meter),
            ));
        }
        let quantity = if nanos == 0 {
            Decimal::from(units)
        } else {
            Decimal::from_i128_with_scale(i128::from(units) * 1_000_000_000 + i128::from(nanos), 9).normalize()
        };
        Ok(quantity)
    };
    match check() {
        Ok(quantity) => {
            let fingerprint = key.fingerprint(&e.account_id, &e.event_id);
            let content = content_hash(key.seed(), &e, units, nanos);
            let timestamp = DateTime::<Utc>::from_timestamp_nanos(e.timestamp_unix_nanos);
            Converted::Valid(ValidEvent {
                index,
                fingerprint,
                content,
                event: UsageEvent {
                    event_id: e.event_id,
                    account_id: e.account_id,
                    meter: e.meter,
                    quantity,
                    timestamp,
                    attributes: e.attributes.into_iter().map(|a| (a.key, a.value)).collect(),
                },
            })
        }
        Err((reason, detail)) => Converted::Rejected(RejectedEvent {
            index,
            entry: SuspenseEntry {
                event_id: truncate(e.event_id),
                account_id: truncate(e.account_id),
                meter: truncate(e.meter),
                quantity_units: units,
                quantity_nanos: nanos,
                timestamp_unix_nanos: e.timestamp_unix_nanos,
                attributes: e
                    .attributes
                    .into_iter()
                    .take(limits.max_attributes)
                    .map(|a| (truncate(a.key), truncate(a.value)))
                    .collect(),
                reason: reason.code(),
                detail,
                received_unix_nanos: window.now_nanos,
            },
        }),
    }
}

/// Keeps oversize input storable in suspense: at most 1 KiB, cut at a char boundary.
fn truncate(mut s: String) -> String {
    const MAX: usize = 1024;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The domain reason as its proto enum.
pub fn reason_to_proto(reason: RejectReason) -> proto::RejectReason {
    match reason {
        RejectReason::InvalidField => proto::RejectReason::InvalidField,
        RejectReason::UnknownMeter => proto::RejectReason::UnknownMeter,
        RejectReason::NoTariff => proto::RejectReason::NoTariff,
        RejectReason::TooOld => proto::RejectReason::TooOld,
        RejectReason::TooFarInFuture => proto::RejectReason::TooFarInFuture,
        RejectReason::PeriodClosed => proto::RejectReason::PeriodClosed,
        RejectReason::Conflict => proto::RejectReason::Conflict,
    }
}

/// The proto enum as the domain reason (`None` for UNSPECIFIED).
pub fn reason_from_proto(reason: proto::RejectReason) -> Option<RejectReason> {
    match reason {
        proto::RejectReason::Unspecified => None,
        proto::RejectReason::InvalidField => Some(RejectReason::InvalidField),
        proto::RejectReason::UnknownMeter => Some(RejectReason::UnknownMeter),
        proto::RejectReason::NoTariff => Some(RejectReason::NoTariff),
        proto::RejectReason::TooOld => Some(RejectReason::TooOld),
        proto::RejectReason::TooFarInFuture => Some(RejectReason::TooFarInFuture),
        proto::RejectReason::PeriodClosed => Some(RejectReason::PeriodClosed),
        proto::RejectReason::Conflict => Some(RejectReason::Conflict),
    }
}

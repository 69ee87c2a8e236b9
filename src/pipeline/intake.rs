//! The door into the pipeline: [`Pipeline::intake`] takes a batch of events as received, waits
//! for room (the backpressure point), refuses it whole when an account's records are damaged
//! (before anything is routed), reads the clock once, checks every event ([`check`]: INVALID_FIELD, TOO_OLD,
//! TOO_FAR_IN_FUTURE, UNKNOWN_METER), fingerprints the valid ones with the data dir's key, and
//! routes them to their shards. Every caller (the Ingest service, suspense reprocessing) comes in
//! here; nothing else reads the key, the clock or the context for a batch.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::sync::oneshot;

use super::{Pipeline, PipelineError, RejectedEvent, ValidEvent};
use crate::domain::charge::OneOffCharge;
use crate::domain::origin::{CHARGE_ID_PREFIX, FEE_ID_PREFIX, Origin};
use crate::domain::tariff::Catalogue;
use crate::limits::SUSPENSE_TEXT_BYTES;
use std::sync::Arc;

use crate::domain::mediation::Outcome;
use crate::domain::partial::PartTag;
use crate::domain::record::AsSent;
use crate::domain::usage::{Ack, RawEvent, RejectReason, Rejected, UsageEvent};
use crate::pipeline::shard::PartIn;

/// Bounds on one event's fields (from `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Longest event id, account id and meter.
    pub max_id_bytes: usize,
    pub max_attributes: usize,
    /// Longest attribute key or value.
    pub max_attribute_bytes: usize,
}

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

/// Why an event fails its checks: the reason and a detail for the agent.
pub type Rejection = (RejectReason, String);

/// Checks one event as received: its exact quantity when it passes. Without a window (quotes) any
/// time is accepted. Never panics on any input.
pub fn check(
    e: &RawEvent,
    limits: &EventLimits,
    window: Option<&Window>,
    catalogue: &Catalogue,
) -> Result<Decimal, Rejection> {
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
    if e.event_id.starts_with(CHARGE_ID_PREFIX) || e.event_id.starts_with(FEE_ID_PREFIX) {
        return invalid(format!(
            "event ids starting with {CHARGE_ID_PREFIX:?} or {FEE_ID_PREFIX:?} are reserved for one-off charges and fees"
        ));
    }
    let Some((units, nanos)) = e.quantity else {
        return invalid("quantity is missing".into());
    };
    let Some(quantity) = quantity_of(units, nanos) else {
        return invalid(QUANTITY_RULE.into());
    };
    if e.attributes.len() > limits.max_attributes {
        return invalid(format!("more than {} attributes", limits.max_attributes));
    }
    for (i, (key, value)) in e.attributes.iter().enumerate() {
        if key.is_empty() || key.len() > limits.max_attribute_bytes || value.len() > limits.max_attribute_bytes {
            return invalid(format!(
                "attribute keys must be 1..={0} bytes and values at most {0}",
                limits.max_attribute_bytes
            ));
        }
        if e.attributes[..i].iter().any(|(k, _)| k == key) {
            return invalid(format!("attribute {key:?} given twice"));
        }
    }
    if let Some(window) = window {
        if e.timestamp_unix_nanos < window.oldest_nanos {
            return Err((RejectReason::TooOld, "timestamp is older than the dedupe window".into()));
        }
        if e.timestamp_unix_nanos > window.newest_nanos {
            return Err((
                RejectReason::TooFarInFuture,
                "timestamp is beyond the allowed clock skew".into(),
            ));
        }
    }
    if !catalogue.knows_meter(&e.meter) {
        return Err((
            RejectReason::UnknownMeter,
            format!("no tariff defines meter {:?}", e.meter),
        ));
    }
    Ok(quantity)
}

use crate::domain::usage::{QUANTITY_RULE, quantity_of};

/// The domain event of a raw event that passed [`check`] with `quantity`.
pub fn accept(e: RawEvent, quantity: Decimal) -> UsageEvent {
    UsageEvent {
        event_id: e.event_id,
        account_id: e.account_id,
        meter: e.meter,
        quantity,
        timestamp: DateTime::<Utc>::from_timestamp_nanos(e.timestamp_unix_nanos),
        attributes: e.attributes,
        origin: Origin::Usage,
    }
}

/// Hash of what must be equal for a resend to be a DUPLICATE rather than a CONFLICT. Its value is
/// stored in records and checkpoints: the bytes hashed never change.
pub(super) fn content_hash(seed: u64, e: &RawEvent) -> u64 {
    let (units, nanos) = e.quantity.unwrap_or((0, 0));
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    h.update(e.meter.as_bytes());
    h.update(&[0xFF]);
    h.update(&units.to_le_bytes());
    h.update(&nanos.to_le_bytes());
    h.update(&e.timestamp_unix_nanos.to_le_bytes());
    for (key, value) in &e.attributes {
        h.update(key.as_bytes());
        h.update(&[0xFF]);
        h.update(value.as_bytes());
        h.update(&[0xFE]);
    }
    h.digest()
}

/// Keeps oversize input storable in suspense: at most [`SUSPENSE_TEXT_BYTES`] a string, cut at a
/// char boundary.
fn truncate(mut s: String) -> String {
    const MAX: usize = SUSPENSE_TEXT_BYTES;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The suspense form of an event refused at the door (strings bounded, attributes capped).
pub(super) fn rejected_at_door(
    e: RawEvent,
    (reason, detail): Rejection,
    limits: &EventLimits,
    now_nanos: i64,
) -> Rejected {
    Rejected {
        event: RawEvent {
            event_id: truncate(e.event_id),
            account_id: truncate(e.account_id),
            meter: truncate(e.meter),
            quantity: e.quantity,
            timestamp_unix_nanos: e.timestamp_unix_nanos,
            attributes: e
                .attributes
                .into_iter()
                .take(limits.max_attributes)
                .map(|(k, v)| (truncate(k), truncate(v)))
                .collect(),
        },
        reason,
        detail,
        received_unix_nanos: now_nanos,
    }
}

/// An event as sent that normalization rules changed, and the rules that did.
pub(super) struct Sent {
    pub(super) event: RawEvent,
    pub(super) rules: Vec<Arc<str>>,
}

impl Sent {
    /// What the record keeps of it (the id and time are the record's own). `quantity` is the
    /// normalized one: the sent quantity passed its check too when a rule scaled it (a scale
    /// rule leaves a malformed quantity alone), so it is only a fallback.
    pub(super) fn kept(self, quantity: Decimal) -> AsSent {
        let sent = self.event;
        AsSent {
            quantity: sent
                .quantity
                .and_then(|(units, nanos)| quantity_of(units, nanos))
                .unwrap_or(quantity),
            account_id: sent.account_id,
            meter: sent.meter,
            attributes: sent.attributes,
            rules: self.rules.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// A batch inside the pipeline: its acknowledgement once every part of it is durable.
pub struct Pending(oneshot::Receiver<Result<Ack, PipelineError>>);

impl Pending {
    /// Waits for the acknowledgement (sent only after the fsync of the commits holding the batch).
    pub async fn ack(self) -> Result<Ack, PipelineError> {
        self.0.await.unwrap_or(Err(PipelineError::ShuttingDown))
    }
}

impl Pipeline {
    /// Takes one batch in (see the module documentation). `events` are in the batch's order; the
    /// acknowledgement reports them by index. Refused whole, before anything is written, when an
    /// account's records are damaged, when storage failed, or while shutting down. `scope` is the
    /// caller's account prefix (a scoped token), checked by the caller on the accounts as sent
    /// and here on the accounts rules moved events to.
    pub async fn intake(
        &self,
        batch_id: u64,
        events: impl ExactSizeIterator<Item = RawEvent>,
        scope: Option<&str>,
    ) -> Result<Pending, PipelineError> {
        let admitted = self.admit().await?;
        let config = &self.config;
        // The batch's receipt: its window, and the receipt time of its suspense entries.
        let received_at = self.clock.now();
        let window = Window::at(received_at, config.dedupe_window_days, config.future_skew_seconds);
        let context = self.context.load();
        // Damage is rare (found at start only): the lookup runs only when some exists.
        let any_damage = !self.committed.damaged.is_empty();
        let mut valid = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        let mut normalized = 0u64;
        let mut dropped: Vec<(u32, Arc<str>)> = Vec::new();
        for (i, e) in events.enumerate() {
            let index = i as u32;
            // Without rules (the default) the event is checked as sent, with no copy.
            let (e, sent) = if context.mediation.is_empty() {
                (e, None)
            } else {
                match context.mediation.apply(&e) {
                    Outcome::Unchanged => (e, None),
                    Outcome::Normalized { event, rules } => {
                        normalized += 1;
                        (event, Some(Sent { event: e, rules }))
                    }
                    Outcome::Dropped { rule } => {
                        dropped.push((index, rule));
                        continue;
                    }
                    Outcome::Refused { rule, detail } => {
                        let why = (RejectReason::InvalidField, format!("rule {rule:?}: {detail}"));
                        rejected.push(RejectedEvent {
                            index,
                            rejected: rejected_at_door(e, why, &config.event_limits, window.now_nanos),
                        });
                        continue;
                    }
                }
            };
            if let (Some(sent), Some(prefix)) = (&sent, scope)
                && !e.account_id.starts_with(prefix)
            {
                // A scoped agent never charges an account outside its scope, whatever the rules do.
                let detail = format!(
                    "rules {} moved the event to account {:?}, outside the caller's scope {prefix:?}",
                    sent.rules.join(", "),
                    e.account_id
                );
                rejected.push(RejectedEvent {
                    index,
                    rejected: rejected_at_door(
                        sent.event.clone(),
                        (RejectReason::InvalidField, detail),
                        &config.event_limits,
                        window.now_nanos,
                    ),
                });
                continue;
            }
            if any_damage {
                // Refused whole: its totals and dedupe claims are unknown, rating more would charge
                // on a wrong base. Nothing was routed yet; the admission is given back on return.
                self.committed.check_damage(&e.account_id)?;
            }
            // A part of a partial session (docs/mediation.md) is told by its attributes.
            let checked = check(&e, &config.event_limits, Some(&window), &context.catalogue).and_then(|quantity| {
                let tag = PartTag::of(&e.attributes).map_err(|detail| (RejectReason::InvalidField, detail))?;
                Ok((quantity, tag))
            });
            match checked {
                Ok((quantity, tag)) => {
                    // Dedupe keys on the event as sent: a change of rules never makes a resend new.
                    let (fingerprint, content) = match &sent {
                        None => (
                            self.key.fingerprint(&e.account_id, &e.event_id),
                            content_hash(self.key.seed(), &e),
                        ),
                        Some(sent) => (
                            self.key.fingerprint(&sent.event.account_id, &sent.event.event_id),
                            content_hash(self.key.seed(), &sent.event),
                        ),
                    };
                    let part = tag.map(|tag| {
                        Box::new(PartIn {
                            merged_fingerprint: self.key.fingerprint(&e.account_id, &tag.merged_id()),
                            tag,
                        })
                    });
                    valid.push(ValidEvent {
                        index,
                        fingerprint,
                        content,
                        event: accept(e, quantity),
                        as_sent: sent.map(|s| Box::new(s.kept(quantity))),
                        part,
                    });
                }
                // Suspense keeps the event as sent: a reprocess applies the rules in force then.
                Err((reason, detail)) => rejected.push(RejectedEvent {
                    index,
                    rejected: match sent {
                        None => rejected_at_door(e, (reason, detail), &config.event_limits, window.now_nanos),
                        Some(sent) => rejected_at_door(
                            sent.event,
                            (reason, format!("{detail} (after rules {})", sent.rules.join(", "))),
                            &config.event_limits,
                            window.now_nanos,
                        ),
                    },
                }),
            }
        }
        crate::telemetry::count_normalized(normalized);
        Ok(Pending(self.submit(
            batch_id,
            received_at,
            admitted,
            valid,
            rejected,
            dropped,
        )))
    }

    /// Puts what could not be read as an event (a spool file's bad line) into suspense, answered
    /// after the fsync like a batch's rejections (counted as received and rejected).
    pub async fn suspend(&self, batch_id: u64, entries: Vec<Rejected>) -> Result<Pending, PipelineError> {
        let admitted = self.admit().await?;
        let rejected = entries
            .into_iter()
            .enumerate()
            .map(|(i, rejected)| RejectedEvent {
                index: i as u32,
                rejected,
            })
            .collect();
        let received_at = self.clock.now();
        Ok(Pending(self.submit(
            batch_id,
            received_at,
            admitted,
            Vec::new(),
            rejected,
            Vec::new(),
        )))
    }

    /// Takes one one-off charge in, checked by the Admin API (amount, currency, time), as a batch
    /// of one event of the charge meter: the same admission, fingerprint, content hash and
    /// acknowledgement after the fsync as an event's.
    pub async fn intake_charge(&self, batch_id: u64, charge: &OneOffCharge) -> Result<Pending, PipelineError> {
        self.intake_own(batch_id, vec![(charge.raw(), charge.event())]).await
    }

    /// Takes in events ratingd writes itself (one-off charges, recurring fees), already checked:
    /// each as received (for its content hash) and as rated.
    pub(crate) async fn intake_own(
        &self,
        batch_id: u64,
        items: Vec<(RawEvent, UsageEvent)>,
    ) -> Result<Pending, PipelineError> {
        let admitted = self.admit().await?;
        let mut valid = Vec::with_capacity(items.len());
        for (i, (raw, event)) in items.into_iter().enumerate() {
            self.committed.check_damage(&event.account_id)?;
            valid.push(ValidEvent {
                index: i as u32,
                fingerprint: self.key.fingerprint(&event.account_id, &event.event_id),
                content: content_hash(self.key.seed(), &raw),
                event,
                as_sent: None,
                part: None,
            });
        }
        let received_at = self.clock.now();
        Ok(Pending(self.submit(
            batch_id,
            received_at,
            admitted,
            valid,
            Vec::new(),
            Vec::new(),
        )))
    }
}

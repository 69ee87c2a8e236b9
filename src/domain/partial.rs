//! Partial records (docs/mediation.md, "Partial records"): a long call reported as several
//! records, one every 15 minutes plus the final one, each carrying its session, its sequence
//! number and whether it is the last ([`PartTag`], from documented attributes). The parts of one
//! session are held ([`OpenSession`]) until every sequence number up to the final part is there
//! or the session times out, then merged into one event ([`OpenSession::merged`]): the quantities
//! summed, the time and attributes of the first part. Rated once, that event gets one connect fee,
//! increments on the whole call and the band split over the whole call.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::usage::{UsageEvent, attribute};

/// The attribute naming a part's session (unique per account).
pub const SESSION_ATTRIBUTE: &str = "partial_session";
/// The attribute holding a part's sequence number (1, 2, ...).
pub const SEQ_ATTRIBUTE: &str = "partial_seq";
/// The attribute that marks the final part (`true`; absent or `false` otherwise).
pub const FINAL_ATTRIBUTE: &str = "partial_final";
/// The merged event's id: this prefix and the session.
pub const MERGED_ID_PREFIX: &str = "partial:";
/// Set on a merged event: how many parts it holds.
pub const PARTS_ATTRIBUTE: &str = "partial_parts";
/// Set (`true`) on a merged event rated at its timeout without every part, with the missing
/// sequence numbers in [`MISSING_ATTRIBUTE`].
pub const INCOMPLETE_ATTRIBUTE: &str = "partial_incomplete";
pub const MISSING_ATTRIBUTE: &str = "partial_missing";

/// The id of a session's merged event: `partial:<session>`.
pub fn merged_id(session: &str) -> String {
    format!("{MERGED_ID_PREFIX}{session}")
}

/// Bounds on partial sessions (`[mediation.partial]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLimits {
    /// A session with no new part for this long is merged from the parts it has (incomplete).
    pub timeout_seconds: u32,
    /// Most parts of one session: a part beyond them goes to suspense.
    pub max_parts: u32,
    /// Most total quantity (seconds of a call) of one session: a part beyond it goes to suspense.
    pub max_quantity: Decimal,
}

impl Default for PartialLimits {
    fn default() -> Self {
        PartialLimits {
            timeout_seconds: 3_600,
            max_parts: 64,
            max_quantity: Decimal::from(86_400),
        }
    }
}

/// What marks an event as a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTag {
    pub session: String,
    pub seq: u32,
    pub last: bool,
}

impl PartTag {
    /// The tag of an event's attributes: `None` for an ordinary event, an error (for
    /// INVALID_FIELD) for a malformed one.
    pub fn of(attributes: &[(String, String)]) -> Result<Option<PartTag>, String> {
        let Some(session) = attribute(attributes, SESSION_ATTRIBUTE) else {
            if attribute(attributes, SEQ_ATTRIBUTE).is_some() || attribute(attributes, FINAL_ATTRIBUTE).is_some() {
                return Err(format!(
                    "{SEQ_ATTRIBUTE} and {FINAL_ATTRIBUTE} need {SESSION_ATTRIBUTE}"
                ));
            }
            return Ok(None);
        };
        if session.is_empty() {
            return Err(format!("{SESSION_ATTRIBUTE} is empty"));
        }
        let seq = attribute(attributes, SEQ_ATTRIBUTE)
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|s| *s >= 1)
            .ok_or_else(|| format!("a part needs {SEQ_ATTRIBUTE}, a whole number from 1"))?;
        let last = match attribute(attributes, FINAL_ATTRIBUTE) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("{FINAL_ATTRIBUTE} is true or false, not {other:?}")),
        };
        Ok(Some(PartTag {
            session: session.to_string(),
            seq,
            last,
        }))
    }

    /// The id of the session's merged event.
    pub fn merged_id(&self) -> String {
        merged_id(&self.session)
    }
}

/// One part as held: what the merge needs, and its content hash (DUPLICATE against CONFLICT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub seq: u32,
    pub last: bool,
    pub event_id: String,
    pub meter: String,
    pub quantity: Decimal,
    pub timestamp_unix_nanos: i64,
    /// The event's attributes without the part's own ([`SESSION_ATTRIBUTE`] and the others).
    pub attributes: Vec<(String, String)>,
    pub content: u64,
    pub received_unix_nanos: i64,
}

impl Part {
    /// The part of a checked event with its tag.
    pub fn of(event: &UsageEvent, tag: &PartTag, content: u64, received_unix_nanos: i64) -> Part {
        Part {
            seq: tag.seq,
            last: tag.last,
            event_id: event.event_id.clone(),
            meter: event.meter.clone(),
            quantity: event.quantity,
            timestamp_unix_nanos: event.timestamp.timestamp_nanos_opt().unwrap_or(0),
            attributes: event
                .attributes
                .iter()
                .filter(|(k, _)| ![SESSION_ATTRIBUTE, SEQ_ATTRIBUTE, FINAL_ATTRIBUTE].contains(&k.as_str()))
                .cloned()
                .collect(),
            content,
            received_unix_nanos,
        }
    }
}

/// The parts of one session received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub account: String,
    pub session: String,
    pub parts: BTreeMap<u32, Part>,
}

/// What adding a part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Held (durable with its commit).
    Held,
    /// The same part again.
    Duplicate,
    /// A part with this sequence number and other content, or another meter (CONFLICT).
    Conflict(String),
    /// Past the session's bounds (INVALID_FIELD into suspense; the session keeps what it has).
    OverLimit(String),
}

impl OpenSession {
    pub fn new(account: &str, session: &str) -> OpenSession {
        OpenSession {
            account: account.to_string(),
            session: session.to_string(),
            parts: BTreeMap::new(),
        }
    }

    /// Adds a part, unless it repeats or contradicts one held, or breaks the bounds.
    pub fn add(&mut self, part: Part, limits: &PartialLimits) -> Added {
        if let Some(held) = self.parts.get(&part.seq) {
            return if held.content == part.content {
                Added::Duplicate
            } else {
                Added::Conflict(format!(
                    "part {} of session {:?} was received before with other content",
                    part.seq, self.session
                ))
            };
        }
        if let Some(first) = self.parts.values().next()
            && first.meter != part.meter
        {
            return Added::Conflict(format!(
                "session {:?} is of meter {:?}, this part of {:?}",
                self.session, first.meter, part.meter
            ));
        }
        if let Some(last) = self.parts.values().find(|p| p.last)
            && (part.last || part.seq > last.seq)
        {
            return Added::Conflict(format!(
                "session {:?} ended with part {}: part {} cannot follow it",
                self.session, last.seq, part.seq
            ));
        }
        if self.parts.len() as u32 >= limits.max_parts {
            return Added::OverLimit(format!(
                "session {:?} already holds {} parts, the most [mediation.partial] max_parts allows",
                self.session, limits.max_parts
            ));
        }
        if self.quantity() + part.quantity > limits.max_quantity {
            return Added::OverLimit(format!(
                "session {:?} would hold more than {} units, the most [mediation.partial] max_quantity allows",
                self.session, limits.max_quantity
            ));
        }
        self.parts.insert(part.seq, part);
        Added::Held
    }

    /// The sum of the parts' quantities.
    pub fn quantity(&self) -> Decimal {
        self.parts.values().map(|p| p.quantity).sum()
    }

    /// True once the final part and every part before it are held.
    pub fn complete(&self) -> bool {
        self.parts
            .values()
            .find(|p| p.last)
            .is_some_and(|last| self.parts.len() as u32 == last.seq)
    }

    /// When its latest part arrived.
    pub fn last_received_nanos(&self) -> i64 {
        self.parts.values().map(|p| p.received_unix_nanos).max().unwrap_or(0)
    }

    /// The one event the session is rated as: id `partial:<session>`, the meter and time and
    /// attributes of its first part, the quantities summed; marked incomplete (with the missing
    /// sequence numbers) when rated without every part. `None` without parts.
    pub fn merged(&self) -> Option<UsageEvent> {
        let first = self.parts.values().next()?;
        let mut attributes = first.attributes.clone();
        attributes.push((PARTS_ATTRIBUTE.to_string(), self.parts.len().to_string()));
        if !self.complete() {
            let through = self
                .parts
                .values()
                .find(|p| p.last)
                .map_or_else(|| self.parts.keys().max().copied().unwrap_or(0), |p| p.seq);
            let missing: Vec<String> = (1..=through)
                .filter(|s| !self.parts.contains_key(s))
                .map(|s| s.to_string())
                .collect();
            attributes.push((INCOMPLETE_ATTRIBUTE.to_string(), "true".to_string()));
            if !missing.is_empty() {
                attributes.push((MISSING_ATTRIBUTE.to_string(), missing.join(",")));
            }
        }
        Some(UsageEvent {
            event_id: merged_id(&self.session),
            account_id: self.account.clone(),
            meter: first.meter.clone(),
            quantity: self.quantity(),
            timestamp: chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(first.timestamp_unix_nanos),
            attributes,
            origin: super::origin::Origin::Usage,
        })
    }

    /// A content hash of the merged event, from its parts' (no key needed: the merged id is
    /// ratingd's own).
    pub fn merged_content(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in self.parts.values() {
            h.update(&p.seq.to_le_bytes());
            h.update(&p.content.to_le_bytes());
        }
        h.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn part(seq: u32, last: bool, seconds: i64, at_minute: i64) -> Part {
        Part {
            seq,
            last,
            event_id: format!("cdr-{seq}"),
            meter: "voice.seconds".into(),
            quantity: Decimal::from(seconds),
            timestamp_unix_nanos: at_minute * 60_000_000_000,
            attributes: attrs(&[("destination", "+4930")]),
            content: seq as u64 * 1_000 + seconds as u64,
            received_unix_nanos: seq as i64,
        }
    }

    #[test]
    fn a_part_is_told_by_its_attributes() {
        assert_eq!(PartTag::of(&attrs(&[("destination", "+4930")])), Ok(None));
        assert_eq!(
            PartTag::of(&attrs(&[
                ("partial_session", "c-7"),
                ("partial_seq", "3"),
                ("partial_final", "true")
            ])),
            Ok(Some(PartTag {
                session: "c-7".into(),
                seq: 3,
                last: true
            }))
        );
        assert!(PartTag::of(&attrs(&[("partial_session", "c-7")])).is_err());
        assert!(PartTag::of(&attrs(&[("partial_session", "c-7"), ("partial_seq", "0")])).is_err());
        assert!(
            PartTag::of(&attrs(&[
                ("partial_session", "c-7"),
                ("partial_seq", "1"),
                ("partial_final", "yes")
            ]))
            .is_err()
        );
        assert!(PartTag::of(&attrs(&[("partial_seq", "1")])).is_err());
    }

    #[test]
    fn three_parts_in_any_order_merge_into_the_whole_call() {
        let limits = PartialLimits::default();
        let mut s = OpenSession::new("tel-1", "c-7");
        assert_eq!(s.add(part(3, true, 187, 20), &limits), Added::Held);
        assert!(!s.complete());
        assert_eq!(s.add(part(1, false, 600, 0), &limits), Added::Held);
        assert_eq!(s.add(part(1, false, 600, 0), &limits), Added::Duplicate);
        assert!(matches!(s.add(part(1, false, 601, 0), &limits), Added::Conflict(_)));
        assert!(!s.complete());
        assert_eq!(s.add(part(2, false, 600, 10), &limits), Added::Held);
        assert!(s.complete());
        let merged = s.merged().unwrap();
        assert_eq!(merged.event_id, "partial:c-7");
        assert_eq!(merged.quantity, Decimal::from(1_387));
        assert_eq!(merged.timestamp.timestamp(), 0, "the first part's start");
        assert_eq!(
            merged.attributes,
            attrs(&[("destination", "+4930"), ("partial_parts", "3")])
        );
    }

    #[test]
    fn a_session_without_every_part_merges_as_incomplete_and_keeps_its_bounds() {
        let limits = PartialLimits {
            max_parts: 3,
            max_quantity: Decimal::from(1_500),
            ..PartialLimits::default()
        };
        let mut s = OpenSession::new("tel-1", "c-8");
        assert_eq!(s.add(part(1, false, 600, 0), &limits), Added::Held);
        assert_eq!(s.add(part(4, true, 300, 30), &limits), Added::Held);
        assert!(
            matches!(s.add(part(5, false, 1, 40), &limits), Added::Conflict(_)),
            "after the final part"
        );
        assert!(
            matches!(s.add(part(2, false, 601, 10), &limits), Added::OverLimit(_)),
            "1,501 units"
        );
        assert_eq!(s.add(part(2, false, 600, 10), &limits), Added::Held);
        assert!(
            matches!(s.add(part(3, false, 1, 20), &limits), Added::OverLimit(_)),
            "a fourth part"
        );
        let merged = s.merged().unwrap();
        assert_eq!(merged.quantity, Decimal::from(1_500));
        assert_eq!(
            merged.attributes[1..],
            attrs(&[
                ("partial_parts", "3"),
                ("partial_incomplete", "true"),
                ("partial_missing", "3")
            ])[..]
        );
    }
}

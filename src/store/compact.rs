//! The compact record layout of blocks `RTB2` (ARCHITECTURE.md, "Blocks on disk").
//!
//! A block's payload is a run of segments, one per shard job: `body_len u32 | count u32 |
//! base_timestamp i64 | body`, the body holding `count` records back to back. Inside a segment:
//! - meters, plans, periods, attribute keys and attribute values are dictionary strings: a varint `0` followed by
//!   the string adds it to the segment's dictionary (while it holds fewer than [`DICT_MAX`]
//!   entries), a varint `n > 0` is entry `n - 1`;
//! - the event id shares a prefix with the previous record's id (varint prefix length, then the
//!   rest);
//! - times are zigzag varint offsets from the segment's base timestamp;
//! - decimals are their scale (one byte) and their mantissa as a zigzag varint;
//! - every record starts with a kind byte. Kind 1 is a rated record (usage, one-off charges,
//!   fees and true-ups alike: their meter says which). Kind 2 is a correction record: kind 1's
//!   fields, then the correction (`role u8 | action u8 | id | reason | requested_by | at (zigzag
//!   varint nanos) | booked u8 [plan period]`). Other kinds are refused with
//!   [`CodecError::Invalid`] until a version that writes them reads them.
//!
//! The dedupe fingerprint is not stored: it is the data dir's keyed hash of (account, event id),
//! recomputed by recovery. The content hash is stored (8 bytes): it hashes the event as received.
//!
//! Every length and index is checked against what is left, so damaged bytes are an error, never
//! a panic or a runaway allocation (the block checksum is checked before any of this).

use rust_decimal::Decimal;

use super::codec::CodecError;
use crate::domain::correction::{Action, Booking, Correction, Role};
use crate::domain::record::{AsSent, RatedRecord, RatedRecordRef};

/// The kind byte of a rated record.
pub const KIND_RATED: u8 = 1;
/// The kind byte of a correction record (a reversal or a replacement): a rated record followed by
/// its correction (role, action, id, reason, requested by, when, and the open period an
/// adjustment of a closed period is booked into). Older releases refuse it as unknown.
pub const KIND_CORRECTION: u8 = 2;
/// Most dictionary entries per segment: past it, strings are written in full each time.
pub const DICT_MAX: usize = 64;
/// Segment header: body length, record count, base timestamp.
pub const SEGMENT_HEADER: usize = 4 + 4 + 8;

const FLAG_DISCOUNT: u8 = 1;
const FLAG_RATED_IS_QUANTITY: u8 = 2;
const FLAG_NO_USAGE_BEFORE: u8 = 4;
/// The event as sent follows the record (normalization rules changed it; issue 19). Releases
/// before it refuse the flag as unknown rather than misread the record.
const FLAG_AS_SENT: u8 = 8;
const FLAGS_KNOWN: u8 = FLAG_DISCOUNT | FLAG_RATED_IS_QUANTITY | FLAG_NO_USAGE_BEFORE | FLAG_AS_SENT;

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

fn put_decimal(out: &mut Vec<u8>, d: Decimal) {
    out.push(d.scale() as u8);
    put_varint(out, zigzag(d.mantissa()));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u128);
    out.extend_from_slice(b);
}

/// The records of one shard job as one segment, built in place (buffers reused across jobs).
#[derive(Default)]
pub struct SegmentWriter {
    buf: Vec<u8>,
    count: u32,
    base: i64,
    /// Dictionary strings, back to back, and where each ends.
    dict_bytes: Vec<u8>,
    dict_ends: Vec<usize>,
    prev_id: Vec<u8>,
}

impl SegmentWriter {
    /// Starts a segment in `buf` (cleared; its capacity is kept).
    pub fn begin(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        buf.resize(SEGMENT_HEADER, 0);
        self.buf = buf;
        self.count = 0;
        self.base = 0;
        self.dict_bytes.clear();
        self.dict_ends.clear();
        self.prev_id.clear();
    }

    fn dict(&mut self, s: &str) {
        let mut start = 0;
        for (i, &end) in self.dict_ends.iter().enumerate() {
            // Lengths first: most entries differ there, without a byte compare.
            if end - start == s.len() && &self.dict_bytes[start..end] == s.as_bytes() {
                put_varint(&mut self.buf, i as u128 + 1);
                return;
            }
            start = end;
        }
        self.buf.push(0);
        put_bytes(&mut self.buf, s.as_bytes());
        if self.dict_ends.len() < DICT_MAX {
            self.dict_bytes.extend_from_slice(s.as_bytes());
            self.dict_ends.push(self.dict_bytes.len());
        }
    }

    /// Appends one record.
    pub fn push(&mut self, r: &RatedRecordRef<'_>) {
        if self.count == 0 {
            self.base = r.timestamp_unix_nanos;
        }
        self.count += 1;
        let mut flags = 0;
        if r.subscription_discount.is_some() {
            flags |= FLAG_DISCOUNT;
        }
        if r.rated_quantity == r.quantity && r.rated_quantity.scale() == r.quantity.scale() {
            flags |= FLAG_RATED_IS_QUANTITY;
        }
        if r.period_usage_before.is_zero()
            && r.period_usage_before.scale() == 0
            && !r.period_usage_before.is_sign_negative()
        {
            flags |= FLAG_NO_USAGE_BEFORE;
        }
        if r.as_sent.is_some() {
            flags |= FLAG_AS_SENT;
        }
        self.buf.push(if r.correction.is_some() {
            KIND_CORRECTION
        } else {
            KIND_RATED
        });
        self.buf.push(flags);
        let id = r.event_id.as_bytes();
        let shared = id.iter().zip(&self.prev_id).take_while(|(a, b)| a == b).count();
        put_varint(&mut self.buf, shared as u128);
        put_bytes(&mut self.buf, &id[shared..]);
        self.prev_id.clear();
        self.prev_id.extend_from_slice(id);
        put_bytes(&mut self.buf, r.account_id.as_bytes());
        self.dict(r.meter);
        self.dict(r.plan);
        self.dict(r.period);
        put_varint(&mut self.buf, u128::from(r.version));
        put_varint(
            &mut self.buf,
            zigzag(i128::from(r.timestamp_unix_nanos) - i128::from(self.base)),
        );
        self.buf.extend_from_slice(&r.content.to_le_bytes());
        put_decimal(&mut self.buf, r.quantity);
        if flags & FLAG_RATED_IS_QUANTITY == 0 {
            put_decimal(&mut self.buf, r.rated_quantity);
        }
        put_decimal(&mut self.buf, r.charge);
        if flags & FLAG_NO_USAGE_BEFORE == 0 {
            put_decimal(&mut self.buf, r.period_usage_before);
        }
        if let Some(d) = r.subscription_discount {
            put_decimal(&mut self.buf, d);
        }
        put_varint(&mut self.buf, r.attributes.len() as u128);
        for (k, v) in r.attributes {
            self.dict(k);
            self.dict(v);
        }
        if let Some(c) = r.correction {
            self.buf.push(match c.role {
                Role::Reversal => 1,
                Role::Replacement => 2,
            });
            self.buf.push(match c.action {
                Action::Rerate => 1,
                Action::Void => 2,
                Action::Amend => 3,
            });
            put_bytes(&mut self.buf, c.id.as_bytes());
            put_bytes(&mut self.buf, c.reason.as_bytes());
            put_bytes(&mut self.buf, c.requested_by.as_bytes());
            put_varint(&mut self.buf, zigzag(i128::from(c.at_unix_nanos)));
            match &c.booked {
                None => self.buf.push(0),
                Some(b) => {
                    self.buf.push(1);
                    self.dict(&b.plan);
                    self.dict(&b.period);
                }
            }
        }
        if let Some(sent) = r.as_sent {
            put_bytes(&mut self.buf, sent.account_id.as_bytes());
            self.dict(&sent.meter);
            put_decimal(&mut self.buf, sent.quantity);
            put_varint(&mut self.buf, sent.attributes.len() as u128);
            for (k, v) in &sent.attributes {
                self.dict(k);
                self.dict(v);
            }
            put_varint(&mut self.buf, sent.rules.len() as u128);
            for rule in &sent.rules {
                self.dict(rule);
            }
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The finished segment (empty when it holds no record).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        if self.count == 0 {
            buf.clear();
            return buf;
        }
        let body = u32::try_from(buf.len() - SEGMENT_HEADER).unwrap_or(u32::MAX);
        buf[0..4].copy_from_slice(&body.to_le_bytes());
        buf[4..8].copy_from_slice(&self.count.to_le_bytes());
        buf[8..16].copy_from_slice(&self.base.to_le_bytes());
        buf
    }
}

/// The segments of a payload this process built, in order (each with its header), with their
/// record counts. A segment whose length runs past the end ends the iteration.
pub fn segments(payload: &[u8]) -> impl Iterator<Item = (&[u8], u32)> + '_ {
    let mut rest = payload;
    std::iter::from_fn(move || {
        let body = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let count = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
        let segment = rest.get(..SEGMENT_HEADER + body)?;
        rest = &rest[SEGMENT_HEADER + body..];
        Some((segment, count))
    })
}

/// Reads the records of a `RTB2` payload, segment by segment.
pub struct SegmentReader<'a> {
    rest: &'a [u8],
    body: &'a [u8],
    left: u32,
    base: i64,
    dict: Vec<String>,
    prev_id: Vec<u8>,
    failed: bool,
}

impl<'a> SegmentReader<'a> {
    pub fn new(payload: &'a [u8]) -> SegmentReader<'a> {
        SegmentReader {
            rest: payload,
            body: &[],
            left: 0,
            base: 0,
            dict: Vec::new(),
            prev_id: Vec::new(),
            failed: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.body.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, tail) = self.body.split_at(n);
        self.body = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u128, CodecError> {
        let mut v: u128 = 0;
        for shift in (0..133).step_by(7) {
            let b = self.take(1)?[0];
            if shift == 126 && b > 0x03 {
                return Err(CodecError::Invalid("varint overflow"));
            }
            v |= u128::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Invalid("varint too long"))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > self.body.len() as u128 {
            return Err(CodecError::Truncated);
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Invalid("utf-8"))
    }

    fn dict(&mut self) -> Result<String, CodecError> {
        match self.varint()? {
            0 => {
                let s = self.string()?;
                if self.dict.len() < DICT_MAX {
                    self.dict.push(s.clone());
                }
                Ok(s)
            }
            n => self
                .dict
                .get((n - 1) as usize)
                .cloned()
                .ok_or(CodecError::Invalid("dictionary index")),
        }
    }

    fn decimal(&mut self) -> Result<Decimal, CodecError> {
        let scale = self.take(1)?[0];
        let mantissa = unzigzag(self.varint()?);
        if scale > 28 {
            return Err(CodecError::Invalid("decimal scale"));
        }
        Decimal::try_from_i128_with_scale(mantissa, u32::from(scale)).map_err(|_| CodecError::Invalid("decimal"))
    }

    fn open_segment(&mut self) -> Result<(), CodecError> {
        if self.rest.len() < SEGMENT_HEADER {
            return Err(CodecError::Truncated);
        }
        let len = u32::from_le_bytes(self.rest[0..4].try_into().unwrap_or_default()) as usize;
        let count = u32::from_le_bytes(self.rest[4..8].try_into().unwrap_or_default());
        let base = i64::from_le_bytes(self.rest[8..16].try_into().unwrap_or_default());
        let body = self
            .rest
            .get(SEGMENT_HEADER..SEGMENT_HEADER + len)
            .ok_or(CodecError::Truncated)?;
        if count == 0 {
            return Err(CodecError::Invalid("empty segment"));
        }
        self.rest = &self.rest[SEGMENT_HEADER + len..];
        self.body = body;
        self.left = count;
        self.base = base;
        self.dict.clear();
        self.prev_id.clear();
        Ok(())
    }

    fn record(&mut self) -> Result<RatedRecord, CodecError> {
        let kind = self.take(1)?[0];
        if kind != KIND_RATED && kind != KIND_CORRECTION {
            return Err(CodecError::Invalid("unknown record kind (written by a newer ratingd?)"));
        }
        let flags = self.take(1)?[0];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(CodecError::Invalid("record flags"));
        }
        let shared = self.varint()?;
        if shared > self.prev_id.len() as u128 {
            return Err(CodecError::Invalid("event id prefix"));
        }
        let n = self.len()?;
        let suffix = self.take(n)?;
        self.prev_id.truncate(shared as usize);
        self.prev_id.extend_from_slice(suffix);
        let event_id = String::from_utf8(self.prev_id.clone()).map_err(|_| CodecError::Invalid("utf-8"))?;
        let account_id = self.string()?;
        let meter = self.dict()?;
        let plan = self.dict()?;
        let period = self.dict()?;
        let version = u32::try_from(self.varint()?).map_err(|_| CodecError::Invalid("version"))?;
        let offset = unzigzag(self.varint()?);
        let timestamp_unix_nanos =
            i64::try_from(i128::from(self.base) + offset).map_err(|_| CodecError::Invalid("timestamp"))?;
        let content = u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default());
        let quantity = self.decimal()?;
        let rated_quantity = if flags & FLAG_RATED_IS_QUANTITY != 0 {
            quantity
        } else {
            self.decimal()?
        };
        let charge = self.decimal()?;
        let period_usage_before = if flags & FLAG_NO_USAGE_BEFORE != 0 {
            Decimal::ZERO
        } else {
            self.decimal()?
        };
        let subscription_discount = if flags & FLAG_DISCOUNT != 0 {
            Some(self.decimal()?)
        } else {
            None
        };
        let attributes = self.attributes()?;
        let correction = if kind == KIND_CORRECTION {
            Some(self.correction()?)
        } else {
            None
        };
        let as_sent = if flags & FLAG_AS_SENT != 0 {
            Some(Box::new(self.as_sent()?))
        } else {
            None
        };
        Ok(RatedRecord {
            content,
            event_id,
            account_id,
            meter,
            quantity,
            timestamp_unix_nanos,
            attributes,
            plan,
            version,
            period,
            period_usage_before,
            subscription_discount,
            rated_quantity,
            charge,
            correction,
            as_sent,
        })
    }

    fn attributes(&mut self) -> Result<Vec<(String, String)>, CodecError> {
        let n = self.varint()?;
        // Each attribute takes two bytes at least: a count past that is damage, not an allocation.
        if n > (self.body.len() / 2) as u128 {
            return Err(CodecError::Invalid("attribute count"));
        }
        let mut attributes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            attributes.push((self.dict()?, self.dict()?));
        }
        Ok(attributes)
    }

    fn as_sent(&mut self) -> Result<AsSent, CodecError> {
        let account_id = self.string()?;
        let meter = self.dict()?;
        let quantity = self.decimal()?;
        let attributes = self.attributes()?;
        let n = self.varint()?;
        // Each rule name takes a byte at least.
        if n > self.body.len() as u128 {
            return Err(CodecError::Invalid("rule count"));
        }
        let rules = (0..n).map(|_| self.dict()).collect::<Result<_, _>>()?;
        Ok(AsSent {
            account_id,
            meter,
            quantity,
            attributes,
            rules,
        })
    }

    fn correction(&mut self) -> Result<Correction, CodecError> {
        let role = match self.take(1)?[0] {
            1 => Role::Reversal,
            2 => Role::Replacement,
            _ => return Err(CodecError::Invalid("correction role")),
        };
        let action = match self.take(1)?[0] {
            1 => Action::Rerate,
            2 => Action::Void,
            3 => Action::Amend,
            _ => return Err(CodecError::Invalid("correction action")),
        };
        let id = self.string()?;
        let reason = self.string()?;
        let requested_by = self.string()?;
        let at_unix_nanos =
            i64::try_from(unzigzag(self.varint()?)).map_err(|_| CodecError::Invalid("correction time"))?;
        let booked = match self.take(1)?[0] {
            0 => None,
            1 => Some(Booking {
                plan: self.dict()?,
                period: self.dict()?,
            }),
            _ => return Err(CodecError::Invalid("correction booking")),
        };
        Ok(Correction {
            role,
            action,
            id,
            reason,
            requested_by,
            at_unix_nanos,
            booked,
        })
    }
}

impl Iterator for SegmentReader<'_> {
    type Item = Result<RatedRecord, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.left == 0 {
            if !self.body.is_empty() {
                self.failed = true;
                return Some(Err(CodecError::Invalid("trailing bytes in a segment")));
            }
            if self.rest.is_empty() {
                return None;
            }
            if let Err(e) = self.open_segment() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        self.left -= 1;
        let record = self.record();
        if record.is_err() {
            self.failed = true;
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{open_block, records, seal_segments};

    fn usage(n: u32) -> RatedRecord {
        RatedRecord {
            content: 0xDEAD_BEEF_0000_0000 | u64::from(n),
            event_id: format!("19b0c1d2e3f-1-{}", 1_000 + n),
            account_id: format!("lt-{:06}", n * 7),
            meter: "voice.seconds".into(),
            quantity: Decimal::from(61 + n),
            timestamp_unix_nanos: 1_764_000_000_000_000_000 + i64::from(n) * 1_000_000_007,
            attributes: vec![("destination".into(), "+4930123456".into())],
            plan: "telecom-standard".into(),
            version: 1,
            period: "2026-11".into(),
            period_usage_before: Decimal::new(12_000, 0),
            subscription_discount: None,
            rated_quantity: Decimal::from(120),
            charge: Decimal::new(180_000_000, 9),
            correction: None,
            as_sent: None,
        }
    }

    /// One of each record ratingd writes today: usage (with and without attributes, a discount,
    /// a negative marginal charge), a one-off charge and credit, a recurring fee and a true-up, and
    /// extremes (the largest decimals, a time before the segment's base, empty attributes values,
    /// more distinct attribute keys than the dictionary holds).
    fn every_kind() -> Vec<RatedRecord> {
        let mut list = vec![usage(0), usage(1)];
        list.push(RatedRecord {
            meter: "api.requests".into(),
            plan: "saas-pro".into(),
            quantity: Decimal::new(15, 1),
            rated_quantity: Decimal::new(15, 1),
            period_usage_before: Decimal::ZERO,
            subscription_discount: Some(Decimal::new(125, 1)),
            charge: Decimal::new(-4_500_000, 9),
            attributes: Vec::new(),
            ..usage(2)
        });
        list.push(RatedRecord {
            event_id: "charge:setup-42".into(),
            meter: "@charge".into(),
            quantity: Decimal::new(-2_500, 2),
            rated_quantity: Decimal::new(-2_500, 2),
            charge: Decimal::new(-25_000_000_000, 9),
            period_usage_before: Decimal::ZERO,
            attributes: vec![
                ("currency".into(), "EUR".into()),
                ("description".into(), "goodwill credit".into()),
            ],
            ..usage(3)
        });
        list.push(RatedRecord {
            event_id: "fee:saas-team:2026-11:platform:0".into(),
            meter: "@fee:platform".into(),
            plan: "saas-team".into(),
            attributes: vec![("plan".into(), "saas-team".into()), ("span".into(), "".into())],
            ..usage(4)
        });
        list.push(RatedRecord {
            event_id: "fee:saas-team:2026-11:@minimum:1".into(),
            meter: "@minimum".into(),
            quantity: Decimal::MAX,
            rated_quantity: Decimal::MIN,
            charge: Decimal::new(1, 28),
            period_usage_before: Decimal::new(-1, 28),
            timestamp_unix_nanos: i64::MIN,
            ..usage(5)
        });
        list.push(RatedRecord {
            timestamp_unix_nanos: i64::MAX,
            attributes: (0..DICT_MAX + 8).map(|i| (format!("k{i}"), format!("v{i}"))).collect(),
            ..usage(6)
        });
        list.push(usage(7));
        // Correction records: a reversal of a closed period booked into an open one, and a
        // replacement.
        let correction = |role, action, booked| Correction {
            role,
            action,
            id: "fix-2026-11".into(),
            reason: "price entered wrong".into(),
            requested_by: "ops".into(),
            at_unix_nanos: -5,
            booked,
        };
        list.push(RatedRecord {
            quantity: Decimal::from(-61),
            rated_quantity: Decimal::from(-120),
            charge: Decimal::new(-180_000_000, 9),
            correction: Some(correction(
                Role::Reversal,
                Action::Rerate,
                Some(Booking {
                    plan: "telecom-standard".into(),
                    period: "2026-12".into(),
                }),
            )),
            ..usage(8)
        });
        list.push(RatedRecord {
            correction: Some(correction(Role::Replacement, Action::Amend, None)),
            ..usage(8)
        });
        // Records whose events normalization rules changed: the event as sent follows, on a
        // usage record and on a correction's replacement.
        let as_sent = |n: u32| {
            Some(Box::new(AsSent {
                account_id: format!("sim-26201{n}"),
                meter: "voice.ms".into(),
                quantity: Decimal::new(61_500, 3),
                attributes: vec![
                    ("destination".into(), "030 1234567".into()),
                    ("unit".into(), "ms".into()),
                ],
                rules: vec!["sim-to-account".into(), "national-to-e164".into()],
            }))
        };
        list.push(RatedRecord {
            as_sent: as_sent(9),
            ..usage(9)
        });
        list.push(RatedRecord {
            correction: Some(correction(Role::Replacement, Action::Rerate, None)),
            as_sent: as_sent(10),
            ..usage(10)
        });
        list.push(RatedRecord {
            correction: Some(correction(Role::Reversal, Action::Void, None)),
            ..usage(9)
        });
        list
    }

    fn segment_of(list: &[RatedRecord]) -> Vec<u8> {
        let mut w = SegmentWriter::default();
        w.begin(Vec::new());
        for r in list {
            w.push(&r.as_ref());
        }
        assert_eq!(w.count() as usize, list.len());
        w.finish()
    }

    #[test]
    fn every_record_kind_round_trips_exactly() {
        let first = every_kind();
        let second: Vec<RatedRecord> = (10..20).map(usage).collect();
        let blocks = seal_segments([segment_of(&first).as_slice(), segment_of(&second).as_slice()]);
        assert_eq!(blocks.len(), 1);
        assert_eq!(&blocks[0][..4], b"RTB2");
        let (count, payload) = open_block(&blocks[0]).unwrap();
        assert_eq!(count as usize, first.len() + second.len());
        let decoded: Vec<RatedRecord> = records(payload).collect::<Result<_, _>>().unwrap();
        let expected: Vec<RatedRecord> = first.into_iter().chain(second).collect();
        assert_eq!(decoded, expected);
        // Equal decimals are not enough: the stored scale is kept (it shows in listings).
        for (d, e) in decoded.iter().zip(&expected) {
            for (a, b) in [
                (d.quantity, e.quantity),
                (d.rated_quantity, e.rated_quantity),
                (d.charge, e.charge),
                (d.period_usage_before, e.period_usage_before),
            ] {
                assert_eq!((a.scale(), a.to_string()), (b.scale(), b.to_string()));
            }
        }
    }

    #[test]
    fn a_rated_call_takes_under_sixty_bytes() {
        let list: Vec<RatedRecord> = (0..500).map(usage).collect();
        let bytes = segment_of(&list).len();
        assert!(bytes / list.len() < 60, "{} bytes a record", bytes / list.len());
    }

    #[test]
    fn an_empty_segment_writes_nothing_and_the_writer_is_reused() {
        let mut w = SegmentWriter::default();
        w.begin(Vec::new());
        assert!(w.finish().is_empty());
        w.begin(Vec::with_capacity(10));
        w.push(&usage(1).as_ref());
        let again = w.finish();
        assert_eq!(again, segment_of(&[usage(1)]));
    }

    #[test]
    fn a_damaged_block_is_refused_never_misread() {
        let block = seal_segments([segment_of(&every_kind()).as_slice()]).remove(0);
        for i in 0..block.len() {
            for mask in [0x01, 0x40, 0xFF] {
                let mut bad = block.clone();
                bad[i] ^= mask;
                let result = open_block(&bad).and_then(|(_, p)| records(p).collect::<Result<Vec<_>, _>>());
                assert!(result.is_err(), "byte {i} xor {mask:#04x} went unnoticed");
            }
        }
    }

    /// Past the checksum (a block written wrong, or a checksum collision), the decoder still
    /// refuses what does not parse: unknown kinds and flags, bad dictionary indexes, prefixes and
    /// lengths, truncation, trailing bytes.
    #[test]
    fn bytes_that_do_not_parse_are_errors_not_panics() {
        let segment = segment_of(&[usage(1), usage(2)]);
        let parse = |bytes: &[u8]| SegmentReader::new(bytes).collect::<Result<Vec<_>, _>>();
        assert_eq!(parse(&segment).unwrap().len(), 2);
        let at = SEGMENT_HEADER;
        let mut kind = segment.clone();
        kind[at] = 3;
        assert_eq!(
            parse(&kind).unwrap_err(),
            CodecError::Invalid("unknown record kind (written by a newer ratingd?)")
        );
        // Kind 2 (a correction) without its correction after the attributes.
        let mut correction = segment.clone();
        correction[at] = 2;
        assert!(parse(&correction).is_err());
        let mut flags = segment.clone();
        flags[at + 1] = 0x80;
        assert!(parse(&flags).is_err());
        let mut prefix = segment.clone();
        prefix[at + 2] = 9; // the first record shares a prefix with no previous id
        assert_eq!(parse(&prefix).unwrap_err(), CodecError::Invalid("event id prefix"));
        for cut in 0..segment.len() {
            assert!(parse(&segment[..cut]).is_err() || cut == 0, "cut at {cut}");
        }
        let mut trailing = segment.clone();
        trailing.push(0);
        let body = u32::from_le_bytes(trailing[..4].try_into().unwrap()) + 1;
        trailing[..4].copy_from_slice(&body.to_le_bytes());
        assert!(parse(&trailing).is_err());
        let mut count = segment.clone();
        count[4] = 3;
        assert!(parse(&count).is_err());
        // Every single byte changed, at every place: an error or a record, never a panic.
        for i in 0..segment.len() {
            for v in [0x00, 0x7F, 0x80, 0xFF] {
                let mut bad = segment.clone();
                bad[i] = v;
                let _ = parse(&bad);
            }
        }
    }
}

//! Binary encoding of everything stored: blocks of rated records (with checksums), the block
//! index, suspense entries, subscriptions, closes and alerts. It only encodes and decodes; the
//! types are the domain's (and the tables' small wrappers).
//!
//! A block is the unit of group commit: one sled value holding records of one commit.
//! `magic | count u32 | payload_len u32 | xxh3-64(payload, seed = count) u64 | payload`. Two
//! layouts are read: `RTB2` (written since issue 15), whose payload is segments of compact records
//! ([`super::compact`]), and `RTB1` (data dirs from before), whose payload is `len u32 | record`
//! repeated, each record in fixed-width fields ([`decode_record`]). Any other magic is refused.
//! Every decode checks lengths and the checksum first, so a corrupted value is reported (never
//! trusted, never a panic).

use rust_decimal::Decimal;

use crate::domain::aggregate::{MeterTotals, PeriodTotals};
use crate::domain::alert::SpendAlert;
use crate::domain::money::{InvoiceRounding, RoundingMode};
use crate::domain::record::{RatedRecord, RatedRecordRef};
use crate::domain::subscription::Subscription;
use crate::domain::usage::{RawEvent, RejectReason, Rejected};
use crate::store::tables::{StoredAlert, StoredClose};

use super::compact::{SegmentReader, segments};

/// The first block layout (fixed-width records), read but no longer written.
const BLOCK_MAGIC_V1: &[u8; 4] = b"RTB1";
/// The compact layout ([`super::compact`]).
const BLOCK_MAGIC_V2: &[u8; 4] = b"RTB2";
const BLOCK_HEADER: usize = 4 + 4 + 4 + 8;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated value")]
    Truncated,
    #[error("bad magic: not a ratingd block of a layout this version reads (RTB1, RTB2)")]
    BadMagic,
    #[error("checksum mismatch: the stored bytes are corrupted")]
    Checksum,
    #[error("invalid field encoding: {0}")]
    Invalid(&'static str),
}

/// Appends little-endian fields to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn decimal(&mut self, v: Decimal) {
        self.0.extend_from_slice(&v.serialize());
    }
    /// Bytes with a u32 length prefix.
    pub fn blob(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    /// A string of at most 65,535 bytes (callers bound every string far below that).
    pub fn str(&mut self, v: &str) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&v.as_bytes()[..usize::from(len)]);
    }
    pub fn pairs(&mut self, pairs: &[(String, String)]) {
        self.u8(u8::try_from(pairs.len()).unwrap_or(u8::MAX));
        for (k, v) in pairs.iter().take(usize::from(u8::MAX)) {
            self.str(k);
            self.str(v);
        }
    }
}

/// Reads what [`Writer`] wrote, failing on truncation.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        self.take(n)
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn u128(&mut self) -> Result<u128, CodecError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    pub fn decimal(&mut self) -> Result<Decimal, CodecError> {
        let bytes: [u8; 16] = self.array()?;
        // The scale lives in byte 2; rust_decimal accepts at most 28.
        if bytes[2] > 28 {
            return Err(CodecError::Invalid("decimal scale"));
        }
        Ok(Decimal::deserialize(bytes))
    }
    pub fn str(&mut self) -> Result<String, CodecError> {
        let len = u16::from_le_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Invalid("utf-8"))
    }
    pub fn pairs(&mut self) -> Result<Vec<(String, String)>, CodecError> {
        let n = self.u8()?;
        (0..n).map(|_| Ok((self.str()?, self.str()?))).collect()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encodes one record in the first layout (`RTB1`, without its length prefix): kept to write the
/// blocks of earlier data dirs in tests, which prove they are still read.
pub fn encode_record_v1(out: &mut Vec<u8>, fingerprint: u128, r: &RatedRecordRef<'_>) {
    let mut w = Writer(out);
    w.u128(fingerprint);
    w.u64(r.content);
    w.i64(r.timestamp_unix_nanos);
    w.decimal(r.quantity);
    w.decimal(r.rated_quantity);
    w.decimal(r.charge);
    w.decimal(r.period_usage_before);
    w.u32(r.version);
    match r.subscription_discount {
        Some(d) => {
            w.u8(1);
            w.decimal(d);
        }
        None => w.u8(0),
    }
    w.str(r.event_id);
    w.str(r.account_id);
    w.str(r.meter);
    w.str(r.plan);
    w.str(r.period);
    w.pairs(r.attributes);
}

/// Decodes one record of the first layout (`RTB1`). Its stored fingerprint is not returned:
/// recovery computes every record's from the data dir's key, whatever the layout.
pub fn decode_record(bytes: &[u8]) -> Result<RatedRecord, CodecError> {
    let mut r = Reader::new(bytes);
    let _fingerprint = r.u128()?;
    let content = r.u64()?;
    let timestamp_unix_nanos = r.i64()?;
    let quantity = r.decimal()?;
    let rated_quantity = r.decimal()?;
    let charge = r.decimal()?;
    let period_usage_before = r.decimal()?;
    let version = r.u32()?;
    let subscription_discount = match r.u8()? {
        0 => None,
        1 => Some(r.decimal()?),
        _ => return Err(CodecError::Invalid("discount flag")),
    };
    let record = RatedRecord {
        content,
        timestamp_unix_nanos,
        quantity,
        rated_quantity,
        charge,
        period_usage_before,
        version,
        subscription_discount,
        event_id: r.str()?,
        account_id: r.str()?,
        meter: r.str()?,
        plan: r.str()?,
        period: r.str()?,
        attributes: r.pairs()?,
        correction: None,
        as_sent: None,
    };
    if !r.is_empty() {
        return Err(CodecError::Invalid("trailing bytes"));
    }
    Ok(record)
}

/// Encodes a suspense entry: the reason as its code, the quantity as sent (a missing one as 0).
pub fn encode_suspense(r: &Rejected) -> Vec<u8> {
    let e = &r.event;
    let (units, nanos) = e.quantity.unwrap_or((0, 0));
    let mut out = Vec::with_capacity(128);
    let mut w = Writer(&mut out);
    w.u8(r.reason.code());
    w.i64(units);
    w.u32(nanos as u32);
    w.i64(e.timestamp_unix_nanos);
    w.i64(r.received_unix_nanos);
    w.str(&e.event_id);
    w.str(&e.account_id);
    w.str(&e.meter);
    w.str(&r.detail);
    w.pairs(&e.attributes);
    out
}

pub fn decode_suspense(bytes: &[u8]) -> Result<Rejected, CodecError> {
    let mut r = Reader::new(bytes);
    let reason = RejectReason::from_code(r.u8()?).ok_or(CodecError::Invalid("reject reason"))?;
    let quantity = Some((r.i64()?, r.u32()? as i32));
    let timestamp_unix_nanos = r.i64()?;
    let received_unix_nanos = r.i64()?;
    let (event_id, account_id, meter, detail) = (r.str()?, r.str()?, r.str()?, r.str()?);
    Ok(Rejected {
        event: RawEvent {
            event_id,
            account_id,
            meter,
            quantity,
            timestamp_unix_nanos,
            attributes: r.pairs()?,
        },
        reason,
        detail,
        received_unix_nanos,
    })
}

/// The `x/<seq>` index entry: the accounts with records in one commit.
pub fn encode_index(accounts: &[std::sync::Arc<str>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(accounts.len() * 16 + 4);
    let mut w = Writer(&mut out);
    w.u32(accounts.len() as u32);
    for a in accounts {
        w.str(a);
    }
    out
}

pub fn decode_index(bytes: &[u8]) -> Result<Vec<String>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.u32()?;
    (0..n).map(|_| r.str()).collect()
}

/// A subscription (`to` absent as `i64::MIN`, at most 255 alert thresholds).
pub fn encode_subscription(s: &Subscription) -> Vec<u8> {
    let mut value = Vec::with_capacity(64);
    let mut w = Writer(&mut value);
    w.str(&s.account_id);
    w.str(&s.plan_id);
    w.i64(s.from.timestamp_nanos_opt().unwrap_or(i64::MIN));
    w.i64(s.to.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(i64::MIN));
    match s.discount_percent {
        Some(d) => {
            w.u8(1);
            w.decimal(d);
        }
        None => w.u8(0),
    }
    w.u8(u8::try_from(s.alert_thresholds.len()).unwrap_or(u8::MAX));
    for t in s.alert_thresholds.iter().take(usize::from(u8::MAX)) {
        w.decimal(*t);
    }
    // Added by issue 18: values written before end here and are postpaid.
    if s.prepaid {
        w.u8(1);
    }
    value
}

pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription, CodecError> {
    let mut r = Reader::new(bytes);
    let account_id = r.str()?;
    let plan_id = r.str()?;
    let from = chrono::DateTime::from_timestamp_nanos(r.i64()?);
    let to = r.i64()?;
    let discount_percent = match r.u8()? {
        0 => None,
        _ => Some(r.decimal()?),
    };
    let count = r.u8()?;
    let alert_thresholds = (0..count).map(|_| r.decimal()).collect::<Result<Vec<_>, _>>()?;
    let prepaid = !r.is_empty() && r.u8()? == 1;
    Ok(Subscription {
        account_id,
        plan_id,
        from,
        to: (to != i64::MIN).then(|| chrono::DateTime::from_timestamp_nanos(to)),
        discount_percent,
        alert_thresholds,
        prepaid,
    })
}

/// A close: the announced flag, plan, period, and the announcement's entries.
pub fn encode_close(close: &StoredClose) -> Vec<u8> {
    let mut value = Vec::new();
    let mut w = Writer(&mut value);
    w.u8(u8::from(close.announced));
    w.str(&close.plan);
    w.str(&close.period);
    w.u32(close.entries.len() as u32);
    for e in &close.entries {
        w.blob(e.as_bytes());
    }
    value
}

pub fn decode_close(bytes: &[u8]) -> Result<StoredClose, CodecError> {
    let mut r = Reader::new(bytes);
    let announced = r.u8()? != 0;
    let plan = r.str()?;
    let period = r.str()?;
    let n = r.u32()?;
    let mut entries = Vec::with_capacity(n.min(65_536) as usize);
    for _ in 0..n {
        let len = r.u32()? as usize;
        let bytes = r.bytes(len)?;
        entries.push(String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Invalid("utf-8"))?);
    }
    Ok(StoredClose {
        plan,
        period,
        announced,
        entries,
    })
}

/// One plan's final totals of a closed period (`f/` entries): account, period, plan, currency,
/// invoice rounding, then each meter's sums. Self-contained: read without the catalogue.
pub fn encode_totals(t: &PeriodTotals) -> Vec<u8> {
    let mut value = Vec::with_capacity(64 + t.meters.len() * 72);
    let mut w = Writer(&mut value);
    w.str(&t.account);
    w.str(&t.period);
    w.str(&t.plan);
    w.str(t.currency.as_str());
    w.u32(t.rounding.places);
    w.str(t.rounding.mode.as_str());
    encode_meters(&mut w, &t.meters);
    value
}

/// A totals' meters (count, then each meter's sums): the part final totals and checkpoints share.
pub fn encode_meters(w: &mut Writer<'_>, meters: &[MeterTotals]) {
    w.u32(meters.len() as u32);
    for m in meters {
        w.str(&m.meter);
        w.decimal(m.quantity);
        w.decimal(m.rated_quantity);
        w.decimal(m.charge);
        w.u64(m.events);
    }
}

/// Reads what [`encode_meters`] wrote into `t`, adding each meter's charge to its total.
pub fn decode_meters(r: &mut Reader<'_>, t: &mut PeriodTotals) -> Result<(), CodecError> {
    for _ in 0..r.u32()? {
        let meter = r.str()?;
        let (quantity, rated_quantity, charge, events) = (r.decimal()?, r.decimal()?, r.decimal()?, r.u64()?);
        t.total_charge += charge;
        t.meters.push(MeterTotals {
            meter: meter.into(),
            quantity,
            rated_quantity,
            charge,
            events,
        });
    }
    Ok(())
}

pub fn decode_totals(bytes: &[u8]) -> Result<PeriodTotals, CodecError> {
    let mut r = Reader::new(bytes);
    let (account, period, plan) = (r.str()?, r.str()?, r.str()?);
    let currency = r.str()?.parse().map_err(|_| CodecError::Invalid("currency"))?;
    let places = r.u32()?;
    let mode = match r.str()?.as_str() {
        "half-up" => RoundingMode::HalfUp,
        "half-even" => RoundingMode::HalfEven,
        "up" => RoundingMode::Up,
        "down" => RoundingMode::Down,
        _ => return Err(CodecError::Invalid("rounding mode")),
    };
    let mut t = PeriodTotals::new(
        account.into(),
        period.into(),
        plan.into(),
        currency,
        InvoiceRounding { places, mode },
    );
    decode_meters(&mut r, &mut t)?;
    if !r.is_empty() {
        return Err(CodecError::Invalid("trailing bytes"));
    }
    Ok(t)
}

/// An alert: the announced flag, then the alert as a JSON object (the layout of data dirs from
/// before the domain type: the same object the Redis stream entry is made of).
pub fn encode_alert(stored: &StoredAlert) -> Vec<u8> {
    let entry = stored.alert.entry().to_string();
    let mut value = vec![u8::from(stored.announced)];
    value.extend_from_slice(entry.as_bytes());
    value
}

pub fn decode_alert(bytes: &[u8]) -> Result<StoredAlert, CodecError> {
    let (flag, entry) = bytes.split_first().ok_or(CodecError::Truncated)?;
    let v: serde_json::Value = serde_json::from_slice(entry).map_err(|_| CodecError::Invalid("alert JSON"))?;
    let text = |name: &'static str| v[name].as_str().ok_or(CodecError::Invalid(name));
    let decimal = |name: &'static str| text(name)?.parse().map_err(|_| CodecError::Invalid(name));
    let crossed_at = chrono::DateTime::parse_from_rfc3339(text("crossed_at")?)
        .map_err(|_| CodecError::Invalid("crossed_at"))?
        .to_utc();
    Ok(StoredAlert {
        alert: SpendAlert {
            account: text("account")?.to_string(),
            period: text("period")?.to_string(),
            plan: text("plan")?.to_string(),
            currency: text("currency")?.to_string(),
            threshold: decimal("threshold")?,
            total_charge: decimal("total_charge")?,
            crossed_at,
        },
        announced: *flag != 0,
    })
}

/// Builds a first-layout block from length-prefixed records (as [`append_framed_v1`] writes them):
/// tests of data dirs from before the compact layout.
pub fn seal_block_v1(count: u32, payload: &[u8]) -> Vec<u8> {
    let mut block = BlockBuilder::with_magic(BLOCK_MAGIC_V1, payload.len());
    block.push(payload, count);
    block.finish()
}

/// Builds a block in place (no copy of the payload when it is sealed).
pub struct BlockBuilder {
    out: Vec<u8>,
    count: u32,
    magic: &'static [u8; 4],
}

impl BlockBuilder {
    /// A compact-layout (`RTB2`) block of segments.
    pub fn new(capacity: usize) -> BlockBuilder {
        BlockBuilder::with_magic(BLOCK_MAGIC_V2, capacity)
    }

    fn with_magic(magic: &'static [u8; 4], capacity: usize) -> BlockBuilder {
        let mut out = Vec::with_capacity(BLOCK_HEADER + capacity);
        out.resize(BLOCK_HEADER, 0);
        BlockBuilder { out, count: 0, magic }
    }

    /// Bytes of payload so far.
    pub fn payload_len(&self) -> usize {
        self.out.len() - BLOCK_HEADER
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Appends a segment (its header included, as [`super::compact::SegmentWriter::finish`]
    /// returns it) holding `count` records.
    pub fn push(&mut self, bytes: &[u8], count: u32) {
        self.out.extend_from_slice(bytes);
        self.count += count;
    }

    /// Writes the header (magic, count, length, checksum) and returns the block.
    pub fn finish(mut self) -> Vec<u8> {
        let payload_len = u32::try_from(self.payload_len()).unwrap_or(u32::MAX);
        // The count seeds the checksum, so a flipped count is caught too.
        let checksum = xxhash_rust::xxh3::xxh3_64_with_seed(&self.out[BLOCK_HEADER..], u64::from(self.count));
        let mut header = Vec::with_capacity(BLOCK_HEADER);
        header.extend_from_slice(self.magic);
        let mut w = Writer(&mut header);
        w.u32(self.count);
        w.u32(payload_len);
        w.u64(checksum);
        self.out[..BLOCK_HEADER].copy_from_slice(&header);
        self.out
    }
}

/// Segments (one per shard job, in order) as sealed `RTB2` blocks of about
/// [`crate::store::BLOCK_PART_BYTES`] each, cut between segments (a segment is never split: its
/// dictionary is its own).
pub fn seal_segments<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let target = crate::store::BLOCK_PART_BYTES;
    let mut parts = Vec::new();
    let mut part = BlockBuilder::new(target);
    for payload in payloads {
        for (segment, count) in segments(payload) {
            if part.count() > 0 && part.payload_len() + segment.len() > target {
                parts.push(std::mem::replace(&mut part, BlockBuilder::new(target)).finish());
            }
            part.push(segment, count);
        }
    }
    if part.count() > 0 {
        parts.push(part.finish());
    }
    parts
}

/// Appends one first-layout record with its length prefix to a payload (tests of earlier data
/// dirs; see [`encode_record_v1`]).
pub fn append_framed_v1(payload: &mut Vec<u8>, fingerprint: u128, record: &RatedRecordRef<'_>) {
    let at = payload.len();
    payload.extend_from_slice(&[0; 4]);
    encode_record_v1(payload, fingerprint, record);
    let len = u32::try_from(payload.len() - at - 4).unwrap_or(u32::MAX);
    payload[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The records of an opened block, in the layout its magic names.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    compact: bool,
    bytes: &'a [u8],
}

impl Payload<'_> {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Checks a block's header and checksum and returns its record count and payload.
pub fn open_block(bytes: &[u8]) -> Result<(u32, Payload<'_>), CodecError> {
    if bytes.len() < BLOCK_HEADER {
        return Err(CodecError::Truncated);
    }
    let compact = match &bytes[..4] {
        m if m == BLOCK_MAGIC_V2 => true,
        m if m == BLOCK_MAGIC_V1 => false,
        _ => return Err(CodecError::BadMagic),
    };
    let mut r = Reader::new(&bytes[4..BLOCK_HEADER]);
    let count = r.u32()?;
    let len = r.u32()? as usize;
    let checksum = r.u64()?;
    let payload = &bytes[BLOCK_HEADER..];
    if payload.len() != len {
        return Err(CodecError::Truncated);
    }
    if xxhash_rust::xxh3::xxh3_64_with_seed(payload, u64::from(count)) != checksum {
        return Err(CodecError::Checksum);
    }
    Ok((
        count,
        Payload {
            compact,
            bytes: payload,
        },
    ))
}

/// Iterates the records of an opened block (either layout); after an error it ends.
pub fn records(payload: Payload<'_>) -> Box<dyn Iterator<Item = Result<RatedRecord, CodecError>> + '_> {
    if payload.compact {
        return Box::new(SegmentReader::new(payload.bytes));
    }
    let mut rest = payload.bytes;
    Box::new(std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 4 {
            rest = &[];
            return Some(Err(CodecError::Truncated));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
            rest = &[];
            return Some(Err(CodecError::Truncated));
        }
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        Some(decode_record(body))
    }))
}

#[cfg(test)]
mod tests {
    /// A prepaid subscription keeps its flag; one stored before the flag existed (no trailing
    /// byte) reads as postpaid.
    #[test]
    fn subscriptions_round_trip_with_and_without_the_prepaid_byte() {
        let mut s = Subscription {
            account_id: "acme".into(),
            plan_id: "saas-pro".into(),
            from: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            to: None,
            discount_percent: Some("5".parse().unwrap()),
            alert_thresholds: vec!["10".parse().unwrap()],
            prepaid: true,
        };
        let bytes = encode_subscription(&s);
        assert_eq!(decode_subscription(&bytes).unwrap(), s);
        s.prepaid = false;
        let older = encode_subscription(&s);
        assert_eq!(older.len() + 1, bytes.len(), "postpaid is written as before the flag");
        assert_eq!(decode_subscription(&older).unwrap(), s);
    }

    /// Final totals read back field for field, the scale of every decimal kept, and the total
    /// recomputed from the meters.
    #[test]
    fn final_totals_round_trip() {
        use crate::domain::money::{InvoiceRounding, RoundingMode};
        let mut t = PeriodTotals::new(
            "acme".into(),
            "2026-11".into(),
            "telecom-standard".into(),
            "JPY".parse().unwrap(),
            InvoiceRounding {
                places: 0,
                mode: RoundingMode::HalfEven,
            },
        );
        t.add(
            "voice.minutes",
            "90.50".parse().unwrap(),
            "91".parse().unwrap(),
            "1.234567890".parse().unwrap(),
        );
        t.add("sms", Decimal::ONE, Decimal::ONE, "0.100000000".parse().unwrap());
        let back = decode_totals(&encode_totals(&t)).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.meters[0].quantity.to_string(), "90.50");
        let bytes = encode_totals(&t);
        assert!(decode_totals(&bytes[..bytes.len() - 1]).is_err());
    }

    use super::*;

    fn record() -> RatedRecord {
        RatedRecord {
            content: 42,
            event_id: "e-1".into(),
            account_id: "acme".into(),
            meter: "api.requests".into(),
            quantity: Decimal::new(15, 1),
            timestamp_unix_nanos: 1_764_000_000_000_000_000,
            attributes: vec![("region".into(), "eu".into())],
            plan: "saas-pro".into(),
            version: 1,
            period: "2026-11".into(),
            period_usage_before: Decimal::ZERO,
            subscription_discount: Some(Decimal::TEN),
            rated_quantity: Decimal::new(15, 1),
            charge: Decimal::new(1_350_000, 9),
            correction: None,
            as_sent: None,
        }
    }

    #[test]
    fn a_block_of_the_first_layout_still_reads() {
        let mut payload = Vec::new();
        append_framed_v1(&mut payload, 0x0123_4567_89ab_cdef, &record().as_ref());
        append_framed_v1(
            &mut payload,
            7,
            &RatedRecord {
                event_id: "e-2".into(),
                ..record()
            }
            .as_ref(),
        );
        let block = seal_block_v1(2, &payload);
        assert_eq!(&block[..4], b"RTB1");
        let (count, body) = open_block(&block).unwrap();
        assert_eq!(count, 2);
        let decoded: Vec<RatedRecord> = records(body).collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded[0], record());
        assert_eq!(decoded[1].event_id, "e-2");
    }

    #[test]
    fn another_magic_is_refused_by_name() {
        let mut block = seal_block_v1(0, &[]);
        block[..4].copy_from_slice(b"RTB9");
        let error = open_block(&block).unwrap_err();
        assert_eq!(error, CodecError::BadMagic);
        assert!(error.to_string().contains("RTB1, RTB2"), "{error}");
    }

    #[test]
    fn every_flipped_byte_of_a_first_layout_block_is_detected() {
        let mut payload = Vec::new();
        append_framed_v1(&mut payload, 1, &record().as_ref());
        let block = seal_block_v1(1, &payload);
        for i in 0..block.len() {
            let mut bad = block.clone();
            bad[i] ^= 0x40;
            let result = open_block(&bad).and_then(|(_, p)| records(p).collect::<Result<Vec<_>, _>>());
            assert!(result.is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn suspense_round_trip() {
        let e = Rejected {
            event: RawEvent {
                event_id: "x".into(),
                account_id: "".into(),
                meter: "m".into(),
                quantity: Some((-1, 5)),
                timestamp_unix_nanos: 7,
                attributes: vec![("k".into(), "v".into())],
            },
            reason: RejectReason::InvalidField,
            detail: "account_id: must be 1..=128 bytes".into(),
            received_unix_nanos: 9,
        };
        let bytes = encode_suspense(&e);
        assert_eq!(decode_suspense(&bytes).unwrap(), e);
        // The layout of data dirs written before the domain type: reason code first.
        assert_eq!(bytes[0], 0);
        assert_eq!(&bytes[1..9], &(-1i64).to_le_bytes());
        let mut unknown_reason = bytes.clone();
        unknown_reason[0] = 200;
        assert!(decode_suspense(&unknown_reason).is_err());
    }

    #[test]
    fn an_alert_stored_before_the_domain_type_reads_back_and_encodes_the_same() {
        // The bytes a data dir holds from before (the flag, then the JSON the committer wrote).
        let old = concat!(
            "\u{0}",
            r#"{"account":"spender","alert_id":"spender|2026-11|800","crossed_at":"2026-11-30T17:39:19.007980871+00:00","#,
            r#""currency":"USD","period":"2026-11","plan":"saas-pro","threshold":"800","total_charge":"806.400720000"}"#
        );
        let stored = decode_alert(old.as_bytes()).unwrap();
        assert_eq!(stored.alert.id(), "spender|2026-11|800");
        assert!(!stored.announced);
        assert_eq!(encode_alert(&stored), old.as_bytes());
    }
}

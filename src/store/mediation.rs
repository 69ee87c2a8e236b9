//! What mediation keeps beside the records: the dedupe claims of events whose account
//! normalization rules changed (`h/`), and the parts of partial sessions not merged yet (`p/`).
//! Both are written by the committer in the commit of what they belong to ([`super::Write`]).

use super::keys::{MOVED, PART};
use super::{Db, StoreError, codec};
use crate::domain::partial::Part;

/// The dedupe claims of events whose account normalization rules changed (docs/mediation.md):
/// `h/<day u16><fingerprint u128>` (big-endian: ordered by the event's day) -> the content hash
/// (u64). The window of the shard that rated such an event holds its claim too, but after a
/// change of rules (a SIM moved to another account in a lookup table) a resend is routed to the
/// shard of its new account, whose window never saw it: this table answers there. Written by the
/// committer in the commit of the record; days older than the dedupe window are removed (such
/// events are TOO_OLD at the door).
#[derive(Clone)]
pub struct MovedClaims(pub(super) Db);

impl MovedClaims {
    /// The content hash claimed for an event, if any.
    pub fn get(&self, day: u16, fingerprint: u128) -> Result<Option<u64>, StoreError> {
        let Some(value) = self.0.db.get(moved_key(day, fingerprint))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| {
            self.0
                .corrupt(format!("h/ day {day}"), codec::CodecError::Invalid("claim length"))
        })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// Removes the claims of days before `day` (one batch, fsynced); returns how many.
    pub fn remove_before(&self, day: u16) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in self.0.db.range(MOVED.to_vec()..moved_key(day, 0)).keys() {
            batch.remove(key?);
            n += 1;
        }
        if n > 0 {
            self.0.db.apply_batch(batch)?;
            self.0.db.flush()?;
        }
        Ok(n)
    }
}

pub(super) fn moved_key(day: u16, fingerprint: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(MOVED.len() + 2 + 16);
    k.extend_from_slice(MOVED);
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(&fingerprint.to_be_bytes());
    k
}

/// The parts of partial sessions not merged yet (docs/mediation.md, "Partial records"):
/// `p/<account>\xFF<session>\xFF<seq: u32 BE>` -> the part. Written in the commit that
/// acknowledges the part; removed in the commit of the merged record. Read whole at start.
#[derive(Clone)]
pub struct PartialParts(pub(super) Db);

pub(super) fn part_key(account: &str, session: &str, seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(PART.len() + account.len() + session.len() + 6);
    k.extend_from_slice(PART);
    k.extend_from_slice(account.as_bytes());
    k.push(0xFF);
    k.extend_from_slice(session.as_bytes());
    k.push(0xFF);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The stored value of one part (its key holds the account, session and seq).
pub(super) fn encode_part(part: &Part) -> Vec<u8> {
    let mut v = Vec::with_capacity(96);
    let mut w = codec::Writer(&mut v);
    w.u8(u8::from(part.last));
    w.str(&part.event_id);
    w.str(&part.meter);
    w.decimal(part.quantity);
    w.i64(part.timestamp_unix_nanos);
    w.pairs(&part.attributes);
    w.u64(part.content);
    w.i64(part.received_unix_nanos);
    v
}

impl PartialParts {
    /// Every part held, as (account, session, part).
    pub fn all(&self) -> Result<Vec<(String, String, Part)>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(PART) {
            let (k, v) = item?;
            let name = format!("p/ {}", String::from_utf8_lossy(&k[PART.len()..]));
            let decoded = decode_part(&k[PART.len()..], &v).map_err(|e| self.0.corrupt(name, e))?;
            out.push(decoded);
        }
        Ok(out)
    }
}

fn decode_part(key: &[u8], value: &[u8]) -> Result<(String, String, Part), codec::CodecError> {
    let bad = codec::CodecError::Invalid("partial part key");
    let (rest, seq) = key
        .split_at_checked(key.len().checked_sub(4).ok_or(bad.clone())?)
        .ok_or(bad.clone())?;
    let rest = rest.strip_suffix(&[0xFF]).ok_or(bad.clone())?;
    let cut = rest.iter().position(|b| *b == 0xFF).ok_or(bad.clone())?;
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| codec::CodecError::Invalid("utf-8"));
    let (account, session) = (utf8(&rest[..cut])?, utf8(&rest[cut + 1..])?);
    let mut r = codec::Reader::new(value);
    let part = Part {
        seq: u32::from_be_bytes(seq.try_into().map_err(|_| bad)?),
        last: r.u8()? != 0,
        event_id: r.str()?,
        meter: r.str()?,
        quantity: r.decimal()?,
        timestamp_unix_nanos: r.i64()?,
        attributes: r.pairs()?,
        content: r.u64()?,
        received_unix_nanos: r.i64()?,
    };
    if !r.is_empty() {
        return Err(codec::CodecError::Invalid("trailing bytes"));
    }
    Ok((account, session, part))
}

#[cfg(test)]
mod tests {

    /// Claims are found by day and fingerprint; the removal of old days keeps the later ones.
    #[test]
    fn moved_claims_are_kept_by_day_and_old_days_removed() {
        let dir = std::env::temp_dir().join(format!("ratingd-moved-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = crate::store::Store::open(&dir).unwrap();
        let claims = store.moved_claims();
        let claim = |day, fingerprint, content| crate::store::Write::MovedClaim {
            day,
            fingerprint,
            content,
        };
        let writes = vec![claim(20_400, u128::MAX, 7), claim(20_409, 1, 8), claim(20_410, 1, 9)];
        store
            .commit(crate::store::Commit {
                writes,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(claims.get(20_400, u128::MAX).unwrap(), Some(7));
        assert_eq!(claims.get(20_409, 1).unwrap(), Some(8));
        assert_eq!(claims.get(20_409, 2).unwrap(), None);
        assert_eq!(claims.remove_before(20_410).unwrap(), 2);
        assert_eq!(claims.get(20_409, 1).unwrap(), None);
        assert_eq!(claims.get(20_410, 1).unwrap(), Some(9));
        assert_eq!(claims.remove_before(20_410).unwrap(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

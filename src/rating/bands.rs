//! Time of day and weekday bands: where a banded duration is cut (band changes in local time,
//! daylight-saving transitions), and the minute of the week of an instant.

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::{MAX_BANDED_DURATION_SECONDS, Part, RatingError, part};
use crate::domain::localtime::offset_seconds;
use crate::domain::money::exact_add;
use crate::domain::tariff::{Bands, MINUTES_PER_WEEK};

/// Minute of the week (Monday 00:00 = 0) of `at` in zone `tz`.
pub(super) fn minute_of_week(tz: Tz, at: DateTime<Utc>) -> u32 {
    local_minute_of_week(&at.with_timezone(&tz).naive_local())
}

fn local_minute_of_week(local: &NaiveDateTime) -> u32 {
    local.weekday().num_days_from_monday() * 1440 + local.hour() * 60 + local.minute()
}

/// Longest step of the band split between two checks of the UTC offset: no zone changes its offset
/// twice within a day, so comparing the offsets at both ends of a step finds any transition in it.
const MAX_SPLIT_STEP_NANOS: i64 = 86_400 * NANOS_PER_SECOND;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Lays `seconds` from `start` and cuts it where the band changes in local time, or where a
/// daylight-saving transition moves local time (the band is looked up again after it).
pub(super) fn split_by_bands(
    bands: &Bands,
    tz: Tz,
    start: DateTime<Utc>,
    seconds: Decimal,
) -> Result<Vec<Part>, RatingError> {
    if seconds > Decimal::from(MAX_BANDED_DURATION_SECONDS) {
        return Err(RatingError::DurationTooLong);
    }
    let mut remaining = to_nanos(seconds).ok_or(RatingError::Inexact)?;
    let mut parts: Vec<Part> = Vec::with_capacity(2);
    let mut cursor = start;
    let mut offset = offset_seconds(tz, cursor);
    // Most calls are short and far from a transition: one look at the offset where the call ends
    // then covers every step.
    let uniform =
        remaining <= MAX_SPLIT_STEP_NANOS && offset_seconds(tz, cursor + Duration::nanoseconds(remaining)) == offset;
    while remaining > 0 {
        // Local wall-clock seconds since the epoch; 1970-01-01 was a Thursday (Monday = 0 -> 3).
        let local_seconds = cursor.timestamp() + i64::from(offset);
        let weekday = (local_seconds.div_euclid(86_400) + 3).rem_euclid(7) as u32;
        let second_of_day = local_seconds.rem_euclid(86_400) as u32;
        let minute = weekday * 1440 + second_of_day / 60;
        let segment = bands.segment_at(minute);
        debug_assert!(segment.start <= minute && minute < segment.end && segment.end <= MINUTES_PER_WEEK);
        let into_minute = i64::from(second_of_day % 60) * NANOS_PER_SECOND + i64::from(cursor.timestamp_subsec_nanos());
        let to_segment_end = i64::from(segment.end - minute) * 60 * NANOS_PER_SECOND - into_minute;
        let mut step = to_segment_end.min(MAX_SPLIT_STEP_NANOS).min(remaining);
        let end = cursor + Duration::nanoseconds(step);
        if !uniform && offset_seconds(tz, end) != offset {
            let transition = transition_at(tz, offset, cursor, end);
            step = (transition - cursor).num_nanoseconds().unwrap_or(step);
            offset = offset_seconds(tz, transition);
        }
        let quantity = Decimal::from_i128_with_scale(i128::from(step), 9);
        match parts.last_mut() {
            Some(last) if usize::from(last.band) == segment.band => last.quantity = exact_add(last.quantity, quantity)?,
            _ => parts.push(part(segment.band, cursor, quantity)),
        }
        remaining -= step;
        cursor += Duration::nanoseconds(step);
    }
    Ok(parts)
}

/// Whole nanoseconds in `seconds`, when it has at most 9 fractional digits and fits an `i64`.
fn to_nanos(seconds: Decimal) -> Option<i64> {
    let scale = seconds.scale();
    if scale > 9 {
        return None;
    }
    let nanos = seconds.mantissa().checked_mul(10i128.pow(9 - scale))?;
    i64::try_from(nanos).ok()
}

/// The first whole second in `(from, to]` whose UTC offset is not `before` (the offset at `from`),
/// given that the offset at `to` differs. Callers keep `to - from` within a day, so there is
/// exactly one transition in between.
fn transition_at(tz: Tz, before: i32, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
    let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(to);
    // Search invariant: offset(lo) == before, offset(hi) != before (or hi is `to`'s second).
    let (mut lo, mut hi) = (from.timestamp(), to.timestamp());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_seconds(tz, at(mid)) == before {
            lo = mid
        } else {
            hi = mid
        }
    }
    at(hi).max(from + Duration::nanoseconds(1)).min(to)
}

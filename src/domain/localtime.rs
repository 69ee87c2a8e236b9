//! Wall-clock time in a plan's IANA time zone, resolved to UTC instants.
//!
//! Period boundaries and time-of-day bands are written as local wall-clock times; daylight-saving
//! transitions make some local times happen twice (autumn) and some never (spring). The single rule
//! used everywhere: a boundary written as local time `T` happens at the first instant whose local
//! time is `T` or later, after the instant we are coming from.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Longest daylight-saving gap searched for: real zones jump by at most two hours.
const MAX_GAP_MINUTES: i64 = 24 * 60;

/// The first instant strictly after `after` whose local time in `tz` is `local`, or, when `local`
/// falls into a daylight-saving gap, the instant the clocks jump over it.
pub fn next_instant_at(tz: Tz, local: NaiveDateTime, after: DateTime<Utc>) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, second) => {
            let first = first.with_timezone(&Utc);
            if first > after {
                first
            } else {
                second.with_timezone(&Utc)
            }
        }
        LocalResult::None => gap_end(tz, local),
    }
}

/// The first instant whose local time is `local` or later (the earliest such instant).
pub fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    next_instant_at(tz, local, DateTime::<Utc>::MIN_UTC)
}

/// The instant the clocks jump over a local time that does not exist.
fn gap_end(tz: Tz, missing: NaiveDateTime) -> DateTime<Utc> {
    for minutes in 1..=MAX_GAP_MINUTES {
        let later = missing + Duration::minutes(minutes);
        match tz.from_local_datetime(&later) {
            LocalResult::Single(at) => return at.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => continue,
        }
    }
    // No zone in the tz database has a gap of a day; read the local time as UTC rather than panic.
    missing.and_utc()
}

/// The UTC offset in force at `at`, in seconds.
pub fn offset_seconds(tz: Tz, at: DateTime<Utc>) -> i32 {
    use chrono::Offset;
    tz.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn spring_gap_resolves_to_the_jump() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
        let at = first_instant_at_or_after(chrono_tz::Europe::Berlin, local(2026, 3, 29, 2, 30));
        assert_eq!(at.to_rfc3339(), "2026-03-29T01:00:00+00:00");
    }

    #[test]
    fn autumn_repeat_takes_the_first_unless_already_past_it() {
        // Berlin, 2026-10-25: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
        let tz = chrono_tz::Europe::Berlin;
        let first = first_instant_at_or_after(tz, local(2026, 10, 25, 2, 30));
        assert_eq!(first.to_rfc3339(), "2026-10-25T00:30:00+00:00");
        let second = next_instant_at(tz, local(2026, 10, 25, 2, 30), first);
        assert_eq!(second.to_rfc3339(), "2026-10-25T01:30:00+00:00");
    }
}

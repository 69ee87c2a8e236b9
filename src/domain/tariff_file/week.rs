//! The week of a band: day and clock parsing, the minutes no band covers, and the segments of
//! the week each band owns.

use chrono::Weekday;

use crate::domain::tariff::{MINUTES_PER_WEEK, Segment};

pub(super) fn gaps(owner: &[Option<usize>]) -> Vec<(u32, u32)> {
    let mut gaps = Vec::new();
    let mut start = None;
    for (m, o) in owner.iter().enumerate() {
        let m = m as u32;
        match (o, start) {
            (None, None) => start = Some(m),
            (Some(_), Some(s)) => {
                gaps.push((s, m));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        gaps.push((s, MINUTES_PER_WEEK));
    }
    gaps
}

pub(super) fn segments(owner: &[Option<usize>]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for (m, o) in owner.iter().enumerate() {
        // Invariant: called only once every minute has exactly one owner.
        let band = o.expect("bands cover the week");
        let m = m as u32;
        match segments.last_mut() {
            Some(last) if last.band == band => last.end = m + 1,
            _ => segments.push(Segment {
                start: m,
                end: m + 1,
                band,
            }),
        }
    }
    segments
}

pub(super) const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

pub(super) fn minute_label(minute: u32) -> String {
    let day = (minute / 1440) as usize;
    if day >= 7 {
        return "mon 00:00 (end of week)".to_string();
    }
    let in_day = minute % 1440;
    format!("{} {:02}:{:02}", DAY_NAMES[day], in_day / 60, in_day % 60)
}

pub(super) fn parse_weekday(text: &str) -> Option<Weekday> {
    let i = DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(text))?;
    Weekday::try_from(i as u8).ok()
}

/// `"mon"` or a range `"mon-fri"` (no wrap-around) -> day numbers, Monday = 0.
pub(super) fn parse_days(spec: &str) -> Option<Vec<u32>> {
    let day = |s: &str| {
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(s.trim()))
            .map(|i| i as u32)
    };
    match spec.split_once('-') {
        None => Some(vec![day(spec)?]),
        Some((a, b)) => {
            let (a, b) = (day(a)?, day(b)?);
            (a <= b).then(|| (a..=b).collect())
        }
    }
}

/// `"HH:MM"` -> minutes since midnight; `"24:00"` is the end of the day.
pub(super) fn parse_clock(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

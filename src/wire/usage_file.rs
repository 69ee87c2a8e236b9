//! Usage files for `ratectl send` and the spool directory: JSONL (one object per line) or CSV (header
//! `event_id,account,meter,quantity,timestamp` plus optional `attr.<name>` columns).

use chrono::DateTime;

use crate::domain::money::parse_exact;
use crate::wire::proto;

/// A problem in a usage file, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> FileError {
    FileError {
        line,
        message: message.into(),
    }
}

/// An exact decimal string as units and nanos (negative values are sent as they are, so the
/// daemon rejects them with a reason and keeps them in suspense).
pub fn quantity(text: &str) -> Result<proto::Quantity, String> {
    let d = parse_exact(text.trim())?;
    let nanos_total = d.mantissa() * 10i128.pow(9 - d.scale());
    let units = i64::try_from(nanos_total / 1_000_000_000).map_err(|_| format!("{text:?} is too large"))?;
    Ok(proto::Quantity {
        units,
        nanos: (nanos_total % 1_000_000_000) as i32,
    })
}

fn timestamp(text: &str) -> Result<i64, String> {
    let t = DateTime::parse_from_rfc3339(text.trim()).map_err(|e| format!("timestamp {text:?}: {e}"))?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| format!("timestamp {text:?} is out of range"))
}

fn event(
    event_id: &str,
    account: &str,
    meter: &str,
    qty: &str,
    ts: &str,
    attributes: Vec<proto::Attribute>,
) -> Result<proto::UsageEvent, String> {
    Ok(proto::UsageEvent {
        event_id: event_id.to_string(),
        account_id: account.to_string(),
        meter: meter.to_string(),
        quantity: Some(quantity(qty)?),
        timestamp_unix_nanos: timestamp(ts)?,
        attributes,
    })
}

/// Shifts every timestamp by whole days so the latest event falls on the day before `now` (UTC).
pub fn rebase_days(events: &mut [proto::UsageEvent], now: chrono::DateTime<chrono::Utc>) {
    const DAY: i64 = 86_400 * 1_000_000_000;
    let Some(latest) = events.iter().map(|e| e.timestamp_unix_nanos).max() else {
        return;
    };
    let yesterday = now.timestamp_nanos_opt().unwrap_or(0).div_euclid(DAY) - 1;
    let shift = (yesterday - latest.div_euclid(DAY)) * DAY;
    for e in events {
        e.timestamp_unix_nanos = e.timestamp_unix_nanos.saturating_add(shift);
    }
}

/// Parses a whole file; the format is CSV when the name ends in `.csv`, JSONL otherwise.
pub fn parse(name: &str, text: &str) -> Result<Vec<proto::UsageEvent>, FileError> {
    if name.ends_with(".csv") {
        parse_csv(text)
    } else {
        parse_jsonl(text)
    }
}

/// A file's events line by line: each line's number (from 1) and its event, or why the line is
/// not one. Blank lines are left out.
pub type Lines = Vec<(usize, Result<proto::UsageEvent, String>)>;

/// The events of a whole file, or the first line that is not one.
pub fn first_error(lines: Lines) -> Result<Vec<proto::UsageEvent>, FileError> {
    lines.into_iter().map(|(n, line)| line.map_err(|m| err(n, m))).collect()
}

pub fn parse_jsonl(text: &str) -> Result<Vec<proto::UsageEvent>, FileError> {
    first_error(lines_jsonl(text))
}

/// Every line of a JSONL file (each stands alone).
pub fn lines_jsonl(text: &str) -> Lines {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, jsonl_line(line)))
        .collect()
}

fn jsonl_line(line: &str) -> Result<proto::UsageEvent, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let field = |name: &str| -> Result<&str, String> {
        v.get(name)
            .and_then(|x| x.as_str())
            .ok_or_else(|| format!("`{name}` must be a string"))
    };
    let mut attributes = Vec::new();
    if let Some(map) = v.get("attributes") {
        let map = map.as_object().ok_or("`attributes` must be an object")?;
        for (k, value) in map {
            let value = value
                .as_str()
                .ok_or_else(|| format!("attribute {k:?} must be a string"))?;
            attributes.push(proto::Attribute {
                key: k.clone(),
                value: value.to_string(),
            });
        }
    }
    event(
        field("event_id")?,
        field("account")?,
        field("meter")?,
        field("quantity")?,
        field("timestamp")?,
        attributes,
    )
}

/// Splits one CSV line at `delimiter`: fields may be quoted, with `""` for a quote inside.
pub(super) fn csv_fields(line: &str, delimiter: char) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (c, false) if c == delimiter => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

pub fn parse_csv(text: &str) -> Result<Vec<proto::UsageEvent>, FileError> {
    first_error(lines_csv(text)?)
}

/// Every line of a CSV file after its header; `Err` when the header lacks a required column.
pub fn lines_csv(text: &str) -> Result<Lines, FileError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header = csv_fields(header.trim_end_matches('\r'), ',').map_err(|m| err(1, m))?;
    let required = ["event_id", "account", "meter", "quantity", "timestamp"];
    let mut at = [0usize; 5];
    for (slot, name) in at.iter_mut().zip(required) {
        *slot = header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| err(1, format!("header has no `{name}` column")))?;
    }
    let attrs: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix("attr.").map(|name| (i, name.to_string())))
        .collect();
    let line = |line: &str| -> Result<proto::UsageEvent, String> {
        let fields = csv_fields(line.trim_end_matches('\r'), ',')?;
        if fields.len() != header.len() {
            return Err(format!("{} fields, the header has {}", fields.len(), header.len()));
        }
        let attributes = attrs
            .iter()
            .filter(|(j, _)| !fields[*j].is_empty())
            .map(|(j, name)| proto::Attribute {
                key: name.clone(),
                value: fields[*j].clone(),
            })
            .collect();
        let f = |k: usize| fields[at[k]].as_str();
        event(f(0), f(1), f(2), f(3), f(4), attributes)
    };
    Ok(lines.map(|(i, text)| (i + 1, line(text))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_and_csv_read_the_same_event() {
        let jsonl = r#"{"event_id":"e1","account":"globex","meter":"voice.seconds","quantity":"61.5","timestamp":"2026-11-25T10:00:00+01:00","attributes":{"destination":"+44"}}"#;
        let csv = "event_id,account,meter,quantity,timestamp,attr.destination\ne1,globex,voice.seconds,61.5,2026-11-25T10:00:00+01:00,\"+44\"\n";
        let a = parse("u.jsonl", jsonl).unwrap();
        let b = parse("u.csv", csv).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a[0].quantity,
            Some(proto::Quantity {
                units: 61,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn rebasing_moves_the_last_day_to_yesterday_keeping_times_of_day() {
        let text = "{\"event_id\":\"a\",\"account\":\"x\",\"meter\":\"m\",\"quantity\":\"1\",\"timestamp\":\"2026-01-10T08:30:00Z\"}\n\
                    {\"event_id\":\"b\",\"account\":\"x\",\"meter\":\"m\",\"quantity\":\"1\",\"timestamp\":\"2026-01-11T23:00:00Z\"}\n";
        let mut events = parse_jsonl(text).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").unwrap().to_utc();
        rebase_days(&mut events, now);
        let at = |e: &proto::UsageEvent| chrono::DateTime::from_timestamp_nanos(e.timestamp_unix_nanos).to_rfc3339();
        assert_eq!(at(&events[0]), "2026-11-24T08:30:00+00:00");
        assert_eq!(at(&events[1]), "2026-11-25T23:00:00+00:00");
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = parse_jsonl("{\"event_id\":\"e\"}\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_csv("event_id,account,meter,quantity,timestamp\ne,a,m,1e3,2026-11-25T10:00:00Z\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not a plain decimal"), "{e}");
    }
}

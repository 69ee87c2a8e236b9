//! CSV mappings for `ratectl send --mapping MAPPING.toml`: CDR files from systems that write their
//! own columns (docs/mediation.md). A mapping names the column of each event field, how the
//! timestamp is written and in which zone, an exact factor for the quantity's unit, attributes
//! from columns and constant attributes. It is checked whole (every error with its path, unknown
//! keys refused), then against the file's header (a column it names must be there).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::usage_file::{FileError, Lines, csv_fields, first_error, quantity};
use crate::domain::localtime::first_instant_at_or_after;
use crate::domain::money::{exact_mul, parse_exact};
use crate::wire::proto;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    event_id: Option<String>,
    account: Option<String>,
    meter: Option<String>,
    meter_constant: Option<String>,
    quantity: Option<String>,
    timestamp: Option<String>,
    timestamp_format: Option<String>,
    time_zone: Option<String>,
    quantity_multiply: Option<String>,
    delimiter: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    constants: BTreeMap<String, String>,
}

/// How a timestamp column is written.
#[derive(Debug, Clone, PartialEq)]
enum TimeFormat {
    Rfc3339,
    UnixSeconds,
    UnixMillis,
    /// A chrono `strftime` pattern without an offset, read in the mapping's zone.
    Local(String),
}

/// Where an event field comes from: a column, or (the meter only) a constant.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Column(String),
    Constant(String),
}

/// A checked mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    event_id: String,
    account: String,
    meter: Source,
    quantity: String,
    timestamp: String,
    format: TimeFormat,
    zone: Tz,
    multiply: Decimal,
    delimiter: char,
    attributes: Vec<(String, String)>,
    constants: Vec<(String, String)>,
}

/// Every problem of a mapping file, one per line, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct MappingErrors(pub Vec<String>);

impl Mapping {
    pub fn parse(text: &str) -> Result<Mapping, MappingErrors> {
        let raw: RawMapping =
            toml::from_str(text).map_err(|e| MappingErrors(vec![e.to_string().trim().to_string()]))?;
        let mut errors = Vec::new();
        let mut column = |name: &str, value: Option<String>| -> String {
            match value {
                Some(v) if !v.is_empty() => v,
                _ => {
                    errors.push(format!("{name}: the column holding the event's {name} is required"));
                    String::new()
                }
            }
        };
        let event_id = column("event_id", raw.event_id);
        let account = column("account", raw.account);
        let quantity = column("quantity", raw.quantity);
        let timestamp = column("timestamp", raw.timestamp);
        let meter = match (raw.meter, raw.meter_constant) {
            (Some(c), None) => Source::Column(c),
            (None, Some(m)) => Source::Constant(m),
            _ => {
                errors.push("meter: give exactly one of `meter` (a column) and `meter_constant`".to_string());
                Source::Constant(String::new())
            }
        };
        let format = match raw.timestamp_format.as_deref() {
            None | Some("rfc3339") => TimeFormat::Rfc3339,
            Some("unix_seconds") => TimeFormat::UnixSeconds,
            Some("unix_millis") => TimeFormat::UnixMillis,
            Some(pattern) => {
                // A pattern that formats a known instant and reads it back is usable.
                let probe = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
                    .and_then(|d| d.and_hms_opt(13, 4, 5))
                    .unwrap_or_default();
                use chrono::format::{Item, StrftimeItems};
                let valid = !StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error));
                let text = valid.then(|| probe.format_with_items(StrftimeItems::new(pattern)).to_string());
                if text.is_none_or(|t| NaiveDateTime::parse_from_str(&t, pattern).ok() != Some(probe)) {
                    errors.push(format!(
                        "timestamp_format: {pattern:?} is not a strftime pattern of a date and a time to the second \
                         (or rfc3339, unix_seconds, unix_millis)"
                    ));
                }
                TimeFormat::Local(pattern.to_string())
            }
        };
        let zone = match raw.time_zone.as_deref().unwrap_or("UTC").parse::<Tz>() {
            Ok(z) => z,
            Err(_) => {
                errors.push(format!(
                    "time_zone: {:?} is not an IANA zone",
                    raw.time_zone.unwrap_or_default()
                ));
                Tz::UTC
            }
        };
        let multiply = match raw.quantity_multiply.as_deref().map(parse_exact) {
            None => Decimal::ONE,
            Some(Ok(m)) if m > Decimal::ZERO => m,
            Some(Ok(m)) => {
                errors.push(format!("quantity_multiply: must be > 0, got {m}"));
                Decimal::ONE
            }
            Some(Err(m)) => {
                errors.push(format!("quantity_multiply: {m}"));
                Decimal::ONE
            }
        };
        let delimiter = match raw.delimiter.as_deref() {
            None => ',',
            Some(d) if d.chars().count() == 1 && d != "\"" => d.chars().next().unwrap_or(','),
            Some(d) => {
                errors.push(format!("delimiter: {d:?} must be one character other than a quote"));
                ','
            }
        };
        for (name, col) in &raw.attributes {
            if col.is_empty() {
                errors.push(format!("attributes.{name}: the column name is empty"));
            }
            if raw.constants.contains_key(name) {
                errors.push(format!(
                    "attributes.{name}: also in constants; an attribute has one source"
                ));
            }
        }
        if !errors.is_empty() {
            return Err(MappingErrors(errors));
        }
        Ok(Mapping {
            event_id,
            account,
            meter,
            quantity,
            timestamp,
            format,
            zone,
            multiply,
            delimiter,
            attributes: raw.attributes.into_iter().collect(),
            constants: raw.constants.into_iter().collect(),
        })
    }

    /// The columns the mapping reads, with the key that names each.
    fn columns(&self) -> Vec<(String, &str)> {
        let mut out = vec![
            ("event_id".to_string(), self.event_id.as_str()),
            ("account".to_string(), self.account.as_str()),
            ("quantity".to_string(), self.quantity.as_str()),
            ("timestamp".to_string(), self.timestamp.as_str()),
        ];
        if let Source::Column(c) = &self.meter {
            out.push(("meter".to_string(), c));
        }
        out.extend(
            self.attributes
                .iter()
                .map(|(a, c)| (format!("attributes.{a}"), c.as_str())),
        );
        out
    }

    /// The events of a CSV file under this mapping. The header must hold every column the mapping
    /// names (else the error names each missing one); a line that does not read is an error with
    /// its number.
    pub fn read(&self, text: &str) -> Result<Vec<proto::UsageEvent>, FileError> {
        first_error(self.lines(text)?)
    }

    /// Every line of a CSV file under this mapping, each an event or why it is not one; `Err`
    /// when the header lacks a column the mapping names.
    pub fn lines(&self, text: &str) -> Result<Lines, FileError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Ok(Vec::new());
        };
        let header = csv_fields(header.trim_end_matches('\r'), self.delimiter).map_err(|m| fail(1, m))?;
        let mut missing = Vec::new();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, col) in self.columns() {
            match header.iter().position(|h| h == col) {
                Some(i) => {
                    index.insert(col, i);
                }
                None => missing.push(format!("mapping {key}: column {col:?} is not in the header")),
            }
        }
        if !missing.is_empty() {
            return Err(fail(
                1,
                format!("{} (the header has {})", missing.join("; "), header.join(", ")),
            ));
        }
        let line = |line: &str| -> Result<proto::UsageEvent, String> {
            let fields = csv_fields(line.trim_end_matches('\r'), self.delimiter)?;
            if fields.len() != header.len() {
                return Err(format!("{} fields, the header has {}", fields.len(), header.len()));
            }
            let col = |name: &str| fields[index[name]].trim();
            let meter = match &self.meter {
                Source::Column(c) => col(c).to_string(),
                Source::Constant(m) => m.clone(),
            };
            let mut attributes: Vec<proto::Attribute> = self
                .attributes
                .iter()
                .filter(|(_, c)| !col(c).is_empty())
                .map(|(name, c)| proto::Attribute {
                    key: name.clone(),
                    value: col(c).to_string(),
                })
                .collect();
            attributes.extend(self.constants.iter().map(|(k, v)| proto::Attribute {
                key: k.clone(),
                value: v.clone(),
            }));
            Ok(proto::UsageEvent {
                event_id: col(&self.event_id).to_string(),
                account_id: col(&self.account).to_string(),
                meter,
                quantity: Some(self.quantity_of(col(&self.quantity))?),
                timestamp_unix_nanos: self.instant(col(&self.timestamp))?,
                attributes,
            })
        };
        Ok(lines.map(|(i, text)| (i + 1, line(text))).collect())
    }

    /// The column's quantity times the mapping's factor, exact (at most 9 places).
    fn quantity_of(&self, text: &str) -> Result<proto::Quantity, String> {
        let q = parse_exact(text).map_err(|m| format!("quantity: {m}"))?;
        let scaled = exact_mul(q, self.multiply)
            .map_err(|_| format!("quantity {text} x {} is beyond exact decimals", self.multiply))?
            .normalize();
        if scaled.scale() > 9 {
            return Err(format!(
                "quantity {text} x {} = {scaled} has more than 9 decimal places",
                self.multiply
            ));
        }
        quantity(&scaled.to_string())
    }

    fn instant(&self, text: &str) -> Result<i64, String> {
        let at = match &self.format {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("timestamp {text:?}: {e}"))?
                .to_utc(),
            TimeFormat::UnixSeconds | TimeFormat::UnixMillis => {
                let n: i64 = text
                    .parse()
                    .map_err(|_| format!("timestamp {text:?} is not an integer"))?;
                let millis = if self.format == TimeFormat::UnixSeconds {
                    n.checked_mul(1000)
                } else {
                    Some(n)
                };
                millis
                    .and_then(DateTime::from_timestamp_millis)
                    .ok_or_else(|| format!("timestamp {text:?} is out of range"))?
            }
            TimeFormat::Local(pattern) => {
                let local = NaiveDateTime::parse_from_str(text, pattern)
                    .map_err(|e| format!("timestamp {text:?} does not match {pattern:?}: {e}"))?;
                first_instant_at_or_after(self.zone, local)
            }
        };
        at.timestamp_nanos_opt()
            .ok_or_else(|| format!("timestamp {text:?} is out of range"))
    }
}

fn fail(line: usize, message: impl Into<String>) -> FileError {
    FileError {
        line,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A switch's CDR export: semicolons, Berlin wall-clock start times, durations in
    /// milliseconds, the called number as the destination, the network as a constant.
    const SWITCH: &str = r#"
event_id = "call_ref"
account = "msisdn"
meter_constant = "voice.seconds"
quantity = "duration_ms"
timestamp = "start"
timestamp_format = "%d.%m.%Y %H:%M:%S"
time_zone = "Europe/Berlin"
quantity_multiply = "0.001"
delimiter = ";"
[attributes]
destination = "called"
[constants]
network = "mvno-1"
"#;

    #[test]
    fn a_switch_export_reads_as_events() {
        let m = Mapping::parse(SWITCH).unwrap();
        let csv = "call_ref;msisdn;called;start;duration_ms;cell\n\
                   c-1;4917012345;+441632960000;25.11.2026 13:04:05;61500;A7\n\
                   c-2;4917012345;;29.03.2026 02:30:00;1000;A7\n";
        let events = m.read(csv).unwrap();
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(
            (e.event_id.as_str(), e.account_id.as_str(), e.meter.as_str()),
            ("c-1", "4917012345", "voice.seconds")
        );
        assert_eq!(
            e.quantity,
            Some(proto::Quantity {
                units: 61,
                nanos: 500_000_000
            })
        );
        // 13:04:05 in Berlin in November is 12:04:05 UTC.
        let at = |e: &proto::UsageEvent| DateTime::from_timestamp_nanos(e.timestamp_unix_nanos).to_rfc3339();
        assert_eq!(at(e), "2026-11-25T12:04:05+00:00");
        let attrs: Vec<(&str, &str)> = e
            .attributes
            .iter()
            .map(|a| (a.key.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(attrs, [("destination", "+441632960000"), ("network", "mvno-1")]);
        // An empty column gives no attribute; 02:30 on the night the clocks jump from 02:00 to
        // 03:00 does not exist and is read as the first instant after the gap.
        assert_eq!(events[1].attributes.len(), 1);
        assert_eq!(at(&events[1]), "2026-03-29T01:00:00+00:00");
    }

    #[test]
    fn a_column_the_header_lacks_is_named() {
        let m = Mapping::parse(SWITCH).unwrap();
        let e = m
            .read("call_ref;msisdn;start;duration_ms\nc-1;49;25.11.2026 13:04:05;1\n")
            .unwrap_err();
        assert_eq!(e.line, 1);
        assert!(
            e.message
                .starts_with("mapping attributes.destination: column \"called\" is not in the header"),
            "{e}"
        );
    }

    #[test]
    fn every_mapping_error_is_reported_with_its_path() {
        let bad = "event_id = \"id\"\nmeter = \"m\"\nmeter_constant = \"x\"\ntimestamp = \"t\"\n\
                   timestamp_format = \"%Y\"\ntime_zone = \"Mars/Olympus\"\nquantity_multiply = \"-2\"\n\
                   delimiter = \";;\"\n";
        let errors = Mapping::parse(bad).unwrap_err().0;
        for needle in [
            "account: the column",
            "quantity: the column",
            "meter: give exactly one",
            "timestamp_format: \"%Y\"",
            "time_zone: \"Mars/Olympus\"",
            "quantity_multiply: must be > 0",
            "delimiter: \";;\"",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(needle)), "{needle} in {errors:?}");
        }
        let unknown = Mapping::parse("event_id = \"a\"\ncolour = \"red\"\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `colour`"), "{unknown}");
    }

    #[test]
    fn bytes_become_megabytes_exactly_and_a_line_that_does_not_fit_is_refused() {
        let m = Mapping::parse(
            "event_id = \"id\"\naccount = \"a\"\nmeter_constant = \"data.mb\"\nquantity = \"bytes\"\n\
             timestamp = \"t\"\ntimestamp_format = \"unix_seconds\"\nquantity_multiply = \"0.000001\"\n",
        )
        .unwrap();
        let events = m.read("id,a,bytes,t\nd1,x,1572864,1795000000\n").unwrap();
        assert_eq!(
            events[0].quantity,
            Some(proto::Quantity {
                units: 1,
                nanos: 572_864_000
            })
        );
        let e = m.read("id,a,bytes,t\nd1,x,0.0001,1795000000\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("more than 9 decimal places"), "{e}");
    }
}

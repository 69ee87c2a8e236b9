//! Normalization rules (docs/mediation.md): what turns an event as a switch or a gateway wrote it
//! into the event the tariffs expect. [`Rules`] are applied in file order at the door, before the
//! event's checks; each rule is matched on the event as the earlier rules left it (meter, account,
//! attributes) and does one thing: rewrite a field with a regular expression, rename or copy an
//! attribute, set the meter from attributes, scale the quantity exactly, look a field up in a
//! table, or drop the event. The event as sent is kept beside the result ([`Outcome`]): dedupe
//! keys on it, and the record stores it with the names of the rules that changed it.
//!
//! Pure: the rules file is parsed and checked in [`file`]; reading it is the caller's.

pub mod file;

use std::sync::Arc;

use regex::Regex;
use rust_decimal::Decimal;

use super::money::{MAX_INPUT_SCALE, RoundingMode, exact_mul};
use super::usage::{RawEvent, attribute, quantity_of, units_and_nanos};

pub use file::{RuleErrors, parse_rules};

/// The rules in force, in file order (empty: every event is rated as sent).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// One rule: its name (in metrics, records and explanations), when it applies, what it does.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    when: When,
    action: Action,
}

/// What an event must look like for a rule to apply: every condition given holds.
#[derive(Debug, Clone, Default)]
struct When {
    /// One of these meters (any meter when empty).
    meters: Vec<String>,
    /// The account id matches.
    account: Option<Regex>,
    /// Each attribute is present and matches.
    attributes: Vec<(String, Regex)>,
}

/// A field a rule reads or writes: the account, the meter, or an attribute by name. The event
/// id, quantity and time are not fields: the id is the event's identity, the quantity changes
/// by `scale` only, the time never.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Account,
    Meter,
    Attribute(String),
}

/// How a rule that cannot do its work on an event (a lookup key missing from its table) treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The event is refused (INVALID_FIELD, into suspense, where it waits for the table's fix).
    Refuse,
    /// The event goes on unchanged by this rule.
    Keep,
}

#[derive(Debug, Clone)]
enum Action {
    /// Every match of `pattern` in the field replaced (`$1`, `${name}` name groups).
    Rewrite {
        field: Field,
        pattern: Regex,
        replacement: String,
    },
    /// The attribute `from` moved to `to` (overwriting it).
    Rename { from: String, to: Field },
    /// The value of `from` copied into `to` (overwriting it).
    Copy { from: Field, to: Field },
    /// The meter built from literal text and attribute values.
    SetMeter(Vec<Piece>),
    /// The quantity multiplied or divided, exact; rounded to 9 places only when a rounding is given.
    Scale { by: Scale, rounding: Option<RoundingMode> },
    /// `to` set to the table's entry for the value of `from`.
    Lookup {
        from: Field,
        to: Field,
        table: Arc<ahash::AHashMap<String, String>>,
        table_name: String,
        missing: Missing,
    },
    /// The event is not rated: counted under the rule's name and answered DROPPED.
    Drop,
}

#[derive(Debug, Clone, Copy)]
enum Scale {
    Multiply(Decimal),
    Divide(Decimal),
}

/// A part of a meter template: literal text, or an attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Attribute(String),
}

/// What the rules made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No rule changed it: it is rated as sent.
    Unchanged,
    /// The event to check and rate, and the rules that changed it, in order.
    Normalized { event: RawEvent, rules: Vec<Arc<str>> },
    /// A drop rule matched.
    Dropped { rule: Arc<str> },
    /// A rule could not do its work: the event goes to suspense (INVALID_FIELD) as sent.
    Refused { rule: Arc<str>, detail: String },
}

/// One rule's change to an event, worked out on the event borrowed and applied to a copy.
enum Edit {
    Set(Field, String),
    Move { from: String, to: Field, value: String },
    Quantity((i64, i32)),
}

/// What one rule does to one event.
enum Step {
    Nothing,
    Edit(Edit),
    Drop,
    Refuse(String),
}

impl Field {
    /// The field's value in an event (`None`: an attribute it does not carry).
    pub fn get<'a>(&self, e: &'a RawEvent) -> Option<&'a str> {
        match self {
            Field::Account => Some(&e.account_id),
            Field::Meter => Some(&e.meter),
            Field::Attribute(name) => attribute(&e.attributes, name),
        }
    }

    fn set(&self, e: &mut RawEvent, value: String) {
        match self {
            Field::Account => e.account_id = value,
            Field::Meter => e.meter = value,
            Field::Attribute(name) => match e.attributes.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = value,
                None => e.attributes.push((name.clone(), value)),
            },
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Account => f.write_str(file::ACCOUNT_FIELD),
            Field::Meter => f.write_str(file::METER_FIELD),
            Field::Attribute(name) => f.write_str(name),
        }
    }
}

impl Rules {
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rules.iter().map(|r| &r.name)
    }

    /// Applies every rule in order to an event as sent. A rule that matches but changes nothing
    /// (a pattern that does not occur, a value already in place) does not count as fired.
    pub fn apply(&self, sent: &RawEvent) -> Outcome {
        let mut changed: Option<RawEvent> = None;
        let mut fired = Vec::new();
        for rule in &self.rules {
            let event = changed.as_ref().unwrap_or(sent);
            if !rule.when.matches(event) {
                continue;
            }
            match rule.action.step(event) {
                Step::Nothing => {}
                Step::Edit(edit) => {
                    edit.apply(changed.get_or_insert_with(|| sent.clone()));
                    fired.push(rule.name.clone());
                }
                Step::Drop => {
                    return Outcome::Dropped {
                        rule: rule.name.clone(),
                    };
                }
                Step::Refuse(detail) => {
                    return Outcome::Refused {
                        rule: rule.name.clone(),
                        detail,
                    };
                }
            }
        }
        match changed {
            // Edits that put every field back as sent change nothing.
            Some(event) if event != *sent => Outcome::Normalized { event, rules: fired },
            _ => Outcome::Unchanged,
        }
    }
}

impl When {
    fn matches(&self, e: &RawEvent) -> bool {
        (self.meters.is_empty() || self.meters.contains(&e.meter))
            && self.account.as_ref().is_none_or(|re| re.is_match(&e.account_id))
            && self
                .attributes
                .iter()
                .all(|(name, re)| attribute(&e.attributes, name).is_some_and(|v| re.is_match(v)))
    }
}

impl Action {
    fn step(&self, e: &RawEvent) -> Step {
        let set = |field: &Field, value: String| {
            if field.get(e) == Some(value.as_str()) {
                Step::Nothing
            } else {
                Step::Edit(Edit::Set(field.clone(), value))
            }
        };
        match self {
            Action::Rewrite {
                field,
                pattern,
                replacement,
            } => match field.get(e) {
                None => Step::Nothing,
                Some(value) => set(field, pattern.replace_all(value, replacement.as_str()).into_owned()),
            },
            Action::Rename { from, to } => match attribute(&e.attributes, from) {
                None => Step::Nothing,
                Some(value) => Step::Edit(Edit::Move {
                    from: from.clone(),
                    to: to.clone(),
                    value: value.to_string(),
                }),
            },
            Action::Copy { from, to } => match from.get(e) {
                None => Step::Nothing,
                Some(value) => set(to, value.to_string()),
            },
            Action::SetMeter(pieces) => {
                let mut meter = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => meter.push_str(text),
                        Piece::Attribute(name) => match attribute(&e.attributes, name) {
                            Some(value) => meter.push_str(value),
                            None => {
                                return Step::Refuse(format!(
                                    "the meter needs attribute {name:?}, which the event lacks"
                                ));
                            }
                        },
                    }
                }
                set(&Field::Meter, meter)
            }
            Action::Scale { by, rounding } => {
                // A missing or malformed quantity is left to the event's own check.
                let Some(quantity) = e.quantity.and_then(|(units, nanos)| quantity_of(units, nanos)) else {
                    return Step::Nothing;
                };
                match by.apply(quantity, *rounding) {
                    Ok(scaled) => {
                        let scaled = units_and_nanos(scaled);
                        if e.quantity == Some(scaled) {
                            Step::Nothing
                        } else {
                            Step::Edit(Edit::Quantity(scaled))
                        }
                    }
                    Err(detail) => Step::Refuse(detail),
                }
            }
            Action::Lookup {
                from,
                to,
                table,
                table_name,
                missing,
            } => {
                let found = from.get(e).and_then(|key| table.get(key));
                match (found, missing) {
                    (Some(value), _) => set(to, value.clone()),
                    (None, Missing::Keep) => Step::Nothing,
                    (None, Missing::Refuse) => Step::Refuse(match from.get(e) {
                        Some(key) => format!("{from} {key:?} is not in table {table_name:?}"),
                        None => format!("the event has no {from} to look up in table {table_name:?}"),
                    }),
                }
            }
            Action::Drop => Step::Drop,
        }
    }
}

/// Why a scale without a rounding refuses an event.
const TOO_LONG: &str = "the scaled quantity needs more than 9 decimal places (give the rule a rounding)";

impl Scale {
    /// The scaled quantity at most 9 places: exact, or rounded by `rounding` when one is given.
    fn apply(self, quantity: Decimal, rounding: Option<RoundingMode>) -> Result<Decimal, String> {
        let overflow = || "the scaled quantity is out of range".to_string();
        let exact = match self {
            Scale::Multiply(factor) => exact_mul(quantity, factor).map_err(|_| overflow())?,
            Scale::Divide(divisor) => return divide(quantity, divisor, rounding).ok_or_else(overflow)?,
        };
        let exact = exact.normalize();
        if exact.scale() <= MAX_INPUT_SCALE {
            return Ok(exact);
        }
        match rounding {
            Some(mode) => Ok(exact
                .round_dp_with_strategy(MAX_INPUT_SCALE, mode.strategy())
                .normalize()),
            None => Err(TOO_LONG.into()),
        }
    }
}

/// `quantity / divisor` to 9 places as integers (a decimal division would round at 28 digits
/// first): `None` on overflow, an error when a remainder is left and no rounding is given.
fn divide(quantity: Decimal, divisor: Decimal, rounding: Option<RoundingMode>) -> Option<Result<Decimal, String>> {
    let scale = quantity.scale().max(divisor.scale());
    let lift = |d: Decimal| d.mantissa().checked_mul(10i128.pow(scale - d.scale()));
    let numerator = lift(quantity)?.checked_mul(10i128.pow(MAX_INPUT_SCALE))?;
    let denominator = lift(divisor)?;
    let (quotient, remainder) = (numerator / denominator, numerator % denominator);
    let up = match (remainder, rounding) {
        (0, _) => false,
        (_, None) => {
            return Some(Err(TOO_LONG.into()));
        }
        (_, Some(RoundingMode::Down)) => false,
        (_, Some(RoundingMode::Up)) => true,
        (r, Some(RoundingMode::HalfUp)) => 2 * r >= denominator,
        (r, Some(RoundingMode::HalfEven)) => 2 * r > denominator || (2 * r == denominator && quotient % 2 == 1),
    };
    let quotient = quotient + i128::from(up);
    Some(Ok(Decimal::try_from_i128_with_scale(quotient, MAX_INPUT_SCALE)
        .ok()?
        .normalize()))
}

impl Edit {
    fn apply(self, e: &mut RawEvent) {
        match self {
            Edit::Set(field, value) => field.set(e, value),
            Edit::Move { from, to, value } => {
                e.attributes.retain(|(k, _)| *k != from);
                to.set(e, value);
            }
            Edit::Quantity(q) => e.quantity = Some(q),
        }
    }
}

#[cfg(test)]
mod tests;

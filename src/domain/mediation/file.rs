//! The rules file (`config/mediation.toml`, docs/mediation.md): TOML -> raw structs (unknown keys
//! refused) -> every rule checked, every error with its path -> [`Rules`]. Checked: names (unique,
//! fit for a metric label), exactly one action per rule, field names (the event id, quantity and
//! time are not fields), regular expressions and the groups their replacements name, factors,
//! templates, tables, and that no field flows back into itself through the rules (a cycle).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{Action, Field, Missing, Piece, Rule, Rules, Scale, When};
use crate::domain::money::RoundingMode;

/// The field name of the account id in rules.
pub const ACCOUNT_FIELD: &str = "account_id";
/// The field name of the meter in rules.
pub const METER_FIELD: &str = "meter";
pub use crate::limits::MAX_RULES;
use crate::limits::{MAX_REGEX_BYTES as REGEX_SIZE_LIMIT, MAX_RULE_NAME_BYTES as MAX_NAME_BYTES};

/// Every problem found in a rules file, each with its path (`rule[2].rewrite.pattern: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<String>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    tables: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    when: RawWhen,
    rewrite: Option<RawRewrite>,
    rename: Option<RawMove>,
    copy: Option<RawMove>,
    set_meter: Option<String>,
    scale: Option<RawScale>,
    lookup: Option<RawLookup>,
    drop: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(default)]
    meter: Vec<String>,
    account: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    field: String,
    pattern: String,
    replacement: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMove {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    multiply: Option<String>,
    divide: Option<String>,
    rounding: Option<RoundingMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLookup {
    from: String,
    to: String,
    table: String,
    #[serde(default)]
    missing: RawMissing,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawMissing {
    #[default]
    Refuse,
    Keep,
}

/// Parses and checks a rules file's text.
pub fn parse_rules(text: &str) -> Result<Rules, RuleErrors> {
    let raw: RawFile =
        toml::from_str(text).map_err(|error| RuleErrors(vec![error.to_string().trim_end().replace('\n', " | ")]))?;
    let mut errors = Vec::new();
    if raw.rule.len() > MAX_RULES {
        errors.push(format!("rule: {} rules, at most {MAX_RULES}", raw.rule.len()));
    }
    let tables: BTreeMap<String, Arc<ahash::AHashMap<String, String>>> = raw
        .tables
        .into_iter()
        .map(|(name, entries)| (name, Arc::new(entries.into_iter().collect())))
        .collect();
    let mut rules = Vec::new();
    let mut names = BTreeMap::new();
    for (i, raw) in raw.rule.into_iter().enumerate() {
        let path = format!("rule[{i}]");
        if let Some(first) = names.insert(raw.name.clone(), i) {
            errors.push(format!("{path}.name: {:?} is also the name of rule[{first}]", raw.name));
        }
        if let Some(rule) = rule(&path, raw, &tables, &mut errors) {
            rules.push(rule);
        }
    }
    if errors.is_empty()
        && let Some(cycle) = cycle(&rules)
    {
        errors.push(cycle);
    }
    if errors.is_empty() {
        Ok(Rules { rules })
    } else {
        Err(RuleErrors(errors))
    }
}

fn rule(
    path: &str,
    raw: RawRule,
    tables: &BTreeMap<String, Arc<ahash::AHashMap<String, String>>>,
    errors: &mut Vec<String>,
) -> Option<Rule> {
    let before = errors.len();
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= MAX_NAME_BYTES
        && raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        errors.push(format!(
            "{path}.name: {:?} must be 1..={MAX_NAME_BYTES} letters, digits, '-', '_' or '.'",
            raw.name
        ));
    }
    let when = when(&format!("{path}.when"), raw.when, errors);
    let mut actions = Vec::new();
    if let Some(r) = raw.rewrite {
        let p = format!("{path}.rewrite");
        let field = field(&format!("{p}.field"), &r.field, errors);
        let pattern = pattern(&format!("{p}.pattern"), &r.pattern, errors);
        if let Some(re) = &pattern {
            replacement_groups(&format!("{p}.replacement"), re, &r.replacement, errors);
        }
        if let (Some(field), Some(pattern)) = (field, pattern) {
            actions.push(Action::Rewrite {
                field,
                pattern,
                replacement: r.replacement,
            });
        }
    }
    if let Some(m) = raw.rename {
        let p = format!("{path}.rename");
        let from = field(&format!("{p}.from"), &m.from, errors);
        let to = field(&format!("{p}.to"), &m.to, errors);
        match (from, to) {
            (Some(Field::Attribute(from)), Some(to)) if to != Field::Attribute(from.clone()) => {
                actions.push(Action::Rename { from, to })
            }
            (Some(Field::Attribute(_)), Some(_)) => errors.push(format!("{p}: from and to are the same attribute")),
            (Some(_), _) => errors.push(format!(
                "{p}.from: only an attribute is renamed (the account and the meter are copied or rewritten)"
            )),
            _ => {}
        }
    }
    if let Some(m) = raw.copy {
        let p = format!("{path}.copy");
        let from = field(&format!("{p}.from"), &m.from, errors);
        let to = field(&format!("{p}.to"), &m.to, errors);
        match (from, to) {
            (Some(from), Some(to)) if from == to => errors.push(format!("{p}: from and to are the same field")),
            (Some(from), Some(to)) => actions.push(Action::Copy { from, to }),
            _ => {}
        }
    }
    if let Some(template) = raw.set_meter
        && let Some(pieces) = meter_template(&format!("{path}.set_meter"), &template, errors)
    {
        actions.push(Action::SetMeter(pieces));
    }
    if let Some(s) = raw.scale
        && let Some(by) = scale(&format!("{path}.scale"), &s, errors)
    {
        actions.push(Action::Scale {
            by,
            rounding: s.rounding,
        });
    }
    if let Some(l) = raw.lookup {
        let p = format!("{path}.lookup");
        let from = field(&format!("{p}.from"), &l.from, errors);
        let to = field(&format!("{p}.to"), &l.to, errors);
        let table = tables.get(&l.table).cloned();
        if table.is_none() {
            let known: Vec<&str> = tables.keys().map(String::as_str).collect();
            errors.push(format!(
                "{p}.table: no table {:?} in [tables] (it has: {})",
                l.table,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        if let (Some(from), Some(to), Some(table)) = (from, to, table) {
            actions.push(Action::Lookup {
                from,
                to,
                table,
                table_name: l.table,
                missing: match l.missing {
                    RawMissing::Refuse => Missing::Refuse,
                    RawMissing::Keep => Missing::Keep,
                },
            });
        }
    }
    match raw.drop {
        Some(true) => actions.push(Action::Drop),
        Some(false) => errors.push(format!("{path}.drop: only `drop = true` is meaningful; remove the key")),
        None => {}
    }
    let given = ["rewrite", "rename", "copy", "set_meter", "scale", "lookup", "drop"];
    if errors.len() == before && actions.len() != 1 {
        errors.push(format!(
            "{path}: a rule does exactly one of {}; this one does {}",
            given.join(", "),
            actions.len()
        ));
    }
    if errors.len() != before {
        return None;
    }
    Some(Rule {
        name: Arc::from(raw.name),
        when,
        action: actions.pop()?,
    })
}

fn when(path: &str, raw: RawWhen, errors: &mut Vec<String>) -> When {
    for (i, meter) in raw.meter.iter().enumerate() {
        if meter.is_empty() {
            errors.push(format!("{path}.meter[{i}]: a meter name is not empty"));
        }
    }
    let account = raw
        .account
        .and_then(|p| pattern(&format!("{path}.account"), &p, errors));
    let mut attributes = Vec::new();
    for (name, p) in raw.attributes {
        let at = format!("{path}.attributes.{name:?}");
        if let Some(Field::Attribute(name)) = field(&at, &name, errors).filter(|f| {
            let attribute = matches!(f, Field::Attribute(_));
            if !attribute {
                errors.push(format!(
                    "{at}: match the meter with when.meter, the account with when.account"
                ));
            }
            attribute
        }) && let Some(re) = pattern(&at, &p, errors)
        {
            attributes.push((name, re));
        }
    }
    When {
        meters: raw.meter,
        account,
        attributes,
    }
}

/// A field name: `account_id`, `meter`, or an attribute's name.
fn field(path: &str, name: &str, errors: &mut Vec<String>) -> Option<Field> {
    match name {
        ACCOUNT_FIELD => Some(Field::Account),
        METER_FIELD => Some(Field::Meter),
        "event_id" => {
            errors.push(format!(
                "{path}: event_id is the event's identity (what dedupe keys on): rules never change it"
            ));
            None
        }
        "quantity" => {
            errors.push(format!("{path}: the quantity changes by a scale rule only"));
            None
        }
        "timestamp" => {
            errors.push(format!("{path}: the event time is not a field rules change"));
            None
        }
        "" => {
            errors.push(format!("{path}: a field name is not empty"));
            None
        }
        _ => Some(Field::Attribute(name.to_string())),
    }
}

fn pattern(path: &str, text: &str, errors: &mut Vec<String>) -> Option<Regex> {
    match RegexBuilder::new(text).size_limit(REGEX_SIZE_LIMIT).build() {
        Ok(re) => Some(re),
        Err(error) => {
            let message = error.to_string().replace('\n', " | ");
            errors.push(format!("{path}: invalid regular expression: {message}"));
            None
        }
    }
}

/// Checks that every group a replacement names (`$1`, `$name`, `${name}`) is one of the pattern's:
/// the regex crate would put an empty string in silently (`$1x` names a group "1x").
fn replacement_groups(path: &str, re: &Regex, replacement: &str, errors: &mut Vec<String>) {
    let bytes = replacement.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let rest = &replacement[i + 1..];
        let (group, used) = if rest.starts_with('$') {
            i += 2;
            continue;
        } else if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => {
                    errors.push(format!("{path}: an unclosed ${{ at byte {i}"));
                    return;
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        let known = match group.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|n| n == group),
        };
        if group.is_empty() || !known {
            errors.push(format!(
                "{path}: ${group} is not a group of the pattern (write ${{1}}x for group 1 followed by x, $$ for a dollar)"
            ));
        }
        i += 1 + used;
    }
}

/// `"voice.{direction}"`: literal text and `{attribute}` references.
fn meter_template(path: &str, template: &str, errors: &mut Vec<String>) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match (rest.find('{'), rest.find('}')) {
            (None, None) => {
                pieces.push(Piece::Text(rest.to_string()));
                rest = "";
            }
            (Some(open), Some(close)) if open < close => {
                if open > 0 {
                    pieces.push(Piece::Text(rest[..open].to_string()));
                }
                let name = &rest[open + 1..close];
                match field(path, name, errors)? {
                    Field::Attribute(name) => pieces.push(Piece::Attribute(name)),
                    other => {
                        errors.push(format!("{path}: {{{other}}}: the template takes attributes only"));
                        return None;
                    }
                }
                rest = &rest[close + 1..];
            }
            _ => {
                errors.push(format!("{path}: {template:?} has an unbalanced brace"));
                return None;
            }
        }
    }
    if pieces.is_empty() {
        errors.push(format!("{path}: the meter template is empty"));
        return None;
    }
    Some(pieces)
}

fn scale(path: &str, raw: &RawScale, errors: &mut Vec<String>) -> Option<Scale> {
    let positive = |key: &str, text: &str, errors: &mut Vec<String>| match text.parse::<Decimal>() {
        Ok(d) if d > Decimal::ZERO => Some(d),
        _ => {
            errors.push(format!("{path}.{key}: {text:?} is not a decimal above 0"));
            None
        }
    };
    match (&raw.multiply, &raw.divide) {
        (Some(m), None) => positive("multiply", m, errors).map(Scale::Multiply),
        (None, Some(d)) => positive("divide", d, errors).map(Scale::Divide),
        _ => {
            errors.push(format!("{path}: give exactly one of multiply and divide"));
            None
        }
    }
}

/// The first cycle of fields the rules move values along (copy, rename, lookup, the meter's
/// template): a field whose value flows back into itself, which makes a file's meaning hang on
/// its order in a way nobody means.
fn cycle(rules: &[Rule]) -> Option<String> {
    let mut edges: BTreeMap<Field, Vec<(Field, &str)>> = BTreeMap::new();
    for rule in rules {
        let mut add = |from: &Field, to: &Field| {
            if from != to {
                edges.entry(from.clone()).or_default().push((to.clone(), &rule.name));
            }
        };
        match &rule.action {
            Action::Rename { from, to } => add(&Field::Attribute(from.clone()), to),
            Action::Copy { from, to } | Action::Lookup { from, to, .. } => add(from, to),
            Action::SetMeter(pieces) => {
                for piece in pieces {
                    if let Piece::Attribute(name) = piece {
                        add(&Field::Attribute(name.clone()), &Field::Meter);
                    }
                }
            }
            Action::Rewrite { .. } | Action::Scale { .. } | Action::Drop => {}
        }
    }
    // Depth-first from each field; `path` is the walk so far (field, the rule that led to it).
    fn walk<'a>(
        at: &Field,
        edges: &BTreeMap<Field, Vec<(Field, &'a str)>>,
        path: &mut Vec<(Field, &'a str)>,
        done: &mut std::collections::BTreeSet<Field>,
    ) -> Option<String> {
        if let Some(start) = path.iter().position(|(f, _)| f == at) {
            let fields: Vec<String> = path[start..]
                .iter()
                .map(|(f, _)| f.to_string())
                .chain([at.to_string()])
                .collect();
            let rules: Vec<&str> = path[start..].iter().map(|(_, r)| *r).collect();
            return Some(format!(
                "rule: fields {} form a cycle through rules {}: a value flows back into its own field",
                fields.join(" -> "),
                rules.join(", ")
            ));
        }
        if done.contains(at) {
            return None;
        }
        for (next, rule) in edges.get(at).into_iter().flatten() {
            path.push((at.clone(), rule));
            let found = walk(next, edges, path, done);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        done.insert(at.clone());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for start in edges.keys() {
        if let Some(found) = walk(start, &edges, &mut Vec::new(), &mut done) {
            return Some(found);
        }
    }
    None
}

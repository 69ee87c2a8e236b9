//! ratectl's commands, one module each. Each takes its parsed arguments (and, when it talks to
//! ratingd, the connection settings as a value) and returns what it has to say as a
//! [`super::output::Printed`]; `src/bin/ratectl.rs` only parses and dispatches.

pub mod balance;
pub mod charges;
pub mod corrections;
pub mod explain;
pub mod export;
pub mod mediation;
pub mod records;
pub mod send;
pub mod statement;
pub mod subscriptions;
pub mod suspense;
pub mod tariffs;
pub mod token;
pub mod totals;

/// Where ratingd listens unless `--target` says otherwise.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:50051";

/// `--attr KEY=VALUE` arguments as pairs (a key is never empty).
pub fn attribute_args(args: &[String]) -> Result<Vec<(String, String)>, super::output::Failure> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(super::output::Failure::new(format!("--attr: {a:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// A current-thread runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, super::output::Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| super::output::Failure::new(format!("cannot start the async runtime: {e}")))
}

/// `{"USD": {"total_charge", "total_amount"}, ...}`: the per-currency sums of totals and
/// statements, the same shape in both.
fn by_currency_json(list: &[crate::wire::proto::CurrencyTotal]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = list
        .iter()
        .map(|c| {
            let v = serde_json::json!({ "total_charge": c.total_charge, "total_amount": c.total_amount });
            (c.currency.clone(), v)
        })
        .collect();
    serde_json::Value::Object(map)
}

//! Property tests of the money and rating rules.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use proptest::prelude::*;
use rust_decimal::Decimal;

use ratingd::domain::money::round_quotient;
use ratingd::domain::tariff::Catalogue;
use ratingd::domain::tariff_file::parse_catalogue;
use ratingd::rating::{RatingInput, rate};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn price(input: &RatingInput<'_>, catalogue: &Catalogue, plan: &str) -> Decimal {
    rate(catalogue.plan(plan).unwrap(), input).expect("rated").charge
}

fn input<'a>(meter: &'a str, quantity: Decimal, usage: Decimal, when: DateTime<Utc>) -> RatingInput<'a> {
    RatingInput {
        meter,
        quantity,
        at: when,
        attributes: &[],
        period_usage: usage,
        subscription_discount: None,
    }
}

/// A random cumulative meter: model, increasing integer tier bounds, prices with up to 4 places.
#[derive(Debug, Clone)]
struct CumulativeMeter {
    model: &'static str,
    bounds: Vec<u32>,
    prices: Vec<Decimal>,
    included: u32,
    discount: Option<Decimal>,
    per: u32,
}

impl CumulativeMeter {
    fn toml(&self) -> String {
        let body = match self.model {
            "package" => format!("block_size = {}\nblock_price = \"{}\"", self.bounds[0], self.prices[0]),
            _ => {
                let mut tiers: Vec<String> = self
                    .bounds
                    .iter()
                    .zip(&self.prices)
                    .map(|(b, p)| format!("{{ up_to = {b}, price = \"{p}\" }}"))
                    .collect();
                tiers.push(format!("{{ price = \"{}\" }}", self.prices[self.bounds.len()]));
                format!("tiers = [{}]", tiers.join(", "))
            }
        };
        let discount = self
            .discount
            .map(|d| format!("discount_percent = \"{d}\""))
            .unwrap_or_default();
        format!(
            "[[plans]]\nid = \"p\"\ncurrency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = {{ places = 2, mode = \"half-even\" }}\n\
             [[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n{discount}\n\
             [plans.versions.meters.m]\nmodel = \"{}\"\nper = {}\nincluded = {}\n{body}\n",
            self.model, self.per, self.included
        )
    }
}

fn money() -> impl Strategy<Value = Decimal> {
    (0i64..=50_000, 0u32..=4).prop_map(|(m, s)| Decimal::new(m, s))
}

fn quantity() -> impl Strategy<Value = Decimal> {
    (0i64..=2_000_000, 0u32..=3).prop_map(|(m, s)| Decimal::new(m, s))
}

fn cumulative_meter() -> impl Strategy<Value = CumulativeMeter> {
    (
        prop_oneof![Just("graduated"), Just("volume"), Just("package")],
        prop::collection::vec(1u32..5_000, 1..4),
        prop::collection::vec(money(), 4),
        prop_oneof![Just(0u32), 1u32..500],
        prop::option::of((1i64..=9_999, 0u32..=2).prop_map(|(m, s)| Decimal::new(m, s).min(Decimal::ONE_HUNDRED))),
        prop_oneof![Just(1u32), Just(60u32), Just(7u32)],
    )
        .prop_map(|(model, mut steps, prices, included, discount, per)| {
            // Increasing bounds from positive steps.
            let mut sum = 0;
            for s in &mut steps {
                sum += *s;
                *s = sum;
            }
            CumulativeMeter {
                model,
                bounds: steps,
                prices,
                included,
                discount,
                per,
            }
        })
}

fn sum_in_order(catalogue: &Catalogue, quantities: &[Decimal]) -> Decimal {
    let when = at("2026-11-26T12:00:00Z");
    let mut usage = Decimal::ZERO;
    let mut total = Decimal::ZERO;
    for &q in quantities {
        total += price(&input("m", q, usage, when), catalogue, "p");
        usage += q;
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For any order and batching of a period's events, the record charges sum exactly to the
    /// price of the period's total quantity.
    #[test]
    fn cumulative_charges_sum_to_the_price_of_the_total(
        meter in cumulative_meter(),
        events in prop::collection::vec(quantity(), 1..24).prop_shuffle(),
        seed in any::<u64>(),
    ) {
        let catalogue = parse_catalogue(&meter.toml()).expect("generated tariff is valid");
        let total: Decimal = events.iter().copied().sum();
        let whole = price(&input("m", total, Decimal::ZERO, at("2026-11-26T12:00:00Z")), &catalogue, "p");
        prop_assert_eq!(sum_in_order(&catalogue, &events), whole);
        // Another order: rotate by a seed-chosen amount and reverse.
        let mut other = events.clone();
        other.rotate_left((seed as usize) % events.len());
        other.reverse();
        prop_assert_eq!(sum_in_order(&catalogue, &other), whole);
        // Batched differently: neighbours merged into single events.
        let merged: Vec<Decimal> = events.chunks(1 + (seed as usize % 3)).map(|c| c.iter().copied().sum()).collect();
        prop_assert_eq!(sum_in_order(&catalogue, &merged), whole);
    }

    /// Every tier boundary: exactly at a bound the graduated price is the sum of the full slabs below
    /// it, and the volume price is the bound times the lower tier's price; one nano-unit above it,
    /// volume moves to the next tier.
    #[test]
    fn every_tier_boundary_is_rated_correctly(meter in cumulative_meter()) {
        prop_assume!(meter.model != "package");
        let plain = CumulativeMeter { included: 0, discount: None, per: 1, ..meter.clone() };
        let catalogue = parse_catalogue(&plain.toml()).unwrap();
        let when = at("2026-11-26T12:00:00Z");
        let mut below = Decimal::ZERO;
        let mut full_slabs = Decimal::ZERO;
        for (i, &bound) in plain.bounds.iter().enumerate() {
            let bound = Decimal::from(bound);
            full_slabs += (bound - below) * plain.prices[i];
            let at_bound = price(&input("m", bound, Decimal::ZERO, when), &catalogue, "p");
            let just_above = price(&input("m", bound + Decimal::new(1, 9), Decimal::ZERO, when), &catalogue, "p");
            let nano = Decimal::new(1, 9);
            if plain.model == "graduated" {
                prop_assert_eq!(at_bound, full_slabs);
                // One nano-unit more is charged at the next tier's price (rounded to 9 places).
                let expected = full_slabs + (nano * plain.prices[i + 1]).round_dp_with_strategy(9, rust_decimal::RoundingStrategy::MidpointNearestEven);
                prop_assert_eq!(just_above, expected);
            } else {
                prop_assert_eq!(at_bound, bound * plain.prices[i]);
                let expected = ((bound + nano) * plain.prices[i + 1]).round_dp_with_strategy(9, rust_decimal::RoundingStrategy::MidpointNearestEven);
                prop_assert_eq!(just_above, expected);
            }
            below = bound;
        }
    }

    /// Exact decimal arithmetic: n events of q at price 1 sum to exactly n x q, even for values
    /// such as 0.1 that no binary float holds.
    #[test]
    fn charges_do_not_depend_on_float(q in (0i64..=1_000_000_000, 0u32..=9).prop_map(|(m, s)| Decimal::new(m, s)), n in 1usize..50) {
        let catalogue = parse_catalogue(
            "[[plans]]\nid = \"p\"\ncurrency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = { places = 2, mode = \"half-up\" }\n\
             [[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n[plans.versions.meters.m]\nmodel = \"per_unit\"\nprice = \"1\"\n",
        ).unwrap();
        let when = at("2026-11-26T12:00:00Z");
        let one = price(&input("m", q, Decimal::ZERO, when), &catalogue, "p");
        prop_assert_eq!(one, q);
        let sum: Decimal = (0..n).map(|_| price(&input("m", q, Decimal::ZERO, when), &catalogue, "p")).sum();
        prop_assert_eq!(sum, q * Decimal::from(n as u64));
    }

    /// `round_quotient` is the correctly rounded exact quotient, ties to even.
    #[test]
    fn record_rounding_is_half_even_on_the_exact_quotient(m in any::<i64>(), scale in 0u32..=18, den in 1u32..=604_800) {
        let n = Decimal::new(m, scale);
        let r = round_quotient(n, den).unwrap();
        prop_assert_eq!(r.scale(), 9);
        // |r x den - n| <= den x 0.5e-9, computed exactly in decimals.
        let diff = r * Decimal::from(den) - n;
        let half_ulp = Decimal::from(den) * Decimal::new(5, 10);
        prop_assert!(diff.abs() <= half_ulp, "{n}/{den} -> {r}");
        if diff.abs() == half_ulp {
            prop_assert!(r.mantissa() % 2 == 0, "tie {n}/{den} -> {r} is not even");
        }
    }

    /// A call split at band boundaries and daylight-saving transitions costs what a second-by-second
    /// walk through local time says it costs.
    #[test]
    fn band_split_matches_a_second_by_second_reference(
        start in prop_oneof![
            // Around the 2026 transitions in Berlin, and anywhere in the year.
            (0i64..(3 * 86_400)).prop_map(|s| at("2026-03-28T12:00:00Z") + Duration::seconds(s)),
            (0i64..(3 * 86_400)).prop_map(|s| at("2026-10-24T12:00:00Z") + Duration::seconds(s)),
            (0i64..(365 * 86_400)).prop_map(|s| at("2026-01-01T00:00:00Z") + Duration::seconds(s)),
        ],
        seconds in 0i64..=10_800,
    ) {
        let catalogue = parse_catalogue(include_str!("data/models.toml")).unwrap();
        let charge = price(&input("voice.night", Decimal::from(seconds), Decimal::ZERO, start), &catalogue, "calls");
        // Reference: night (x2) is Sunday before 02:30 local time in Berlin, price 0.06 per 60 s.
        let mut units = Decimal::ZERO;
        for i in 0..seconds {
            let local = (start + Duration::seconds(i)).with_timezone(&chrono_tz::Europe::Berlin);
            let night = local.weekday() == Weekday::Sun && (local.hour() * 60 + local.minute()) < 150;
            units += if night { Decimal::TWO } else { Decimal::ONE };
        }
        let expected = round_quotient(units * Decimal::new(6, 2), 60).unwrap();
        prop_assert_eq!(charge, expected, "start {} for {} s", start, seconds);
    }
}

#[test]
fn allowance_frees_exactly_the_first_units_of_the_period() {
    let catalogue = parse_catalogue(include_str!("../config/tariffs.toml")).unwrap();
    let when = at("2026-11-26T12:00:00Z");
    let mut usage = Decimal::ZERO;
    let mut total = Decimal::ZERO;
    for q in [3, 40, 1, 56, 7, 2, 0, 90, 1] {
        let q = Decimal::from(q);
        total += price(&input("sms.count", q, usage, when), &catalogue, "telecom-standard");
        usage += q;
    }
    // 200 SMS, 100 free, 100 x 0.05.
    assert_eq!(usage, Decimal::from(200));
    assert_eq!(total, Decimal::new(5, 0));
}

/// No float type in any money or quantity path: the pure core must not mention one, except the
/// tariff reader's refusal of TOML floats.
#[test]
fn no_float_in_the_money_paths() {
    let mut offenders = Vec::new();
    let mut files = Vec::new();
    let mut dirs = vec![
        std::path::PathBuf::from("src/domain"),
        std::path::PathBuf::from("src/rating"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let refuses_float = line.contains("fn visit_f64") || line.contains("is a TOML float");
            if (line.contains("f64") || line.contains("f32")) && !refuses_float {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "float in a money path:\n{}", offenders.join("\n"));
}

/// Corrections: a plan whose first version is superseded by a fix (other prices for every
/// meter), with a volume meter, a graduated meter with an allowance, and a banded per-minute
/// meter with a connect fee and 60/1 increments.
fn corrections_plan() -> String {
    let version = |extra: &str, api: &str, data: &str, voice: &str| {
        format!(
            r#"[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
{extra}[plans.versions.meters.api]
model = "volume"
tiers = [{{ up_to = 500, price = "{api}" }}, {{ up_to = 2000, price = "0.004" }}, {{ price = "0.001" }}]
[plans.versions.meters.data]
model = "graduated"
included = 100
tiers = [{{ up_to = 1000, price = "{data}" }}, {{ price = "0.01" }}]
[plans.versions.meters.voice]
model = "per_unit"
per = 60
price = "{voice}"
duration = true
increments = {{ first = 60, next = 1 }}
connect_fee = "0.03"
bands = [
  {{ name = "day", factor = "1", windows = [{{ days = ["mon-fri"], from = "08:00", to = "18:00" }}] }},
  {{ name = "rest", factor = "0.4", windows = [{{ days = ["mon-fri"], from = "00:00", to = "08:00" }}, {{ days = ["mon-fri"], from = "18:00", to = "24:00" }}, {{ days = ["sat-sun"], from = "00:00", to = "24:00" }}] }},
]
"#
        )
    };
    format!(
        "[[plans]]\nid = \"c\"\ncurrency = \"EUR\"\ntime_zone = \"Europe/Berlin\"\nrounding = {{ places = 2, mode = \"half-even\" }}\n{}{}",
        version("", "0.01", "0.05", "0.20"),
        version("supersedes = 1\n", "0.008", "0.045", "0.18")
    )
}

/// One correction of the generated mix.
#[derive(Debug, Clone)]
enum Op {
    Void(usize),
    Amend(usize, u32),
    Rerate(Option<&'static str>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..40usize).prop_map(Op::Void),
        (0..40usize, 0..3000u32).prop_map(|(i, q)| Op::Amend(i, q)),
        prop::option::of(prop::sample::select(vec!["api", "data", "voice"])).prop_map(Op::Rerate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// After any sequence of voids, amends and re-rates (and a last re-rate under the fix), what
    /// the records add to the totals (reversals included) equals a fresh rating, in order, of the
    /// corrected events; at every step the records in force sum to all the records, and each
    /// reproduces its own charge from its stored inputs and version.
    #[test]
    fn corrections_leave_the_totals_of_a_fresh_rating(
        events in prop::collection::vec((0..3usize, 0..3000u32, 0..(30 * 24 * 60i64)), 1..30),
        ops in prop::collection::vec(op(), 0..8),
    ) {
        use ratingd::domain::correction::{Change, Correction, Role};
        use ratingd::domain::record::RatedRecord;
        use ratingd::rating::correct::{correct, current, reversal_of};
        use ratingd::rating::{rate_with, rerate};

        let catalogue = parse_catalogue(&corrections_plan()).expect("valid");
        let plan = catalogue.plan("c").unwrap();
        let meters = ["api", "data", "voice"];
        let start = at("2026-11-01T00:00:00+01:00");
        // The events as sent (id, meter, quantity, time), rated in order under version 1.
        let mut sent: Vec<(String, &str, Decimal, DateTime<Utc>)> = events
            .iter()
            .enumerate()
            .map(|(i, (m, q, minute))| (format!("e{i}"), meters[*m], Decimal::from(*q), start + Duration::minutes(*minute)))
            .collect();
        let mut records: Vec<RatedRecord> = Vec::new();
        let mut usage = [Decimal::ZERO; 3];
        for (id, meter, quantity, when) in &sent {
            let m = meters.iter().position(|x| x == meter).unwrap();
            let input = RatingInput { meter, quantity: *quantity, at: *when, attributes: &[], period_usage: usage[m], subscription_discount: None };
            let r = rate_with(plan, plan.version(1).unwrap(), &input).expect("rated");
            records.push(RatedRecord {
                content: 0, event_id: id.clone(), account_id: "a".into(), meter: meter.to_string(), quantity: *quantity,
                timestamp_unix_nanos: when.timestamp_nanos_opt().unwrap(), attributes: Vec::new(), plan: "c".into(),
                version: 1, period: "2026-11".into(), period_usage_before: usage[m], subscription_discount: None,
                rated_quantity: r.rated_quantity, charge: r.charge, correction: None, as_sent: None,
            });
            usage[m] += r.rated_quantity;
        }
        let mut voided = vec![false; sent.len()];
        let mut ops = ops;
        ops.push(Op::Rerate(None));
        for (n, op) in ops.iter().enumerate() {
            let change = match op {
                Op::Void(i) => Change::Void { event_id: format!("e{}", i % sent.len()) },
                Op::Amend(i, q) => Change::Amend { event_id: format!("e{}", i % sent.len()), quantity: Some(Decimal::from(*q)), attributes: None },
                Op::Rerate(meter) => Change::Rerate { meter: meter.map(str::to_string) },
            };
            let in_force = current(records.clone());
            let Ok(revisions) = correct(plan, &in_force, &change) else {
                // A voided event, or an amendment that changes nothing: refused, nothing written.
                continue;
            };
            let c = |role| Some(Correction { role, action: change.action(), id: format!("op{n}"), reason: String::new(), requested_by: String::new(), at_unix_nanos: 0, booked: None });
            for (i, new) in revisions {
                records.push(RatedRecord { correction: c(Role::Reversal), ..reversal_of(&in_force[i]) });
                if let Some(new) = new {
                    records.push(RatedRecord { correction: c(Role::Replacement), ..new });
                }
            }
            let count = sent.len();
            match op {
                Op::Void(i) => voided[i % count] = true,
                Op::Amend(i, q) => sent[i % count].2 = Decimal::from(*q),
                Op::Rerate(_) => {}
            }
            let in_force = current(records.clone());
            let all: Decimal = records.iter().map(|r| r.charge).sum();
            prop_assert_eq!(all, in_force.iter().map(|r| r.charge).sum::<Decimal>());
            for r in &in_force {
                prop_assert_eq!(rerate(plan, r).expect("reproduced").charge, r.charge);
            }
        }
        // Fresh: the corrected events, in order, under the versions now in force.
        let mut fresh = [(Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, 0i64); 3];
        for ((_, meter, quantity, when), gone) in sent.iter().zip(&voided) {
            if *gone {
                continue;
            }
            let m = meters.iter().position(|x| x == meter).unwrap();
            let r = rate(plan, &RatingInput { meter, quantity: *quantity, at: *when, attributes: &[], period_usage: fresh[m].1, subscription_discount: None }).expect("rated");
            fresh[m] = (fresh[m].0 + quantity, fresh[m].1 + r.rated_quantity, fresh[m].2 + r.charge, fresh[m].3 + 1);
        }
        let mut totals = [(Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, 0i64); 3];
        for r in &records {
            let (meter, quantity, rated, charge, n) = r.counts();
            let m = meters.iter().position(|x| *x == meter).unwrap();
            totals[m] = (totals[m].0 + quantity, totals[m].1 + rated, totals[m].2 + charge, totals[m].3 + n);
        }
        prop_assert_eq!(totals, fresh);
    }
}

/// A call sent to [`PartialShard::job`]: id, account, seconds, start, and its part tag if any.
type CallEvent<'a> = (
    String,
    &'a str,
    i64,
    DateTime<Utc>,
    Option<ratingd::domain::partial::PartTag>,
);

/// One shard, its accounts on the shipped telecom plan, and its jobs (no store: the output is
/// read back from its segment).
struct PartialShard {
    ctx: ratingd::pipeline::RatingContext,
    state: ratingd::pipeline::shard::ShardState,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    key: ratingd::domain::keyed::HashKey,
}

impl PartialShard {
    fn new() -> PartialShard {
        PartialShard {
            ctx: ratingd::pipeline::RatingContext {
                catalogue: parse_catalogue(include_str!("../config/tariffs.toml")).unwrap(),
                subscriptions: ratingd::domain::subscription::SubscriptionBook::new(
                    &[],
                    Some("telecom-standard".into()),
                ),
                mediation: Default::default(),
            },
            state: Default::default(),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(1_000)),
            key: ratingd::domain::keyed::HashKey::new(3, 4),
        }
    }

    /// Rates one job of events (id, account, seconds, start, part tag) and returns the charges
    /// of the records it wrote, by event id.
    fn job(&mut self, events: Vec<CallEvent<'_>>) -> Vec<(String, Decimal)> {
        use ratingd::pipeline::{Admitted, BatchTicket, ShardJob, ValidEvent};
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, (id, account, seconds, start, tag))| {
                let mut attributes = vec![("destination".to_string(), "+441632960000".to_string())];
                if let Some(t) = &tag {
                    attributes.push(("partial_session".into(), t.session.clone()));
                }
                ValidEvent {
                    index: i as u32,
                    fingerprint: self.key.fingerprint(account, &id),
                    content: (seconds as u64) << 32 | start.timestamp() as u64,
                    event: ratingd::domain::usage::UsageEvent {
                        event_id: id,
                        account_id: account.into(),
                        meter: "voice.seconds".into(),
                        quantity: Decimal::from(seconds),
                        timestamp: start,
                        attributes,
                        origin: ratingd::domain::origin::Origin::Usage,
                    },
                    as_sent: None,
                    part: tag.map(|tag| {
                        Box::new(ratingd::pipeline::shard::PartIn {
                            merged_fingerprint: self.key.fingerprint(account, &tag.merged_id()),
                            tag,
                        })
                    }),
                }
            })
            .collect();
        let ticket = BatchTicket::new(1, 1, Admitted::new(self.permits.clone().try_acquire_owned().unwrap())).0;
        let out = self.state.process(
            &self.ctx,
            ShardJob {
                ticket,
                queued_at: std::time::Instant::now(),
                received_at: chrono::Utc::now(),
                events,
                rejected: Vec::new(),
            },
        );
        ratingd::store::compact::SegmentReader::new(&out.records)
            .map(|r| r.unwrap())
            .map(|r| (r.event_id, r.charge))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split of a call into parts, sent in any order (some twice, over several jobs), rates
    /// to the charge of the whole call: one connect fee, the increments on the whole duration,
    /// the band split over the whole call (starts around the 20:00 Berlin boundary).
    #[test]
    fn any_split_of_a_call_in_any_order_rates_to_the_whole_calls_charge(
        start_offset in -3_600i64..3_600,
        cuts in proptest::collection::btree_set(1i64..7_200, 0..6),
        length in 1i64..7_200,
        order in proptest::collection::vec(any::<u32>(), 12),
        jobs in 1usize..4,
    ) {
        use ratingd::domain::partial::PartTag;
        // 19:00 UTC is 20:00 Berlin in November: the peak/off-peak boundary.
        let start = at("2026-11-17T19:00:00Z") + Duration::seconds(start_offset);
        let mut bounds: Vec<i64> = cuts.into_iter().filter(|c| *c < length).collect();
        bounds.insert(0, 0);
        bounds.push(length);
        let parts: Vec<(i64, i64)> = bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
        let n = parts.len();
        let mut sends: Vec<usize> = (0..n).collect();
        // Some parts again (duplicates), then a shuffle driven by `order`.
        sends.extend(order.iter().take(3).map(|o| *o as usize % n));
        let mut keyed: Vec<(u32, usize)> = sends.into_iter().enumerate().map(|(i, p)| (order[i % order.len()].rotate_left(i as u32), p)).collect();
        keyed.sort();
        let mut shard = PartialShard::new();
        let whole = shard.job(vec![("whole".into(), "tel-a", length, start, None)]);
        let per_job = keyed.len().div_ceil(jobs);
        let mut merged = Vec::new();
        for chunk in keyed.chunks(per_job) {
            let events = chunk
                .iter()
                .map(|(_, p)| {
                    let (offset, seconds) = parts[*p];
                    let tag = PartTag { session: "s".into(), seq: *p as u32 + 1, last: *p == n - 1 };
                    (format!("s-{p}"), "tel-b", seconds, start + Duration::seconds(offset), Some(tag))
                })
                .collect();
            merged.extend(shard.job(events));
        }
        prop_assert_eq!(merged.len(), 1, "one record for the session: {:?}", merged);
        prop_assert_eq!(&merged[0].0, "partial:s");
        prop_assert_eq!(merged[0].1, whole[0].1);
    }
}

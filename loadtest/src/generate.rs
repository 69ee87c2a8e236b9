//! Events for the example plans, derived from (seed, stream, sequence number) alone: a resend
//! regenerates the identical event, so nothing sent has to be kept. Each event is written straight
//! into protobuf wire format (the generator's own cost stays small beside the daemon's).

/// What an event is meant to be, so its acknowledgement can be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Valid and never sent before: ACCEPTED.
    Fresh,
    /// Invalid on purpose: REJECTED.
    Invalid,
}

/// splitmix64: a small, fast, well-mixed generator; plenty for load shapes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// Account picker: uniform, or Zipf with exponent s (a few accounts send most of the usage).
pub struct Accounts {
    count: u64,
    /// Cumulative weights scaled to u64 (Zipf only).
    cdf: Vec<u64>,
}

impl Accounts {
    pub fn new(count: u64, zipf: Option<f64>) -> Accounts {
        let cdf = match zipf {
            Some(s) if s > 0.0 => {
                let weights: Vec<f64> = (1..=count).map(|k| 1.0 / (k as f64).powf(s)).collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                weights
                    .iter()
                    .map(|w| {
                        acc += w / total;
                        (acc.min(1.0) * u64::MAX as f64) as u64
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Accounts { count, cdf }
    }

    pub fn pick(&self, rng: &mut Rng) -> u64 {
        if self.cdf.is_empty() {
            return rng.below(self.count);
        }
        let x = rng.next_u64();
        (self.cdf.partition_point(|&c| c < x) as u64).min(self.count - 1)
    }
}

/// The account id of account number `n`.
pub fn account_name(n: u64) -> String {
    format!("lt-{n:06}")
}

/// Accounts alternate between the two example plans.
pub fn plan_of(n: u64) -> &'static str {
    if n.is_multiple_of(2) {
        "telecom-standard"
    } else {
        "saas-pro"
    }
}

const DESTINATIONS: [&str; 6] = [
    "+442071838750",
    "+447700900123",
    "+14155550100",
    "+4930123456",
    "+33142685300",
    "+447911123456",
];

/// How events are made for one run.
pub struct Generator {
    pub seed: u64,
    /// Prefix of every event id: unique per run, so a second run's events are new.
    pub tag: String,
    pub accounts: Accounts,
    pub invalid_ratio: f64,
    /// Event times are spread over the `spread_nanos` before this instant.
    pub now_nanos: i64,
    /// One hour by default; days with `--spread-hours`, to fill the dedupe window's cold tier.
    pub spread_nanos: u64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl Generator {
    /// Appends event (stream, seq) as a length-delimited `UsageBatch.events` entry; returns its
    /// kind. `scratch` is reused between calls.
    pub fn encode_event(&self, stream: u32, seq: u64, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Kind {
        let mut rng = Rng::new(self.seed ^ (u64::from(stream) << 48) ^ seq.wrapping_mul(0xA24B_AED4_963E_E407));
        let e = scratch;
        e.clear();
        // 1: event_id = <tag>-<stream>-<seq>
        let mut id = Vec::with_capacity(32);
        id.extend_from_slice(self.tag.as_bytes());
        id.push(b'-');
        put_decimal(&mut id, u64::from(stream));
        id.push(b'-');
        put_decimal(&mut id, seq);
        let account = self.accounts.pick(&mut rng);
        let invalid = rng.chance(self.invalid_ratio);
        let invalid_kind = if invalid { 1 + rng.below(4) } else { 0 };
        if invalid_kind != 1 {
            put_bytes(e, 0x0A, &id);
        }
        // 2: account_id
        let mut name = Vec::with_capacity(12);
        name.extend_from_slice(b"lt-");
        let digits = {
            let mut d = Vec::with_capacity(8);
            put_decimal(&mut d, account);
            d
        };
        name.extend(std::iter::repeat_n(b'0', 6usize.saturating_sub(digits.len())));
        name.extend_from_slice(&digits);
        put_bytes(e, 0x12, &name);
        // The meter, quantity and attributes the account's plan knows.
        let (mut meter, units, nanos, destination): (&str, u64, u32, Option<&str>) = if account.is_multiple_of(2) {
            match rng.below(10) {
                0..=4 => (
                    "voice.seconds",
                    1 + rng.below(1200),
                    0,
                    Some(DESTINATIONS[rng.below(DESTINATIONS.len() as u64) as usize]),
                ),
                5..=7 => ("sms.count", 1 + rng.below(3), 0, None),
                _ => ("data.mb", rng.below(200), (rng.below(1000) * 1_000_000) as u32, None),
            }
        } else {
            match rng.below(10) {
                0..=6 => ("api.requests", 1 + rng.below(2000), 0, None),
                _ => (
                    "storage.gb_hours",
                    rng.below(50),
                    (rng.below(100) * 10_000_000) as u32,
                    None,
                ),
            }
        };
        if invalid_kind == 2 {
            meter = "bogus.meter";
        }
        put_bytes(e, 0x1A, meter.as_bytes());
        // 4: quantity { units, nanos }; an invalid nanos (>= 1e9) for one kind of bad event.
        let nanos = if invalid_kind == 3 { 1_500_000_000 } else { nanos };
        let mut q = Vec::with_capacity(12);
        if units != 0 {
            q.push(0x08);
            put_varint(&mut q, units);
        }
        if nanos != 0 {
            q.push(0x10);
            put_varint(&mut q, u64::from(nanos));
        }
        put_bytes(e, 0x22, &q);
        // 5: timestamp: within the spread (the last hour by default), or a year back for one kind
        // of bad event.
        let back = if invalid_kind == 4 {
            365 * 86_400 * 1_000_000_000
        } else {
            1_000_000_000 + rng.below(self.spread_nanos) as i64
        };
        e.push(0x28);
        put_varint(e, (self.now_nanos - back) as u64);
        // 6: attributes
        if let Some(d) = destination {
            let mut a = Vec::with_capacity(32);
            put_bytes(&mut a, 0x0A, b"destination");
            put_bytes(&mut a, 0x12, d.as_bytes());
            put_bytes(e, 0x32, &a);
        }
        put_bytes(out, 0x12, e);
        if invalid { Kind::Invalid } else { Kind::Fresh }
    }
}

/// Starts a `UsageBatch` in `out`: field 1, the batch id. Events are appended after it.
pub fn begin_batch(out: &mut Vec<u8>, batch_id: u64) {
    out.clear();
    out.push(0x08);
    put_varint(out, batch_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use ratingd::wire::proto;

    fn generator(invalid_ratio: f64) -> Generator {
        Generator {
            seed: 7,
            tag: "t".into(),
            accounts: Accounts::new(1000, Some(1.1)),
            invalid_ratio,
            now_nanos: 1_790_000_000_000_000_000,
            spread_nanos: 3_600 * 1_000_000_000,
        }
    }

    #[test]
    fn batches_decode_as_the_proto_and_regenerate_identically() {
        let g = generator(0.2);
        let (mut a, mut b, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        begin_batch(&mut a, 42);
        let kinds: Vec<Kind> = (0..500)
            .map(|seq| g.encode_event(3, seq, &mut a, &mut scratch))
            .collect();
        begin_batch(&mut b, 42);
        for seq in 0..500 {
            g.encode_event(3, seq, &mut b, &mut scratch);
        }
        assert_eq!(a, b);
        let batch = proto::UsageBatch::decode(a.as_slice()).expect("valid protobuf");
        assert_eq!(batch.batch_id, 42);
        assert_eq!(batch.events.len(), 500);
        assert_eq!(batch.events[0].event_id, "t-3-0");
        let invalid = kinds.iter().filter(|k| **k == Kind::Invalid).count();
        assert!((50..150).contains(&invalid), "{invalid} invalid of 500 at ratio 0.2");
        for (e, kind) in batch.events.iter().zip(&kinds) {
            assert!(
                e.account_id.starts_with("lt-") && e.account_id.len() == 9,
                "{}",
                e.account_id
            );
            if *kind == Kind::Fresh {
                assert!(!e.event_id.is_empty());
                assert!(e.quantity.is_some_and(|q| q.nanos < 1_000_000_000));
                assert_ne!(e.meter, "bogus.meter");
                assert!(e.timestamp_unix_nanos < g.now_nanos);
                assert!(e.timestamp_unix_nanos > g.now_nanos - 3_602 * 1_000_000_000);
                let n: u64 = e.account_id[3..].parse().expect("numbered account");
                let telecom = ["voice.seconds", "sms.count", "data.mb"].contains(&e.meter.as_str());
                assert_eq!(telecom, n.is_multiple_of(2), "{} on account {n}", e.meter);
                assert_eq!(e.meter == "voice.seconds", e.attributes.len() == 1);
            }
        }
    }

    #[test]
    fn event_times_cover_the_spread() {
        let g = Generator {
            spread_nanos: 30 * 86_400 * 1_000_000_000,
            ..generator(0.0)
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        begin_batch(&mut out, 1);
        for seq in 0..2000 {
            g.encode_event(0, seq, &mut out, &mut scratch);
        }
        let batch = proto::UsageBatch::decode(out.as_slice()).expect("valid protobuf");
        let days_back: Vec<i64> = batch
            .events
            .iter()
            .map(|e| (g.now_nanos - e.timestamp_unix_nanos) / (86_400 * 1_000_000_000))
            .collect();
        assert!(days_back.iter().all(|d| (0..30).contains(d)), "inside the 30 days");
        assert!(days_back.iter().any(|d| *d >= 25), "as far back as the spread");
        assert!(
            days_back.iter().filter(|d| **d == 0).count() < 200,
            "not bunched in the last day"
        );
    }

    #[test]
    fn zipf_favours_the_first_accounts() {
        let accounts = Accounts::new(1000, Some(1.2));
        let mut rng = Rng::new(1);
        let first = (0..10_000).filter(|_| accounts.pick(&mut rng) < 10).count();
        assert!(first > 4_000, "{first} of 10,000 picks in the first 10 accounts");
        let uniform = Accounts::new(1000, None);
        let first = (0..10_000).filter(|_| uniform.pick(&mut rng) < 10).count();
        assert!(first < 300, "{first} of 10,000 uniform picks in the first 10 accounts");
    }
}

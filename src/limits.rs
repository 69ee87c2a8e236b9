//! Every bound of ratingd in one place, each with its reason (after TigerBeetle's
//! `constants.zig`). Where one bound depends on another, the relation is asserted at compile time
//! at the end of this file, so a change to one that breaks the other does not build. The
//! configurable limits of `[limits]` have their defaults here; `config` checks a file against the
//! ranges here. Constants of a format (magic numbers, header sizes, flags) stay with the format;
//! this module holds what bounds input, memory, work and time.
//!
//! Nothing here depends on another module: every layer may read it.

use std::time::Duration;

// ------------------------------------------------------------------------------------------------
// What a caller may send.
// ------------------------------------------------------------------------------------------------

/// Longest account id (SPEC section 2).
pub const MAX_ACCOUNT_BYTES: usize = 128;
/// Longest event id, account id and meter accepted (SPEC section 2); `limits.max_id_bytes` may
/// lower it, never raise it.
pub const MAX_ID_BYTES: usize = 128;
/// Default bounds on an event's attributes (`limits.max_attributes`,
/// `limits.max_attribute_bytes`): a handful of short pairs, as SPEC section 2 has them.
pub const DEFAULT_MAX_ATTRIBUTES: usize = 16;
pub const DEFAULT_MAX_ATTRIBUTE_BYTES: usize = 256;
/// Default most events in one batch (`limits.max_batch_events`): a batch is one admission, one
/// job per shard and one acknowledgement, so it bounds the memory of everything in flight.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 10_000;
/// Default largest decoded gRPC message (`limits.max_message_bytes`): a full batch of typical
/// events (about 100 bytes each) with room to spare.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default HTTP/2 streams per connection (`limits.max_concurrent_streams`).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Longest duration split into time-of-day bands: a month of seconds. Longer "calls" are input
/// errors, and the bound keeps the split loop short.
pub const MAX_BANDED_DURATION_SECONDS: i64 = 31 * 24 * 3600;
/// Most events one Quote prices (they are rated in the request's task).
pub const MAX_QUOTE_EVENTS: usize = 10_000;
/// Most subscriptions one UpsertSubscriptions call takes (one context replacement each call).
pub const MAX_SUBSCRIPTIONS_PER_CALL: usize = 100_000;
/// Most suspense entries one reprocess call handles (read into memory at once).
pub const MAX_REPROCESS: usize = 100_000;
/// Longest reason kept with a correction (stored in every record it writes).
pub const MAX_REASON_BYTES: usize = 1024;
/// Largest amount a top-up, credit limit or threshold may have: far beyond any balance, and
/// small enough that no sum of them loses a digit (asserted below).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
/// Most units one Authorize or Update may ask for.
pub const MAX_REQUESTED_UNITS: i64 = 1_000_000_000;
/// Most rows one page of any listing carries (bounds the memory and time of one answer).
pub const MAX_PAGE: usize = 1000;
/// Rows of a page when the request leaves it to ratingd.
pub const DEFAULT_PAGE: usize = 100;
/// Shortest bearer token accepted: shorter ones can be guessed; `ratectl token new` makes 64 hex
/// digits.
pub const MIN_TOKEN_BYTES: usize = 16;

// ------------------------------------------------------------------------------------------------
// Tariff files and normalization rules.
// ------------------------------------------------------------------------------------------------

/// Longest meter name, attribute name or value accepted in a tariff (SPEC section 2 bounds ids).
pub const MAX_TARIFF_NAME_BYTES: usize = 128;
/// Largest `per` divisor: a week of seconds is the largest unit anyone prices by.
pub const MAX_PER: u32 = 604_800;
/// Most rules in a rules file: every event runs through all of them.
pub const MAX_RULES: usize = 256;
/// Most compiled size of one regular expression: a pattern is matched against every event.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Longest rule name (it is a metric label value).
pub const MAX_RULE_NAME_BYTES: usize = 64;
/// Most parts a partial session may hold (`mediation.partial.max_parts` at most): its parts are
/// kept in memory and on disk until it merges.
pub const MAX_PARTIAL_PARTS: usize = 10_000;

// ------------------------------------------------------------------------------------------------
// Queues, memory and the work of one step.
// ------------------------------------------------------------------------------------------------

/// Most shards (`shards`): one thread each, and more than the cores only adds switching.
pub const MAX_SHARDS: usize = 256;
/// Default batches admitted and not yet acknowledged over all streams
/// (`limits.max_inflight_batches`): the bound on queued memory, and so on every queue.
pub const DEFAULT_MAX_INFLIGHT_BATCHES: usize = 256;
/// Default batches in flight on one stream (`limits.max_inflight_per_stream`); past it the stream
/// is not read (HTTP/2 flow control holds the agent back).
pub const DEFAULT_MAX_INFLIGHT_PER_STREAM: usize = 64;
/// Most fee or true-up records the billing cycle sends through the door in one batch: an agent's
/// batch size, so its commit is no larger than theirs.
pub const FEES_PER_BATCH: usize = 1_000;
/// Most accounts a correction sends to a shard in one job (one commit): a re-rate of every
/// account holds one job's records of the period in memory at a time, and reads the blocks once
/// per job (BENCHMARKS.md, issue 17: 2.6 s a round on a data dir of 9 million records).
pub const ACCOUNTS_PER_JOB: usize = 4096;
/// Accounts whose totals a shard copies per step of a checkpoint copy, between jobs: a step
/// costs well under a millisecond (the dedupe ids are not copied: the claims since the last cut
/// are handed over whole, see `pipeline::dedupe::journal`).
pub const COPY_ACCOUNTS_PER_STEP: usize = 4096;
/// Claims a shard's checkpoint journal reserves room for after a cut (about the claims of the
/// interval before, at most this many: 48 MiB).
pub const JOURNAL_RESERVE_CLAIMS: usize = 1 << 21;
/// Tables per day of the dedupe window's hot tier (by the fingerprint's high bits): each is
/// spilled and dropped on its own, so no single one grows large.
pub const DEDUPE_TABLES: usize = 64;
/// Late ids (of days already spilled) that make a spill of their own before the next day's:
/// 1,048,576 ids are about 30 MiB of hot tier.
pub const LATE_SPILL_IDS: usize = 1 << 20;
/// Spill runs merged into one once there are this many: a 35-day window then keeps about 5
/// merged runs and at most 6 spills, so a new id probes about 11 filters instead of 35. A merged
/// run leaves when its newest day passes the window, so its oldest ids stay up to 6 days longer
/// (at most 17% more disk for a 35-day window).
pub const MERGE_RUNS: usize = 7;
/// Commits retention looks at per step, and records (a commit is not begun past this many):
/// bound one step's memory to a few tens of MiB of decoded records.
pub const RETENTION_COMMITS_PER_STEP: usize = 64;
pub const RETENTION_RECORDS_PER_STEP: usize = 100_000;
/// Keys the Redis projection writes per pipelined transaction: bounds one request's size and
/// Redis's blocking time.
pub const REDIS_KEYS_PER_PIPELINE: usize = 500;
/// Longest string of an event refused at the door that suspense keeps (cut at a char
/// boundary): oversize input stays storable.
pub const SUSPENSE_TEXT_BYTES: usize = 1024;
/// Longest line text kept with a spool file's bad line in suspense: it is kept as an attribute
/// value, within the attribute bound.
pub const BAD_LINE_TEXT_BYTES: usize = 256;

// ------------------------------------------------------------------------------------------------
// Storage.
// ------------------------------------------------------------------------------------------------

/// Target size of one stored block part: of 32 KiB, 128 KiB and 1 MiB, the one with the least
/// disk per record at the same rate (BENCHMARKS.md).
pub const BLOCK_PART_BYTES: usize = 1024 * 1024;
/// sled's own page cache: reads are drill-downs, which the OS page cache serves as well; sled's
/// default (1 GiB) would mostly hold blocks just written.
pub const SLED_CACHE_BYTES: u64 = 128 << 20;
/// A checkpoint file is written and synced in steps of this many bytes (the writer never holds
/// more than this in the page cache unsynced).
pub const CHECKPOINT_SYNC_BYTES: usize = 4 << 20;

// ------------------------------------------------------------------------------------------------
// Time.
// ------------------------------------------------------------------------------------------------

/// Longest dedupe window (`dedupe_window_days`): ten years.
pub const MAX_DEDUPE_WINDOW_DAYS: u32 = 3660;
/// Longest close grace (`period_close_grace_hours`): a year.
pub const MAX_CLOSE_GRACE_HOURS: u32 = 24 * 366;
/// The Redis flush interval's range (`redis.flush_interval_ms`): more often than every 10 ms is
/// load without use; less often than hourly is not a projection any more.
pub const MIN_FLUSH_INTERVAL_MS: u64 = 10;
pub const MAX_FLUSH_INTERVAL_MS: u64 = 3_600_000;
/// How long open connections may take to finish after a shutdown starts, before they are closed
/// (well inside the default 30 s grace, leaving time for the pipeline drain).
pub const SERVER_DRAIN: Duration = Duration::from_secs(5);
/// How often due reservations and expiring credit are swept (a balance read sweeps its own
/// account first, so this bounds only how long a lapsed reservation's money shows as held in
/// Redis and the metrics).
pub const BALANCE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed spill of the dedupe window (a full disk), the next attempt waits this long; the
/// frozen ids stay in memory and keep answering meanwhile.
pub const SPILL_RETRY: Duration = Duration::from_secs(60);
/// ratectl: a daemon that does not complete the TCP connection in this time is reported
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------------
// Relations, checked when ratingd is built.
// ------------------------------------------------------------------------------------------------

// An account id is an id: `limits.max_id_bytes` bounds both.
const _: () = assert!(MAX_ACCOUNT_BYTES <= MAX_ID_BYTES);
// An event within the limits is kept whole in suspense (only oversize input is cut).
const _: () = assert!(MAX_ID_BYTES <= SUSPENSE_TEXT_BYTES);
const _: () = assert!(DEFAULT_MAX_ATTRIBUTE_BYTES <= SUSPENSE_TEXT_BYTES);
// A bad line's text is an attribute value of its suspense entry.
const _: () = assert!(BAD_LINE_TEXT_BYTES <= DEFAULT_MAX_ATTRIBUTE_BYTES);
// A page of suspense can be reprocessed whole; the default page is a page.
const _: () = assert!(DEFAULT_PAGE <= MAX_PAGE);
const _: () = assert!(MAX_PAGE <= MAX_REPROCESS);
// The billing cycle's batches are no larger than an agent's may be.
const _: () = assert!(FEES_PER_BATCH <= DEFAULT_MAX_BATCH_EVENTS);
// One stream cannot hold more batches than the pipeline admits.
const _: () = assert!(DEFAULT_MAX_INFLIGHT_PER_STREAM <= DEFAULT_MAX_INFLIGHT_BATCHES);
// The hot tier picks a table by masking the fingerprint's bits.
const _: () = assert!(DEDUPE_TABLES.is_power_of_two());
// A block part's lengths are stored as u32.
const _: () = assert!(BLOCK_PART_BYTES <= u32::MAX as usize);
// A banded duration in nanoseconds fits an i64.
const _: () = assert!(MAX_BANDED_DURATION_SECONDS <= i64::MAX / 1_000_000_000);
// The largest amount at a record's 9 places, summed over a million entries, stays inside the
// 96-bit mantissa of a decimal: no sum of amounts loses a digit.
const _: () = assert!((MAX_AMOUNT as i128) * 1_000_000_000 * 1_000_000 < (1i128 << 96));
// The flush interval's range is a range.
const _: () = assert!(MIN_FLUSH_INTERVAL_MS <= MAX_FLUSH_INTERVAL_MS);
// The connections' drain window leaves most of the default 30 s grace to the pipeline.
const _: () = assert!(SERVER_DRAIN.as_secs() * 2 <= 30);

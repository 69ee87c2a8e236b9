//! The Redis projection of the committed totals (the invoicing consumers' contract,
//! `docs/redis.md`). Redis is never the source of truth: every flush writes absolute values with
//! the epoch they were read at, so a repeated or retried flush cannot double-count, and a Redis
//! that was down or wiped converges to sled's totals by a full resync.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use redis::aio::ConnectionManager;
use tracing::{info, warn};

mod fields;

use fields::hset_single;
pub use fields::{LAYOUT, balance_fields, fields};

use crate::config::RedisConfig;
use crate::domain::aggregate::PeriodTotals;
use crate::domain::alert::SpendAlert;
use crate::limits::REDIS_KEYS_PER_PIPELINE as KEYS_PER_PIPELINE;
use crate::pipeline::{CommittedView, TotalsKey};
use crate::shutdown::Shutdown;
use crate::store::{Adjustments, Alerts, Closes, Outbox, StoredAlert};

/// The key names of the contract.
pub struct Keys<'a> {
    pub prefix: &'a str,
}

/// Writes `meta` (epoch, updated_at) only if nothing was wiped since the flush began: with a
/// token (ARGV[3], a full rewrite) when `<prefix>:resync` still holds it (then removed), without
/// one when `meta` still exists. Returns 1 when written, 0 when not.
pub const META_IF_INTACT: &str = r"
local intact
if ARGV[3] ~= '' then
  intact = redis.call('GET', KEYS[2]) == ARGV[3]
else
  intact = redis.call('EXISTS', KEYS[1]) == 1
end
if not intact then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'updated_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('DEL', KEYS[2]) end
return 1
";

impl Keys<'_> {
    /// `<prefix>:agg:{<account>}:<period>`; the braces are literal (one Redis Cluster slot per account).
    pub fn aggregate(&self, account: &str, period: &str) -> String {
        format!("{}:agg:{{{account}}}:{period}", self.prefix)
    }
    pub fn accounts(&self, period: &str) -> String {
        format!("{}:accounts:{period}", self.prefix)
    }
    /// A small hash ratingd keeps up to date; its absence means Redis lost data (resync).
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }
    /// `<prefix>:resync`: set while a full rewrite runs (a token of this rewrite); the rewrite
    /// writes `meta` only if it is still there, so a wipe during it is seen.
    pub fn resync(&self) -> String {
        format!("{}:resync", self.prefix)
    }
    pub fn periods_closed(&self) -> String {
        format!("{}:periods:closed", self.prefix)
    }
    pub fn alerts(&self) -> String {
        format!("{}:alerts", self.prefix)
    }
    pub fn adjustments(&self) -> String {
        format!("{}:adjustments", self.prefix)
    }
    /// `<prefix>:balance:{<account>}`: an account's balances (docs/redis.md).
    pub fn balance(&self, account: &str) -> String {
        format!("{}:balance:{{{account}}}", self.prefix)
    }
}

/// The projection task: flushes changed totals every interval, resyncs everything after a start,
/// a reconnect or a wiped Redis. Never blocks ingest: while Redis is unreachable, changed keys
/// accumulate in the (bounded) dirty set and the loop retries.
pub async fn run(
    config: RedisConfig,
    committed: CommittedView,
    closes: Closes,
    alerts: Alerts,
    adjustments: Adjustments,
    balance_alerts: Outbox,
    mut shutdown: Shutdown,
) {
    // Entries a crash left unannounced go out with the first flush.
    committed
        .adjustments_pending
        .store(true, std::sync::atomic::Ordering::Release);
    committed
        .balance_alerts_pending
        .store(true, std::sync::atomic::Ordering::Release);
    let mut exporter = Exporter {
        config,
        committed,
        closes,
        alerts,
        adjustments,
        balance_alerts,
        conn: None,
        last_success: std::time::Instant::now(),
        resync: true,
        failing: false,
        in_sets: ahash::AHashSet::new(),
    };
    let interval = Duration::from_millis(exporter.config.flush_interval_ms.max(1));
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            () = shutdown.started() => true,
        };
        // The last flush before a stop goes as fast as it can.
        exporter.flush(!stop && !shutdown.is_started()).await;
        if stop || shutdown.is_started() {
            info!("redis projection stopped");
            return;
        }
    }
}

struct Exporter {
    config: RedisConfig,
    committed: CommittedView,
    closes: Closes,
    alerts: Alerts,
    adjustments: Adjustments,
    balance_alerts: Outbox,
    conn: Option<ConnectionManager>,
    /// When a flush last succeeded (start-up counts as one): the Redis lag is measured from it.
    last_success: std::time::Instant,
    resync: bool,
    failing: bool,
    /// Aggregates whose account is known to be in its period's accounts set since the last full
    /// write: their `SADD` is not sent again (one entry per aggregate, like the totals).
    in_sets: ahash::AHashSet<TotalsKey>,
}

impl Exporter {
    /// Appends every spend alert not yet announced to `<prefix>:alerts`, then records it as
    /// announced (a crash between the two repeats the entry, identical; consumers dedupe on
    /// `alert_id`).
    async fn announce_alerts(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        use std::sync::atomic::Ordering;
        if !self.committed.alerts_pending.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let keys = Keys {
            prefix: &self.config.prefix,
        };
        let stored = match self.alerts.all() {
            Ok(a) => a,
            Err(e) => {
                self.committed.alerts_pending.store(true, Ordering::Release);
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "reading alerts",
                    e.to_string(),
                )));
            }
        };
        for StoredAlert { alert, .. } in stored.into_iter().filter(|a| !a.announced) {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(keys.alerts()).arg("*");
            for (k, v) in alert_fields(&alert) {
                cmd.arg(k).arg(v);
            }
            if let Err(e) = cmd.query_async::<()>(conn).await {
                self.committed.alerts_pending.store(true, Ordering::Release);
                return Err(e);
            }
            let id = alert.id();
            if let Err(e) = self.alerts.put(&StoredAlert { alert, announced: true }) {
                warn!(error = %e, alert = %id, "cannot record the alert as announced");
            }
        }
        Ok(())
    }

    /// Appends every entry of `outbox` not yet announced to `stream`, then records it as
    /// announced (a crash between the two repeats the entry, identical; consumers dedupe on its
    /// id field): closed periods' corrections on `<prefix>:adjustments`, balance alerts on
    /// `<prefix>:alerts`. `pending` is the flag that says there may be some.
    async fn announce_outbox(
        &self,
        conn: &mut ConnectionManager,
        outbox: &Outbox,
        stream: String,
        pending: &std::sync::atomic::AtomicBool,
    ) -> redis::RedisResult<()> {
        use std::sync::atomic::Ordering;
        if !pending.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let entries = outbox.pending().map_err(|e| {
            pending.store(true, Ordering::Release);
            store_failure(e)
        })?;
        for (id, entry) in entries {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&stream).arg("*");
            for (k, v) in entry_fields(&entry) {
                cmd.arg(k).arg(v);
            }
            if let Err(e) = cmd.query_async::<()>(conn).await {
                pending.store(true, Ordering::Release);
                return Err(e);
            }
            if let Err(e) = outbox.announced(&id) {
                warn!(error = %e, entry = %id, "cannot record the entry as announced");
            }
        }
        Ok(())
    }

    /// Appends the announcement of every close not yet announced, then records it as announced.
    /// A crash between the two repeats the entries with identical content (consumers dedupe on
    /// `close_id`); an announcement is never lost.
    async fn announce(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        if !self
            .committed
            .announcements_pending
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(());
        }
        let keys = Keys {
            prefix: &self.config.prefix,
        };
        let closes = self.closes.all().map_err(|e| {
            self.committed
                .announcements_pending
                .store(true, std::sync::atomic::Ordering::Release);
            redis::RedisError::from((redis::ErrorKind::Io, "reading closes", e.to_string()))
        })?;
        for mut close in closes.into_iter().filter(|c| !c.announced) {
            let mut pipe = redis::pipe();
            for entry in &close.entries {
                let fields = entry_fields(entry);
                let mut cmd = redis::cmd("XADD");
                cmd.arg(keys.periods_closed()).arg("*");
                for (k, v) in &fields {
                    cmd.arg(k).arg(v);
                }
                pipe.add_command(cmd).ignore();
            }
            // A close without entries (every account of it damaged) has nothing to append; an
            // empty pipeline is not sent.
            let sent = if close.entries.is_empty() {
                Ok(())
            } else {
                pipe.query_async::<()>(conn).await
            };
            if let Err(e) = sent {
                self.committed
                    .announcements_pending
                    .store(true, std::sync::atomic::Ordering::Release);
                return Err(e);
            }
            close.announced = true;
            if let Err(e) = self.closes.put(&close) {
                // Announced but not recorded: the next start announces again, with identical content.
                warn!(error = %e, plan = %close.plan, period = %close.period, "cannot record the announcement");
            }
            info!(plan = %close.plan, period = %close.period, accounts = close.entries.len(), "period close announced");
        }
        Ok(())
    }

    async fn connection(&mut self) -> redis::RedisResult<ConnectionManager> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let client = redis::Client::open(self.config.url.as_str())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        let c = ConnectionManager::new_with_config(client, manager_config).await?;
        self.conn = Some(c.clone());
        self.resync = true;
        Ok(c)
    }

    /// One flush: the changed keys, or every key when a resync is due.
    async fn flush(&mut self, paced: bool) {
        let epoch = self.committed.epoch.load(std::sync::atomic::Ordering::Acquire);
        let dirty = self.committed.take_dirty();
        let started = std::time::Instant::now();
        let result = self.write(&dirty, epoch, paced).await;
        metrics::histogram!(crate::telemetry::REDIS_FLUSH_DURATION).record(started.elapsed().as_secs_f64());
        match result {
            Ok(written) => {
                self.last_success = std::time::Instant::now();
                metrics::gauge!(crate::telemetry::REDIS_LAG).set(0.0);
                if self.failing {
                    info!(written, "redis reachable again; projection caught up");
                }
                self.failing = false;
            }
            Err(error) => {
                metrics::counter!(crate::telemetry::REDIS_FLUSH_ERRORS).increment(1);
                metrics::gauge!(crate::telemetry::REDIS_LAG).set(self.last_success.elapsed().as_secs_f64());
                if !self.failing {
                    warn!(%error, url = %self.config.url, "redis flush failed; ingest continues, will retry");
                }
                self.failing = true;
                self.conn = None;
                self.resync = true;
                self.committed.mark_dirty(dirty);
            }
        }
    }

    async fn write(
        &mut self,
        dirty: &ahash::AHashSet<TotalsKey>,
        epoch: u64,
        paced: bool,
    ) -> redis::RedisResult<usize> {
        let mut conn = self.connection().await?;
        let keys = Keys {
            prefix: &self.config.prefix,
        };
        let meta_present: bool = redis::cmd("EXISTS").arg(keys.meta()).query_async(&mut conn).await?;
        let all = self.resync || !meta_present;
        // The token of a full rewrite: a wipe while it runs takes it away, and `meta` is then
        // not written (the next flush rewrites again).
        let token = format!("{epoch}:{}", Utc::now().timestamp_nanos_opt().unwrap_or(0));
        if all {
            self.in_sets.clear();
            redis::cmd("SET")
                .arg(keys.resync())
                .arg(&token)
                .query_async::<()>(&mut conn)
                .await?;
        }
        let targets: Vec<TotalsKey> = if all {
            // Closed periods (within retention) are rewritten too, from their final totals on disk.
            let mut keys: Vec<TotalsKey> = self.committed.totals.keys();
            if let Some(finals) = &self.committed.finals {
                let on_disk = finals.keys().map_err(store_failure)?;
                keys.extend(on_disk.into_iter().map(|(a, p)| (Arc::from(a), Arc::from(p))));
                keys.sort_unstable();
                keys.dedup();
            }
            keys
        } else {
            dirty.iter().cloned().collect()
        };
        let updated_at = Utc::now().to_rfc3339();
        // Paced: the chunks of a large flush are spread over half the interval, so the projection
        // takes a steady share of the CPU instead of a burst that every batch in flight waits out.
        let chunks = targets.len().div_ceil(KEYS_PER_PIPELINE);
        let pace = if paced && chunks > 1 {
            Duration::from_millis(self.config.flush_interval_ms) / 2 / chunks as u32
        } else {
            Duration::ZERO
        };
        let mut scratch = String::new();
        for (n, chunk) in targets.chunks(KEYS_PER_PIPELINE).enumerate() {
            if n > 0 && !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            let mut added = Vec::new();
            {
                // A copy (a handful of pairs): `Committed::get` takes the lock itself.
                let closed_periods = self.committed.closed.read().unwrap_or_else(|e| e.into_inner()).clone();
                for key in chunk {
                    let (account, period) = key;
                    // A damaged account's totals are unknown: not projected (docs/security.md).
                    if self.committed.damaged.contains_key(account) {
                        continue;
                    }
                    let hash = keys.aggregate(account, period);
                    // One open plan (nearly every key): written from the view in place.
                    let written = self.committed.with_single(key, |t| {
                        hset_single(&mut pipe, &hash, t, epoch, &updated_at, &mut scratch);
                    });
                    if written.is_none() {
                        let Some(t) = self.committed.get(account, period).map_err(store_failure)? else {
                            continue;
                        };
                        let closed = |p: &PeriodTotals| closed_periods.contains(&(p.plan.clone(), p.period.clone()));
                        let (values, gone) = fields(&t, closed, epoch, &updated_at);
                        if !gone.is_empty() {
                            pipe.hdel(&hash, &gone).ignore();
                        }
                        pipe.hset_multiple(hash, &values).ignore();
                    }
                    if !self.in_sets.contains(key) {
                        pipe.sadd(keys.accounts(period), account.as_ref()).ignore();
                        added.push(key.clone());
                    }
                }
            }
            pipe.query_async::<()>(&mut conn).await?;
            self.in_sets.extend(added);
        }
        self.announce(&mut conn).await?;
        self.announce_alerts(&mut conn).await?;
        let keys = Keys {
            prefix: &self.config.prefix,
        };
        let committed = &self.committed;
        self.announce_outbox(
            &mut conn,
            &self.adjustments,
            keys.adjustments(),
            &committed.adjustments_pending,
        )
        .await?;
        self.announce_outbox(
            &mut conn,
            &self.balance_alerts,
            keys.alerts(),
            &committed.balance_alerts_pending,
        )
        .await?;
        self.write_balances(&mut conn, all, epoch, &updated_at).await?;
        // Written last: present only when everything before it is. Only where nothing was wiped
        // since this flush began: a changed-keys flush needs `meta` still there, a full rewrite its
        // token (Redis emptied meanwhile would otherwise get `meta` back over lost keys, and no
        // flush would ever rewrite them).
        let written: i64 = redis::cmd("EVAL")
            .arg(META_IF_INTACT)
            .arg(2)
            .arg(keys.meta())
            .arg(keys.resync())
            .arg(epoch)
            .arg(&updated_at)
            .arg(if all { token.as_str() } else { "" })
            .query_async(&mut conn)
            .await?;
        if written == 0 {
            warn!(
                epoch,
                "redis lost data during a flush; the next flush rewrites everything"
            );
            self.resync = true;
            return Ok(targets.len());
        }
        if all {
            info!(keys = targets.len(), epoch, "redis projection resynced from sled");
        }
        self.resync = false;
        Ok(targets.len())
    }
}

impl Exporter {
    /// Writes the balance hash of every account whose wallet changed (all of them on a resync).
    /// A failed write puts the accounts back for the next flush.
    async fn write_balances(
        &self,
        conn: &mut ConnectionManager,
        all: bool,
        epoch: u64,
        updated_at: &str,
    ) -> redis::RedisResult<()> {
        let accounts: Vec<std::sync::Arc<str>> = if all {
            self.committed.balances.iter().map(|e| e.key().clone()).collect()
        } else {
            std::mem::take(&mut *self.committed.balances_dirty.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect()
        };
        let keys = Keys {
            prefix: &self.config.prefix,
        };
        for chunk in accounts.chunks(KEYS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for account in chunk {
                if self.committed.damaged.contains_key(account) {
                    continue;
                }
                let Some(view) = self.committed.balances.get(account).map(|w| w.clone()) else {
                    continue;
                };
                pipe.hset_multiple(keys.balance(account), &balance_fields(&view, epoch, updated_at))
                    .ignore();
            }
            if let Err(e) = pipe.query_async::<()>(conn).await {
                let mut dirty = self.committed.balances_dirty.lock().unwrap_or_else(|e| e.into_inner());
                dirty.extend(accounts.iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A failed read of sled during a flush: the flush fails and is retried (with a resync).
fn store_failure(e: crate::store::StoreError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "reading the data dir", e.to_string()))
}

/// The fields of an `<prefix>:alerts` stream entry (docs/redis.md): the members of the alert's
/// JSON object, in the object's order.
fn alert_fields(a: &SpendAlert) -> Vec<(String, String)> {
    entry_fields(&a.entry().to_string())
}

/// The stream fields of an announcement: its JSON object's members, `meters` kept as JSON.
fn entry_fields(entry: &str) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(entry) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

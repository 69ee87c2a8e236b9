//! The pipeline's time source: the system clock plus an offset only tests move (the injectable
//! clock every time-dependent behaviour is tested on).

use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The time source of the pipeline: the system clock, plus an offset that only tests move (to
/// reach a period's close without waiting for it).
#[derive(Debug, Default)]
pub struct Clock {
    offset_nanos: std::sync::atomic::AtomicI64,
}

impl Clock {
    /// A clock that reads `instant` now and runs on from it at the system clock's pace (tests pin
    /// the daemon to a fixed date, so no assertion depends on the day the suite runs).
    pub fn starting_at(instant: chrono::DateTime<chrono::Utc>) -> Clock {
        let clock = Clock::default();
        clock.advance(instant - chrono::Utc::now());
        clock
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::nanoseconds(self.offset_nanos.load(Ordering::Relaxed))
    }

    /// Moves this clock (tests; a negative duration moves it back).
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_nanos
            .fetch_add(by.num_nanoseconds().unwrap_or(0), Ordering::Relaxed);
    }
}

pub type SharedClock = Arc<Clock>;

//! The time, for everything that expires: tokens, cached certificates and key sets.
//!
//! [`Clock::system`] is the machine's clock. [`Clock::adjustable`] runs with it but can be
//! moved forward with [`Clock::advance`], so a test can let a token expire without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The machine's clock, or one a test moves forward. Cheap to clone; clones share their
/// offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the machine's time; `None` for the system clock.
    offset_ms: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Clock { offset_ms: None }
    }

    /// A clock that starts at the machine's time and moves forward with it, and further
    /// with [`Clock::advance`].
    pub fn adjustable() -> Self {
        Clock {
            offset_ms: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves an adjustable clock (and its clones) forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(offset) = &self.offset_ms {
            let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            offset.fetch_add(ms, Ordering::SeqCst);
        }
    }

    fn offset(&self) -> Duration {
        self.offset_ms.as_ref().map_or(Duration::ZERO, |o| {
            Duration::from_millis(o.load(Ordering::SeqCst))
        })
    }

    /// Now, for measuring intervals.
    pub fn instant(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.offset()).unwrap_or(now)
    }

    /// Now, as wall-clock time.
    pub fn system_time(&self) -> SystemTime {
        let now = SystemTime::now();
        now.checked_add(self.offset()).unwrap_or(now)
    }

    /// Now, as Unix seconds.
    pub fn unix_seconds(&self) -> i64 {
        match self.system_time().duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_with_its_clones() {
        let clock = Clock::adjustable();
        let copy = clock.clone();
        let before = (clock.instant(), clock.unix_seconds());
        copy.advance(Duration::from_secs(3600));
        assert!(clock.instant() >= before.0 + Duration::from_secs(3600));
        assert!(clock.unix_seconds() >= before.1 + 3600);
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        assert!(system.unix_seconds() < before.1 + 3600);
    }
}

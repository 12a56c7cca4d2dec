//! [`Cached`]: one value that expires — an access token, a certificate, a key set — filled by
//! one caller at a time while the others wait for its result.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::clock::Clock;

struct Entry<T> {
    value: Arc<T>,
    /// `None`: fresh until replaced or invalidated.
    fresh_until: Option<Instant>,
}

/// A cached value with its own lifetime, and single-flight filling: when it is missing or
/// stale, one caller runs the fill while the others wait and then use what it got.
pub struct Cached<T> {
    slot: RwLock<Option<Entry<T>>>,
    /// Held while filling; holds the time of the last [`Cached::refill`].
    filling: tokio::sync::Mutex<Option<Instant>>,
    clock: Clock,
}

impl<T> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("fresh", &self.fresh().is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Cached<T> {
    /// An empty cache on `clock`.
    pub fn new(clock: Clock) -> Self {
        Cached {
            slot: RwLock::new(None),
            filling: tokio::sync::Mutex::new(None),
            clock,
        }
    }

    /// The clock the cache runs on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The value, while it is fresh.
    pub fn fresh(&self) -> Option<Arc<T>> {
        let now = self.clock.instant();
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|e| e.fresh_until.is_none_or(|until| now < until))
            .map(|e| e.value.clone())
    }

    fn store(&self, value: T, lifetime: Duration) -> Arc<T> {
        let value = Arc::new(value);
        let entry = Entry {
            value: value.clone(),
            fresh_until: self.clock.instant().checked_add(lifetime),
        };
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(entry);
        value
    }

    /// The fresh value, or one made by `fill`, which gives the value and how long it stays
    /// fresh (`Duration::MAX`: until replaced). One fill at a time; callers that waited for it
    /// use its value.
    ///
    /// # Errors
    /// The fill's error; nothing is cached then.
    pub async fn get_or_fill<E, F, Fut>(&self, fill: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Duration), E>>,
    {
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let _filling = self.filling.lock().await;
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let (value, lifetime) = fill().await?;
        Ok(self.store(value, lifetime))
    }

    /// Fills again before the value's time because `stale` proved out of date (a token naming
    /// a key it does not hold, say). If another caller has replaced `stale` meanwhile, gives
    /// that value; otherwise fills, but at most once per `min_interval`, so made-up input
    /// cannot make every call reach the source: `None` when refused by that limit.
    ///
    /// # Errors
    /// The fill's error; the cached value is kept then.
    pub async fn refill<E, F, Fut>(
        &self,
        stale: &Arc<T>,
        min_interval: Duration,
        fill: F,
    ) -> Result<Option<Arc<T>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Duration), E>>,
    {
        let mut last = self.filling.lock().await;
        if let Some(current) = self.fresh()
            && !Arc::ptr_eq(&current, stale)
        {
            return Ok(Some(current));
        }
        let now = self.clock.instant();
        if last.is_some_and(|t| now.saturating_duration_since(t) < min_interval) {
            return Ok(None);
        }
        *last = Some(now);
        let (value, lifetime) = fill().await?;
        Ok(Some(self.store(value, lifetime)))
    }

    /// Forgets `value` if it is still the cached one (a value refreshed meanwhile is kept).
    pub fn invalidate(&self, value: &Arc<T>) {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|e| Arc::ptr_eq(&e.value, value)) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn counted(n: &AtomicUsize, lifetime: Duration) -> Result<(usize, Duration), String> {
        tokio::task::yield_now().await;
        Ok((n.fetch_add(1, Ordering::SeqCst) + 1, lifetime))
    }

    #[tokio::test]
    async fn one_fill_serves_every_waiter_until_the_value_expires() {
        let clock = Clock::adjustable();
        let cache = Arc::new(Cached::new(clock.clone()));
        let fills = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, fills) = (cache.clone(), fills.clone());
                tokio::spawn(async move {
                    *cache
                        .get_or_fill(|| counted(&fills, Duration::from_secs(60)))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 1);
        }
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(61));
        assert!(cache.fresh().is_none());
        let again = cache
            .get_or_fill(|| counted(&fills, Duration::MAX))
            .await
            .unwrap();
        assert_eq!(*again, 2);
        clock.advance(Duration::from_secs(1_000_000));
        assert_eq!(cache.fresh().as_deref(), Some(&2), "kept until replaced");
    }

    #[tokio::test]
    async fn a_failed_fill_caches_nothing() {
        let cache: Cached<u8> = Cached::new(Clock::system());
        let e = cache
            .get_or_fill(|| async { Err::<(u8, Duration), _>("down") })
            .await
            .unwrap_err();
        assert_eq!(e, "down");
        assert!(cache.fresh().is_none());
    }

    #[tokio::test]
    async fn refills_are_rate_limited_and_reuse_a_newer_value() {
        let clock = Clock::adjustable();
        let cache = Cached::new(clock.clone());
        let fills = AtomicUsize::new(0);
        let minute = Duration::from_secs(60);
        let first = cache.get_or_fill(|| counted(&fills, minute)).await.unwrap();
        let second = cache
            .refill(&first, Duration::from_secs(10), || counted(&fills, minute))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*second, 2);
        // Another caller still holding the first value gets the second, without a fill.
        let reused = cache
            .refill(&first, Duration::from_secs(10), || counted(&fills, minute))
            .await
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&reused, &second));
        // A refill of the current value within the interval is refused.
        let refused = cache
            .refill(&second, Duration::from_secs(10), || counted(&fills, minute))
            .await
            .unwrap();
        assert!(refused.is_none());
        clock.advance(Duration::from_secs(11));
        let third = cache
            .refill(&second, Duration::from_secs(10), || counted(&fills, minute))
            .await
            .unwrap();
        assert_eq!(third.as_deref(), Some(&3));
        assert_eq!(fills.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn invalidation_only_forgets_the_value_it_names() {
        let cache = Cached::new(Clock::system());
        let fills = AtomicUsize::new(0);
        let first = cache
            .get_or_fill(|| counted(&fills, Duration::MAX))
            .await
            .unwrap();
        cache.invalidate(&Arc::new(1));
        assert!(cache.fresh().is_some(), "another value with equal contents");
        cache.invalidate(&first);
        assert!(cache.fresh().is_none());
    }
}

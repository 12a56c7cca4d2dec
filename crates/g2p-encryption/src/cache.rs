//! [`Cached`]: one value that expires — an access token, a certificate, a key set — filled by
//! one caller at a time while the others wait for its result.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::clock::Clock;

struct Entry<T> {
    value: Arc<T>,
    /// `None`: fresh until replaced or invalidated.
    fresh_until: Option<Instant>,
    /// How long the value may still be served through an outage (see
    /// [`Cached::get_or_fill_graced`]); `None`: not at all.
    stale_until: Option<Instant>,
    /// Served through an outage: its source failed when it was last due.
    stale: bool,
}

/// How [`Cached::get_or_fill_graced`] served a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Fresh from the cache or the source.
    Fresh,
    /// Past its time, because the source is out; `first` for the first value served so
    /// since the source last answered.
    Stale {
        /// The first stale value of this outage.
        first: bool,
    },
}

/// A cached value with its own lifetime, and single-flight filling: when it is missing or
/// stale, one caller runs the fill while the others wait and then use what it got.
pub struct Cached<T> {
    slot: RwLock<Option<Entry<T>>>,
    /// Held while filling; holds the time of the last [`Cached::refill`].
    filling: tokio::sync::Mutex<Option<Instant>>,
    /// A stale value was served since the source last answered.
    in_outage: std::sync::atomic::AtomicBool,
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
            in_outage: std::sync::atomic::AtomicBool::new(false),
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
        self.store_graced(value, lifetime, None)
    }

    fn store_graced(&self, value: T, lifetime: Duration, stale_for: Option<Duration>) -> Arc<T> {
        let value = Arc::new(value);
        let now = self.clock.instant();
        let entry = Entry {
            value: value.clone(),
            fresh_until: now.checked_add(lifetime),
            stale_until: stale_for.and_then(|d| now.checked_add(d)),
            stale: false,
        };
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(entry);
        self.in_outage
            .store(false, std::sync::atomic::Ordering::Relaxed);
        value
    }

    /// The value while it is fresh, and whether it is being served through an outage.
    fn fresh_served(&self) -> Option<(Arc<T>, bool)> {
        let now = self.clock.instant();
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|e| e.fresh_until.is_none_or(|until| now < until))
            .map(|e| (e.value.clone(), e.stale))
    }

    /// Like [`Cached::get_or_fill`], for a value that may outlive an outage of its source.
    /// `fill` gives the value, how long it is fresh, and how long it may be used at all (a
    /// certificate until its `notAfter`, say). When a fill fails with an error `outage`
    /// accepts, the last value is served stale if it is still within `grace` past its
    /// freshness and within its own limit; the source is then asked again after `recheck`,
    /// not on every call.
    ///
    /// # Errors
    /// The fill's error when no value can be served.
    pub async fn get_or_fill_graced<E, F, Fut>(
        &self,
        (grace, recheck): (Duration, Duration),
        outage: impl Fn(&E) -> bool,
        fill: F,
    ) -> Result<(Arc<T>, Served), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Duration, Duration), E>>,
    {
        let served = |(value, stale): (Arc<T>, bool)| {
            (
                value,
                if stale {
                    Served::Stale { first: false }
                } else {
                    Served::Fresh
                },
            )
        };
        if let Some(hit) = self.fresh_served() {
            return Ok(served(hit));
        }
        let _filling = self.filling.lock().await;
        if let Some(hit) = self.fresh_served() {
            return Ok(served(hit));
        }
        let error = match fill().await {
            Ok((value, fresh_for, usable_for)) => {
                let stale_for = fresh_for.saturating_add(grace).min(usable_for);
                let value = self.store_graced(value, fresh_for.min(usable_for), Some(stale_for));
                return Ok((value, Served::Fresh));
            }
            Err(e) => e,
        };
        if !outage(&error) {
            return Err(error);
        }
        let now = self.clock.instant();
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(entry) if entry.stale_until.is_some_and(|until| now < until) => {
                let until = entry.stale_until.unwrap_or(now);
                entry.fresh_until = Some(now.checked_add(recheck).unwrap_or(until).min(until));
                entry.stale = true;
                let first = !self
                    .in_outage
                    .swap(true, std::sync::atomic::Ordering::Relaxed);
                Ok((entry.value.clone(), Served::Stale { first }))
            }
            _ => Err(error),
        }
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
        // A value served through outages keeps that grace when refilled early.
        let grace = {
            let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
            slot.as_ref().and_then(|e| {
                let (fresh, stale) = (e.fresh_until?, e.stale_until?);
                Some(stale.saturating_duration_since(fresh))
            })
        };
        let stale_for = grace.map(|g| lifetime.saturating_add(g));
        Ok(Some(self.store_graced(value, lifetime, stale_for)))
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
    async fn a_value_is_served_stale_through_an_outage_within_its_grace_and_limit() {
        let clock = Clock::adjustable();
        let cache: Cached<u8> = Cached::new(clock.clone());
        let minute = Duration::from_secs(60);
        let policy = (Duration::from_secs(600), Duration::from_secs(5));
        let is_outage = |e: &&str| *e == "down";
        let fills = AtomicUsize::new(0);
        let down = || async {
            fills.fetch_add(1, Ordering::SeqCst);
            Err::<(u8, Duration, Duration), _>("down")
        };
        // Fresh for a minute, usable for fifteen.
        let (v, served) = cache
            .get_or_fill_graced(policy, is_outage, || async {
                Ok::<_, &str>((7, minute, Duration::from_secs(900)))
            })
            .await
            .unwrap();
        assert_eq!((*v, served), (7, Served::Fresh));
        clock.advance(Duration::from_secs(61));
        let (v, served) = cache
            .get_or_fill_graced(policy, is_outage, down)
            .await
            .unwrap();
        assert_eq!((*v, served), (7, Served::Stale { first: true }));
        // Within the recheck interval the source is left alone; still stale.
        let (_, served) = cache
            .get_or_fill_graced(policy, is_outage, down)
            .await
            .unwrap();
        assert_eq!(served, Served::Stale { first: false });
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        // Another kind of failure is not an outage: no stale value for it.
        clock.advance(Duration::from_secs(6));
        let refused = cache
            .get_or_fill_graced(policy, is_outage, || async {
                Err::<(u8, Duration, Duration), _>("refused")
            })
            .await;
        assert_eq!(refused.unwrap_err(), "refused");
        // The grace (10 min past the first minute) ends before the value's own limit.
        clock.advance(Duration::from_secs(600));
        assert_eq!(
            cache
                .get_or_fill_graced(policy, is_outage, down)
                .await
                .unwrap_err(),
            "down"
        );
        // A value whose limit comes first is not served past it.
        let short: Cached<u8> = Cached::new(clock.clone());
        short
            .get_or_fill_graced(policy, is_outage, || async {
                Ok::<_, &str>((8, minute, Duration::from_secs(90)))
            })
            .await
            .unwrap();
        clock.advance(Duration::from_secs(91));
        assert!(
            short
                .get_or_fill_graced(policy, is_outage, down)
                .await
                .is_err()
        );
        // The source answers again: fresh, and the next outage warns anew.
        let (v, served) = cache
            .get_or_fill_graced(policy, is_outage, || async {
                Ok::<_, &str>((9, minute, Duration::from_secs(900)))
            })
            .await
            .unwrap();
        assert_eq!((*v, served), (9, Served::Fresh));
        clock.advance(Duration::from_secs(61));
        let (_, served) = cache
            .get_or_fill_graced(policy, is_outage, down)
            .await
            .unwrap();
        assert_eq!(served, Served::Stale { first: true });
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

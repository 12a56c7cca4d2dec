//! One call path to a remote service (the Keymanager API, or its token endpoint):
//! `caller → deadline → circuit breaker → bulkhead → attempt → retry with backoff`.
//!
//! * **Retries** only for failures [`KeymanagerError::retryable`] says are safe to repeat,
//!   after a delay drawn uniformly from zero to an exponential ceiling (full jitter; backon
//!   gives the ceilings) or the `Retry-After` the service asked for, whichever is longer;
//!   bounded by `max_attempts` and by the caller's deadline ([`g2p_encryption::deadline`]): no
//!   attempt starts that cannot finish before it.
//! * **The circuit breaker** counts attempts that failed because the service is out
//!   ([`KeymanagerError::is_outage`]); after `threshold` in a row, calls fail fast with
//!   [`KeymanagerError::CircuitOpen`] for `cooldown`, then one call probes: its success closes
//!   the circuit, its failure opens it again. Every transition is logged and exported as
//!   `g2p_kms_breaker_state{target, url}` (0 closed, 1 half-open, 2 open).
//! * **The bulkhead** bounds the attempts in flight to one service; time spent waiting for a
//!   slot counts against the caller's deadline.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use g2p_encryption::deadline;

use crate::error::KeymanagerError;

/// Shortest time worth starting an attempt with: an attempt with less left before the
/// caller's deadline is not started.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// How failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (1: no retry).
    pub max_attempts: u32,
    /// Ceiling of the first delay; each further ceiling doubles.
    pub base: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

/// When the circuit opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Attempts failed in a row because the service is out that open the circuit.
    pub threshold: u32,
    /// How long calls fail fast before one probe.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 10,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// The provider's resilience, validated from its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resilience {
    /// Retries of failed calls.
    pub retry: RetryPolicy,
    /// The circuit breakers (one for the Keymanager API, one for its token endpoint).
    pub breaker: BreakerPolicy,
    /// Most requests in flight to the Keymanager API.
    pub max_in_flight: usize,
    /// How long past their time the encryption certificate and the key sets are served
    /// when the Keymanager is out (never past a certificate's `notAfter`).
    pub outage_grace: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            max_in_flight: 64,
            outage_grace: Duration::from_secs(3600),
        }
    }
}

/// The resilience settings as written (`KEYMANAGER_MAX_ATTEMPTS`, ...), times in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ResilienceSettings {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) retry_base: Option<f64>,
    pub(crate) retry_max: Option<f64>,
    pub(crate) breaker_threshold: Option<u32>,
    pub(crate) breaker_cooldown: Option<f64>,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) outage_grace: Option<u64>,
}

fn seconds(name: &str, value: Option<f64>, default: Duration) -> Result<Duration, KeymanagerError> {
    match value {
        None => Ok(default),
        Some(v) => Duration::try_from_secs_f64(v)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
            .ok_or_else(|| {
                KeymanagerError::Configuration(format!(
                    "{name} must be a positive number of seconds up to 3600, got {v}"
                ))
            }),
    }
}

impl ResilienceSettings {
    /// Applies defaults and checks ranges, naming the first setting that is wrong.
    pub(crate) fn build(self) -> Result<Resilience, KeymanagerError> {
        let d = Resilience::default();
        let max_attempts = self.max_attempts.unwrap_or(d.retry.max_attempts);
        if !(1..=20).contains(&max_attempts) {
            return Err(KeymanagerError::Configuration(format!(
                "max_attempts must be between 1 and 20, got {max_attempts}"
            )));
        }
        let base = seconds("retry_base", self.retry_base, d.retry.base)?;
        let max = seconds("retry_max", self.retry_max, d.retry.max)?;
        if max < base {
            return Err(KeymanagerError::Configuration(format!(
                "retry_max ({} s) must not be below retry_base ({} s)",
                max.as_secs_f64(),
                base.as_secs_f64()
            )));
        }
        let threshold = self.breaker_threshold.unwrap_or(d.breaker.threshold);
        if threshold == 0 {
            return Err(KeymanagerError::Configuration(
                "breaker_threshold must be at least 1".into(),
            ));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(d.max_in_flight);
        if max_in_flight == 0 {
            return Err(KeymanagerError::Configuration(
                "max_in_flight must be at least 1".into(),
            ));
        }
        Ok(Resilience {
            retry: RetryPolicy {
                max_attempts,
                base,
                max,
            },
            breaker: BreakerPolicy {
                threshold,
                cooldown: seconds(
                    "breaker_cooldown",
                    self.breaker_cooldown,
                    d.breaker.cooldown,
                )?,
            },
            max_in_flight,
            outage_grace: self
                .outage_grace
                .map_or(d.outage_grace, Duration::from_secs),
        })
    }
}

/// Counters of one provider's calls, for `bench` and for tests.
#[derive(Debug, Default)]
pub struct CallCounters {
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    token_fetches: AtomicU64,
    stale_served: AtomicU64,
}

/// A snapshot of [`CallCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls to the Keymanager API.
    pub calls: u64,
    /// HTTP attempts to the Keymanager API and the token endpoint.
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Calls refused without an attempt: circuit open.
    pub rejected: u64,
    /// Requests to the token endpoint.
    pub token_fetches: u64,
    /// Certificates or key sets served past their time through an outage.
    pub stale_served: u64,
}

impl CallCounters {
    /// The counts so far.
    pub fn snapshot(&self) -> CallStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallStats {
            calls: get(&self.calls),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            rejected: get(&self.rejected),
            token_fetches: get(&self.token_fetches),
            stale_served: get(&self.stale_served),
        }
    }

    pub(crate) fn token_fetch(&self) {
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stale_served(&self) {
        self.stale_served.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// What an attempt's failure means to the guard.
#[derive(Debug)]
pub(crate) enum Failed {
    /// A failure of the guarded service: counted, perhaps retried.
    Service(KeymanagerError),
    /// A failure of something else the attempt needed (the token, for a Keymanager call):
    /// returned as it is, neither counted nor retried here (it had its own guard).
    Elsewhere(KeymanagerError),
}

impl From<KeymanagerError> for Failed {
    fn from(e: KeymanagerError) -> Self {
        Failed::Service(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, failures: u32 },
    HalfOpen,
}

impl State {
    fn gauge(self) -> f64 {
        match self {
            State::Closed { .. } => 0.0,
            State::HalfOpen => 1.0,
            State::Open { .. } => 2.0,
        }
    }
}

/// The circuit breaker of one service.
#[derive(Debug)]
struct Breaker {
    target: &'static str,
    url: String,
    policy: BreakerPolicy,
    state: Mutex<State>,
}

impl Breaker {
    fn new(target: &'static str, url: String, policy: BreakerPolicy) -> Self {
        metrics::gauge!("g2p_kms_breaker_state", "target" => target, "url" => url.clone()).set(0.0);
        Breaker {
            target,
            url,
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: &mut State, next: State) {
        let same_kind = std::mem::discriminant(state) == std::mem::discriminant(&next);
        *state = next;
        if same_kind {
            return;
        }
        metrics::gauge!("g2p_kms_breaker_state", "target" => self.target, "url" => self.url.clone())
            .set(next.gauge());
        match next {
            State::Open { failures, .. } => tracing::warn!(
                target_service = self.target,
                url = %self.url,
                failures,
                cooldown_ms = self.policy.cooldown.as_millis() as u64,
                "circuit open: calls fail fast until one probe after the cool-down"
            ),
            State::HalfOpen => tracing::info!(
                target_service = self.target,
                url = %self.url,
                "circuit half-open: one probe decides"
            ),
            State::Closed { .. } => tracing::info!(
                target_service = self.target,
                url = %self.url,
                "circuit closed: the service answers again"
            ),
        }
    }

    /// Lets an attempt through, or refuses it while the circuit is open (or while another
    /// call is the probe).
    fn admit(&self) -> Result<(), KeymanagerError> {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until, failures } => {
                let now = Instant::now();
                if now >= until {
                    self.set(&mut state, State::HalfOpen);
                    Ok(())
                } else {
                    Err(KeymanagerError::CircuitOpen {
                        url: self.url.clone(),
                        failures,
                        retry_in: until - now,
                    })
                }
            }
            State::HalfOpen => Err(KeymanagerError::CircuitOpen {
                url: self.url.clone(),
                failures: self.policy.threshold,
                retry_in: Duration::ZERO,
            }),
        }
    }

    /// Records an attempt: `Some(true)` the service answered, `Some(false)` it is out,
    /// `None` neither (an answer that says "slow down", or an attempt abandoned).
    fn record(&self, answered: Option<bool>) {
        let mut state = self.state();
        let next = match (*state, answered) {
            // A probe that ended without a verdict hands the probe to the next call.
            (State::HalfOpen, None) => State::Open {
                until: Instant::now(),
                failures: self.policy.threshold,
            },
            (_, None) => return,
            (State::Closed { .. } | State::HalfOpen, Some(true)) => State::Closed { failures: 0 },
            (State::Closed { failures }, Some(false)) => {
                let failures = failures + 1;
                if failures >= self.policy.threshold {
                    State::Open {
                        until: Instant::now() + self.policy.cooldown,
                        failures,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen, Some(false)) => State::Open {
                until: Instant::now() + self.policy.cooldown,
                failures: self.policy.threshold,
            },
            // Answers of attempts admitted before the circuit opened change nothing.
            (State::Open { .. }, Some(_)) => return,
        };
        self.set(&mut state, next);
    }

    /// The circuit's state, for readiness: `None` when closed, else why calls fail fast.
    fn open_reason(&self) -> Option<KeymanagerError> {
        match *self.state() {
            State::Closed { .. } => None,
            State::Open { until, failures } => Some(KeymanagerError::CircuitOpen {
                url: self.url.clone(),
                failures,
                retry_in: until.saturating_duration_since(Instant::now()),
            }),
            State::HalfOpen => None,
        }
    }
}

/// The guard of one service: breaker, bulkhead, retries.
#[derive(Debug)]
pub(crate) struct Guard {
    target: &'static str,
    retry: RetryPolicy,
    breaker: Breaker,
    slots: Option<tokio::sync::Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    counters: std::sync::Arc<CallCounters>,
}

/// A guard's settings.
#[derive(Debug, Clone)]
pub(crate) struct GuardSettings {
    pub(crate) target: &'static str,
    pub(crate) url: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: BreakerPolicy,
    /// `None`: no bulkhead.
    pub(crate) max_in_flight: Option<usize>,
    /// Longest single attempt.
    pub(crate) timeout: Duration,
}

/// A delay drawn uniformly from `[0, ceiling]`.
fn full_jitter(ceiling: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return ceiling / 2;
    }
    let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(fraction)
}

impl Guard {
    pub(crate) fn new(settings: GuardSettings, counters: std::sync::Arc<CallCounters>) -> Self {
        let max_in_flight = settings.max_in_flight.unwrap_or(0);
        Guard {
            target: settings.target,
            retry: settings.retry,
            breaker: Breaker::new(settings.target, settings.url, settings.breaker),
            slots: settings
                .max_in_flight
                .map(|n| tokio::sync::Semaphore::new(n.max(1))),
            max_in_flight,
            timeout: settings.timeout,
            counters,
        }
    }

    /// Why calls fail fast now, if they do.
    pub(crate) fn open_reason(&self) -> Option<KeymanagerError> {
        self.breaker.open_reason()
    }

    /// The time an attempt may take: the configured timeout, cut to what is left before
    /// the caller's deadline; `None` when too little is left.
    fn attempt_time(&self) -> Option<Duration> {
        match deadline::remaining() {
            None => Some(self.timeout),
            Some(left) if left < MIN_ATTEMPT_TIME => None,
            Some(left) => Some(self.timeout.min(left)),
        }
    }

    fn out_of_time(url: &str, attempts: u32, last: Option<KeymanagerError>) -> KeymanagerError {
        let what = match last {
            None => "the caller's deadline passed before the request could be sent".to_string(),
            Some(e) => format!(
                "the caller's deadline left no time to retry after {attempts} attempt{} (last: {e})",
                if attempts == 1 { "" } else { "s" }
            ),
        };
        KeymanagerError::Deadline {
            url: url.into(),
            what,
        }
    }

    /// Lets an attempt start: the circuit admits it, the caller's deadline leaves time for
    /// it, and a request slot is free (waiting for one counts against the deadline). Gives
    /// the slot and the time the attempt may take.
    async fn admit(
        &self,
        url: &str,
        attempts: u32,
    ) -> Result<(Option<tokio::sync::SemaphorePermit<'_>>, Duration), KeymanagerError> {
        if let Err(open) = self.breaker.admit() {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(open);
        }
        let no_time = || {
            self.breaker.record(None);
            Self::out_of_time(url, attempts, None)
        };
        let time = self.attempt_time().ok_or_else(no_time)?;
        let started = Instant::now();
        let slot = match &self.slots {
            None => None,
            Some(slots) => match tokio::time::timeout(time, slots.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    self.breaker.record(None);
                    return Err(KeymanagerError::Deadline {
                        url: url.into(),
                        what: format!(
                            "no free request slot within {} ms ({} requests in flight to this {})",
                            time.as_millis(),
                            self.max_in_flight,
                            self.target
                        ),
                    });
                }
            },
        };
        if deadline::current().is_none() {
            return Ok((slot, time));
        }
        let time = time.saturating_sub(started.elapsed());
        if time < MIN_ATTEMPT_TIME {
            return Err(no_time());
        }
        Ok((slot, time))
    }

    /// After a failed attempt: how long to wait before the next one, or the error to give
    /// the caller (not worth repeating, attempts used up, or no time left).
    fn next_try(
        &self,
        (endpoint, url): (&'static str, &str),
        attempts: u32,
        ceiling: Option<Duration>,
        error: KeymanagerError,
    ) -> Result<Duration, KeymanagerError> {
        if !error.retryable() {
            return Err(error);
        }
        let Some(ceiling) = ceiling else {
            return Err(if attempts > 1 {
                KeymanagerError::GaveUp {
                    attempts,
                    last: Box::new(error),
                }
            } else {
                error
            });
        };
        let wait = full_jitter(ceiling).max(error.retry_after().unwrap_or_default());
        if deadline::remaining().is_some_and(|left| left < wait + MIN_ATTEMPT_TIME) {
            return Err(Self::out_of_time(url, attempts, Some(error)));
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "g2p_kms_retries_total",
            "endpoint" => endpoint,
            "reason" => error.label()
        )
        .increment(1);
        tracing::debug!(
            endpoint,
            attempt = attempts,
            wait_ms = wait.as_millis() as u64,
            error = %error,
            "retrying"
        );
        Ok(wait)
    }

    /// Runs `attempt` (given the time it may take) under the guard; `retry`: whether the
    /// call may be repeated at all (administrative calls may not).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        endpoint: &'static str,
        url: &str,
        retry: bool,
        mut attempt: F,
    ) -> Result<T, KeymanagerError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        let max_retries = if retry {
            self.retry.max_attempts.saturating_sub(1)
        } else {
            0
        };
        let mut ceilings = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry.base)
            .with_max_delay(self.retry.max)
            .with_max_times(max_retries as usize)
            .build();
        let mut attempts = 0u32;
        loop {
            let (slot, time) = self.admit(url, attempts).await?;
            attempts += 1;
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let error = match attempt(time).await {
                Ok(value) => {
                    self.breaker.record(Some(true));
                    return Ok(value);
                }
                Err(Failed::Elsewhere(e)) => {
                    self.breaker.record(None);
                    return Err(e);
                }
                Err(Failed::Service(e)) => e,
            };
            self.breaker.record(if error.is_outage() {
                Some(false)
            } else if error.retryable() {
                None
            } else {
                Some(true)
            });
            drop(slot);
            let wait = self.next_try((endpoint, url), attempts, ceilings.next(), error)?;
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    fn guard(retry: RetryPolicy, breaker: BreakerPolicy, in_flight: Option<usize>) -> Guard {
        Guard::new(
            GuardSettings {
                target: "keymanager",
                url: "http://km/v1/keymanager".into(),
                retry,
                breaker,
                max_in_flight: in_flight,
                timeout: Duration::from_secs(10),
            },
            Arc::new(CallCounters::default()),
        )
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(4),
        }
    }

    fn status(code: u16) -> KeymanagerError {
        KeymanagerError::HttpStatus {
            url: "http://km/v1/keymanager/decrypt".into(),
            status: code,
            code: None,
            retry_after: None,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_one_succeeds() {
        let g = guard(fast(), BreakerPolicy::default(), None);
        let calls = AtomicU32::new(0);
        let value = g
            .run("decrypt", "u", true, |_| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Failed::Service(status(503))),
                    1 => Err(Failed::Service(KeymanagerError::Transport {
                        url: "u".into(),
                        reason: "connection reset by peer".into(),
                    })),
                    _ => Ok(42),
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 42);
        let stats = g.counters.snapshot();
        assert_eq!((stats.attempts, stats.retries), (3, 2));
    }

    #[tokio::test]
    async fn client_errors_are_never_retried_and_administration_never_is() {
        let g = guard(fast(), BreakerPolicy::default(), None);
        for error in [
            status(400),
            status(500),
            KeymanagerError::Keymanager {
                code: "KER-FSE-004".into(),
                message: "Tag mismatch".into(),
            },
        ] {
            let calls = AtomicU32::new(0);
            let label = error.label();
            let mut error = Some(error);
            let e = g
                .run("decrypt", "u", true, |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let e = error.take().unwrap();
                    async move { Err::<(), _>(Failed::Service(e)) }
                })
                .await
                .unwrap_err();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{label}");
            assert_eq!(e.label(), label);
        }
        let calls = AtomicU32::new(0);
        g.run("generateMasterKey", "u", false, |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Failed::Service(status(503)))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_last_error_says_how_many_attempts_were_made() {
        let g = guard(fast(), BreakerPolicy::default(), None);
        let e = g
            .run("decrypt", "u", true, |_| async {
                Err::<(), _>(Failed::Service(status(503)))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e, KeymanagerError::GaveUp { attempts: 4, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("HTTP 503 (gave up after 4 attempts)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_no_retry_outlives_the_deadline() {
        let g = guard(fast(), BreakerPolicy::default(), None);
        let asked = KeymanagerError::HttpStatus {
            url: "u".into(),
            status: 429,
            code: None,
            retry_after: Some(Duration::from_millis(120)),
        };
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let mut first = Some(asked);
        g.run("decrypt", "u", true, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            let e = first.take();
            async move {
                match e {
                    Some(e) => Err(Failed::Service(e)),
                    None => Ok(()),
                }
            }
        })
        .await
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(120));
        // A Retry-After beyond the caller's deadline ends the call now, saying why.
        let long = KeymanagerError::HttpStatus {
            url: "u".into(),
            status: 503,
            code: None,
            retry_after: Some(Duration::from_secs(30)),
        };
        let started = Instant::now();
        let mut once = Some(long);
        let e = deadline::within(Duration::from_secs(2), async {
            g.run("decrypt", "u", true, |_| {
                let e = once.take().unwrap_or_else(|| status(503));
                async move { Err::<(), _>(Failed::Service(e)) }
            })
            .await
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(e, KeymanagerError::Deadline { .. }), "{e}");
        assert!(e.to_string().contains("after 1 attempt (last:"), "{e}");
        // Each attempt gets no more than what is left.
        let e = deadline::within(Duration::from_millis(300), async {
            g.run("decrypt", "u", true, |time| async move {
                assert!(time <= Duration::from_millis(300));
                Err::<(), _>(Failed::Service(status(504)))
            })
            .await
        })
        .await;
        assert!(e.is_err());
    }

    #[tokio::test]
    async fn the_circuit_opens_fails_fast_and_one_probe_closes_it() {
        let policy = BreakerPolicy {
            threshold: 3,
            cooldown: Duration::from_millis(200),
        };
        let single = RetryPolicy {
            max_attempts: 1,
            ..fast()
        };
        let g = guard(single, policy, None);
        let down = || async { Err::<(), _>(Failed::Service(status(503))) };
        for _ in 0..3 {
            assert!(matches!(
                g.run("decrypt", "u", true, |_| down()).await,
                Err(KeymanagerError::HttpStatus { .. })
            ));
        }
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let e = g
            .run("decrypt", "u", true, |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e, KeymanagerError::CircuitOpen { failures: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("kms_unavailable: "), "{e}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "an attempt went through");
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(g.open_reason().is_some());
        // After the cool-down, a failed probe opens it again...
        tokio::time::sleep(Duration::from_millis(210)).await;
        assert!(g.run("decrypt", "u", true, |_| down()).await.is_err());
        assert!(matches!(
            g.run("decrypt", "u", true, |_| async { Ok(()) }).await,
            Err(KeymanagerError::CircuitOpen { .. })
        ));
        // ...and a successful one closes it.
        tokio::time::sleep(Duration::from_millis(210)).await;
        g.run("decrypt", "u", true, |_| async { Ok(()) })
            .await
            .unwrap();
        assert!(g.open_reason().is_none());
        g.run("decrypt", "u", true, |_| async { Ok(()) })
            .await
            .unwrap();
        // Answers that are the caller's fault (a KER error) prove the service is up.
        for _ in 0..2 {
            let _ = g.run("decrypt", "u", true, |_| down()).await;
        }
        let _ = g
            .run("decrypt", "u", true, |_| async {
                Err::<(), _>(Failed::Service(status(400)))
            })
            .await;
        for _ in 0..2 {
            let _ = g.run("decrypt", "u", true, |_| down()).await;
        }
        assert!(g.open_reason().is_none(), "failures were not in a row");
    }

    #[tokio::test]
    async fn the_bulkhead_bounds_attempts_in_flight_and_waiting_counts_against_the_deadline() {
        let g = Arc::new(guard(fast(), BreakerPolicy::default(), Some(2)));
        let in_flight = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (g, in_flight, most) = (g.clone(), in_flight.clone(), most.clone());
                tokio::spawn(async move {
                    g.run("decrypt", "u", true, |_| {
                        let (in_flight, most) = (in_flight.clone(), most.clone());
                        async move {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Failed>(())
                        }
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // Both slots held: a caller with 100 ms left gives up waiting, saying why.
        let held = g.clone();
        let blockers: Vec<_> = (0..2)
            .map(|_| {
                let g = held.clone();
                tokio::spawn(async move {
                    g.run("decrypt", "u", true, |_| async {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Ok::<_, Failed>(())
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let e = deadline::within(Duration::from_millis(100), async {
            g.run("decrypt", "u", true, |_| async { Ok::<_, Failed>(()) })
                .await
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(300));
        assert!(e.to_string().contains("no free request slot"), "{e}");
        for b in blockers {
            b.await.unwrap().unwrap();
        }
    }
}

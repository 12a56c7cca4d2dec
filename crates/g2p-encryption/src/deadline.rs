//! The caller's deadline, carried with the task: a gateway request's remaining time, or the
//! command line's `--timeout`, bounds what a provider does for it (waiting for a connection
//! slot, retrying) without a parameter on every call.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::{Duration, Instant};
//! use g2p_encryption::deadline;
//!
//! assert!(deadline::remaining().is_none());
//! let in_time = deadline::within(Duration::from_secs(5), async {
//!     deadline::remaining().unwrap() <= Duration::from_secs(5)
//! })
//! .await;
//! assert!(in_time);
//! # }
//! ```

use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `future` with the deadline `at`, or the deadline already in force if it is earlier
/// (an inner scope never extends an outer one).
pub async fn scope<F: Future>(at: Instant, future: F) -> F::Output {
    let at = current().map_or(at, |outer| outer.min(at));
    DEADLINE.scope(at, future).await
}

/// Runs `future` with a deadline `budget` from now (see [`scope`]).
pub async fn within<F: Future>(budget: Duration, future: F) -> F::Output {
    match Instant::now().checked_add(budget) {
        Some(at) => scope(at, future).await,
        None => future.await,
    }
}

/// The deadline of the current task, if one is set.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|at| *at).ok()
}

/// The time left before the current task's deadline (zero once passed); `None` without one.
pub fn remaining() -> Option<Duration> {
    current().map(|at| at.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inner_scope_never_extends_an_outer_one() {
        let outer = Instant::now() + Duration::from_secs(1);
        scope(outer, async move {
            assert_eq!(current(), Some(outer));
            within(Duration::from_secs(60), async move {
                assert_eq!(current(), Some(outer));
            })
            .await;
            within(Duration::from_millis(10), async move {
                assert!(current().unwrap() < outer);
            })
            .await;
        })
        .await;
        assert_eq!(current(), None);
    }

    #[tokio::test]
    async fn remaining_is_zero_once_passed() {
        scope(Instant::now(), async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert_eq!(remaining(), Some(Duration::ZERO));
        })
        .await;
    }
}

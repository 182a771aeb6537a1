//! The engine's one retry policy for one-shot API calls (guard, Lease, create, delete, doctor,
//! gc): transient errors (429, 5xx, dropped connections) are retried with exponential backoff
//! and full jitter, so processes that failed together do not retry in lockstep, and a server's
//! `Retry-After` (the `retryAfterSeconds` of a 429's Status, which API Priority and Fairness
//! sets alongside the header) is honoured up to a cap. A transient error is never turned into a
//! result: either the call succeeds within the retries, or the run fails with what the API said.
//!
//! Built on `backon` (already in the tree through kube-runtime's watcher): its builder gives
//! the jittered schedule and its `adjust` hook the per-error delay.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// Attempts, first included: 100 ms doubling (plus up to as much again of jitter) between them,
/// 3 to 6 s in all.
const ATTEMPTS: usize = 6;
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait a `Retry-After` may impose on one retry; a server asking for more fails
/// the call rather than stalling a run for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The backoff schedule: exponential from [`FIRST_DELAY`], with jitter.
pub(crate) fn policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_factor(2.0)
        .with_max_times(ATTEMPTS - 1)
        .with_jitter()
}

/// Run `call` until it succeeds, fails permanently, or the attempts run out.
pub(crate) async fn retry<T, F, Fut>(what: &str, call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    call.retry(policy())
        .when(is_transient)
        .adjust(|err, delay| delay.map(|delay| delay.max(retry_after(err).unwrap_or_default())))
        .notify(|err, delay| {
            tracing::debug!(what, ?delay, error = %err, "transient API error, retrying");
        })
        .await
}

/// Errors worth another try: throttling, server errors, and the connection going away.
pub(crate) fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || (500..600).contains(&status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// How long the server asked the client to wait, capped at [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(err: &kube::Error) -> Option<Duration> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    let seconds = status.details.as_ref()?.retry_after_seconds;
    (seconds > 0).then(|| Duration::from_secs(seconds.into()).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kube::core::response::StatusDetails;
    use tokio::time::Instant;

    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("injected", "InternalError").with_code(code),
        ))
    }

    fn throttled(retry_after_seconds: u32) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("too many requests", "TooManyRequests")
                .with_code(429)
                .with_details(
                    serde_json::from_value::<StatusDetails>(
                        serde_json::json!({"retryAfterSeconds": retry_after_seconds}),
                    )
                    .unwrap(),
                ),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let result = retry("get", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(status(503))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = retry("get", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(403))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_run_out() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = retry("get", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(500))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_before_the_next_attempt() {
        let at = Mutex::new(Vec::new());
        let start = Instant::now();
        let result = retry("get", || async {
            let mut at = at.lock().unwrap();
            at.push(start.elapsed());
            if at.len() == 1 {
                Err(throttled(7))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        let at = at.lock().unwrap();
        assert!(at[1] >= Duration::from_secs(7), "{at:?}");
        assert!(at[1] < Duration::from_secs(8), "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_jittered_so_failed_processes_do_not_retry_in_lockstep() {
        let mut first_delays = std::collections::HashSet::new();
        for _ in 0..8 {
            let at = Mutex::new(Vec::new());
            let start = Instant::now();
            let _: Result<(), _> = retry("get", || async {
                let mut at = at.lock().unwrap();
                at.push(start.elapsed());
                if at.len() == 1 {
                    Err(status(503))
                } else {
                    Ok(())
                }
            })
            .await;
            let delay = at.lock().unwrap()[1];
            assert!(
                delay >= FIRST_DELAY && delay <= FIRST_DELAY * 2,
                "{delay:?}"
            );
            first_delays.insert(delay);
        }
        assert!(first_delays.len() > 1, "{first_delays:?}");
    }
}

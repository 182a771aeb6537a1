//! The engine's one retry policy, built on `backon` (already in the tree through kube-runtime's
//! watcher): exponential backoff with jitter (each pause is its base plus up to as much again,
//! so processes that failed together do not retry in lockstep).
//!
//! Two schedules share it. One-shot API calls (guard, Lease, create, delete, doctor, gc) retry
//! transient errors (429, 5xx, dropped connections) a few times, honouring a server's
//! `Retry-After` (the `retryAfterSeconds` of a 429's Status, which API Priority and Fairness
//! sets alongside the header) up to a cap; a transient error is never turned into a result:
//! either the call succeeds within the retries, or the run fails with what the API said. The
//! log follower's reconnects ([`Reconnects`]) never run out (the follower bounds a refusal by
//! time), start short (a cut stream is the kubelet's routine) and restart whenever a connection
//! delivers output.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// Attempts, first included: 100 ms doubling (plus up to as much again of jitter) between them,
/// 3 to 6 s in all.
const ATTEMPTS: usize = 6;
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait a `Retry-After` may impose on one retry; a server asking for more fails
/// the call rather than stalling a run for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The backoff schedule of one-shot calls: exponential from [`FIRST_DELAY`], with jitter.
fn policy() -> ExponentialBuilder {
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

/// The first pause before reopening a log stream (25 to 50 ms with jitter): a stream the kubelet
/// cut while output flows is reopened at once, or a live run's output stalls.
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(25);
/// The pause after a second connection in a row that ended without failing and delivered nothing
/// (2 to 4 s with jitter; the follower ends it early when the pod watch reports a change). A
/// running container's follow stream stays open however quiet it is: one that ends with nothing
/// new means the container has exited, and the pod watch says so within about a second (the
/// kubelet's PLEG period, then the status update). Waiting for that instead of asking the
/// kubelet again and again keeps a run at two or three log reads; a doubling schedule from
/// 25 ms made five for a one-line run on a loaded v1.36 node.
const RECONNECT_QUIET: Duration = Duration::from_secs(2);
/// The longest base pause after a log connection failed (15 to 30 s with jitter): a kubelet the
/// API server cannot reach, or an API refusing reads, is not hammered.
const RECONNECT_FAILING_MAX: Duration = Duration::from_secs(15);

/// The log follower's schedule: from [`RECONNECT_FIRST_DELAY`], growing by `factor` up to `max`,
/// with jitter, never exhausted.
fn reconnect_policy(factor: f32, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(RECONNECT_FIRST_DELAY)
        .with_factor(factor)
        .with_max_delay(max)
        .without_max_times()
        .with_jitter()
}

/// The pauses between the connections of one log follow: one schedule for connections that
/// ended quietly, one for connections that failed; both start over once output arrives.
#[derive(Debug)]
pub(crate) struct Reconnects {
    quiet: Schedule,
    failing: Schedule,
}

/// A running schedule (backon names the type only through its builder).
type Schedule = <ExponentialBuilder as BackoffBuilder>::Backoff;

impl Default for Reconnects {
    fn default() -> Self {
        Self {
            // One quick reopen, then straight to the quiet pause.
            quiet: reconnect_policy(
                RECONNECT_QUIET.as_secs_f32() / RECONNECT_FIRST_DELAY.as_secs_f32(),
                RECONNECT_QUIET,
            )
            .build(),
            failing: reconnect_policy(2.0, RECONNECT_FAILING_MAX).build(),
        }
    }
}

impl Reconnects {
    /// A connection delivered output: the next pause is short again.
    pub(crate) fn progressed(&mut self) {
        *self = Self::default();
    }

    /// The pause before the next connection, after one that `failed` or ended quietly.
    pub(crate) fn next(&mut self, failed: bool) -> Duration {
        let (schedule, max) = if failed {
            (&mut self.failing, RECONNECT_FAILING_MAX)
        } else {
            (&mut self.quiet, RECONNECT_QUIET)
        };
        // The schedules are built without a limit of times; the cap stands in regardless.
        schedule.next().unwrap_or(max)
    }
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

    /// Every pause of `pauses` lies between `base` and twice it.
    fn within(pauses: &[Duration], bases: &[Duration]) {
        for (pause, base) in pauses.iter().zip(bases) {
            assert!(
                *pause >= *base && *pause <= *base * 2,
                "{pause:?} for {base:?}"
            );
        }
    }

    #[test]
    fn log_reconnects_start_short_and_grow_to_their_caps() {
        let mut reconnects = Reconnects::default();
        let quiet: Vec<Duration> = (0..4).map(|_| reconnects.next(false)).collect();
        let ms = Duration::from_millis;
        within(
            &quiet,
            &[ms(25), RECONNECT_QUIET, RECONNECT_QUIET, RECONNECT_QUIET],
        );
        let failing: Vec<Duration> = (0..12).map(|_| reconnects.next(true)).collect();
        assert!(
            failing[0] <= ms(50),
            "failing has its own schedule: {failing:?}"
        );
        assert!(failing[11] >= RECONNECT_FAILING_MAX, "{failing:?}");
        assert!(
            failing.iter().all(|p| *p <= RECONNECT_FAILING_MAX * 2),
            "{failing:?}"
        );
    }

    #[test]
    fn output_makes_the_next_reconnect_short_again() {
        let mut reconnects = Reconnects::default();
        for _ in 0..10 {
            reconnects.next(true);
            reconnects.next(false);
        }
        reconnects.progressed();
        within(&[reconnects.next(true)], &[RECONNECT_FIRST_DELAY]);
        within(&[reconnects.next(false)], &[RECONNECT_FIRST_DELAY]);
    }
}

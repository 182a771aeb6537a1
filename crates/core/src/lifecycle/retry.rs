//! Retrying one-shot API calls through transient errors (429, 5xx, dropped connections) with
//! exponential backoff. A transient error is never turned into a result: either the call
//! succeeds within the retries, or the run fails with what the API said.

use std::future::Future;
use std::time::Duration;

/// Attempts, first included: 100 ms doubling between them, about 3 s in all.
const ATTEMPTS: u32 = 6;

/// Run `call` until it succeeds, fails permanently, or the attempts run out.
pub(crate) async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if attempt < ATTEMPTS && is_transient(&err) => {
                tracing::debug!(what, attempt, error = %err, "transient API error, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            result => return result,
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("injected", "InternalError").with_code(code),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
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
        let calls = AtomicU32::new(0);
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
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry("get", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(500))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }
}

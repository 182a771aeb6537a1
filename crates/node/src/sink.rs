//! Run events to JavaScript: a threadsafe function per run whose returned promise is awaited,
//! so a slow `onLog` holds back the engine (per-run backpressure) instead of queueing output
//! without bound.

use futures::future::BoxFuture;
use napi::Status;
use napi::bindgen_prelude::{Either, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use opencode_k8s_core::event::{RunEvent, RunSink};

use crate::convert::RunEventJs;

/// The JavaScript `onEvent(event)` callback; it may return a promise. `CalleeHandled = false`:
/// JavaScript gets the event alone, not Node's `(err, value)` pair.
pub(crate) type EventCallback =
    ThreadsafeFunction<RunEventJs, Either<Promise<()>, ()>, RunEventJs, Status, false>;

/// Test hook (read once per run): a run whose id equals this variable panics inside the engine
/// at its first event, so the Node tests can prove a panic becomes a failed run rather than a
/// dead host. Unset in production, where it changes nothing.
const PANIC_RUN_ID_VAR: &str = "OPENCODE_K8S_TEST_PANIC_RUN_ID";

/// Forwards every event of one run to its callback, in order.
pub(crate) struct JsSink {
    callback: EventCallback,
    provoke_panic: bool,
}

impl std::fmt::Debug for JsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsSink").finish_non_exhaustive()
    }
}

impl JsSink {
    pub(crate) fn new(callback: EventCallback, run_id: &str) -> Self {
        let provoke_panic = std::env::var(PANIC_RUN_ID_VAR).is_ok_and(|id| id == run_id);
        Self {
            callback,
            provoke_panic,
        }
    }
}

impl RunSink for JsSink {
    fn emit(&self, event: RunEvent) -> BoxFuture<'_, ()> {
        assert!(
            !self.provoke_panic,
            "panic provoked through {PANIC_RUN_ID_VAR} (test hook)"
        );
        Box::pin(async move {
            // `call_async_catch`: a throwing callback becomes an `Err` here instead of
            // `napi_fatal_exception`, which would end the host process. A failed or rejected
            // callback loses that one event and the run goes on.
            if let Ok(Either::A(promise)) = self.callback.call_async_catch(event.into()).await {
                let _ignored = promise.await;
            }
        })
    }
}

//! Watch streams: chunked JSON lines of `ADDED`/`MODIFIED`/`DELETED` events from a
//! resourceVersion (replayed from the store's bounded history, or an `ERROR` 410 when too old),
//! bookmarks (`allowWatchBookmarks`, and the `k8s.io/initial-events-end` bookmark after
//! `sendInitialEvents`), `timeoutSeconds`, and closing on demand (fault injection).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::cluster::Shared;
use crate::resource::Resource;
use crate::server::Filter;
use crate::status::ApiError;
use crate::store::{Change, ChangeKind, WatchStart};

/// Upstream picks 30–60 minutes when the client gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(resource: Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(&json!({
        "type": "BOOKMARK",
        "object": {"kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": metadata},
    }))
}

fn streaming(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default()
}

/// Opens a watch answered as a streaming body.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    resource: Resource,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a number"
            ))
        })?),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let initial_end = query
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true" || v == "1");
    let (tx, rx) = mpsc::channel(256);
    let (start, live, start_rv) = match shared.store.watch(resource, from) {
        Ok(started) => started,
        // Upstream answers an expired watch with 200 and a single ERROR event.
        Err(gone) => {
            let event = line(&json!({"type": "ERROR", "object": gone.to_status()}));
            let _ = tx.try_send(Ok(event));
            return Ok(streaming(rx));
        }
    };
    let task = WatchTask {
        resource,
        filter,
        tx,
        live,
        last_rv: start_rv,
        bookmarks,
        bookmark_every: shared.options.bookmark_interval,
        closer: shared.faults.watch_closer(),
        deadline: tokio::time::Instant::now() + timeout,
    };
    tokio::spawn(task.run(start, initial_end));
    Ok(streaming(rx))
}

struct WatchTask {
    resource: Resource,
    filter: Filter,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    live: broadcast::Receiver<Arc<Change>>,
    last_rv: u64,
    bookmarks: bool,
    bookmark_every: Duration,
    closer: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
}

impl WatchTask {
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(Ok(bytes)).await.is_ok()
    }

    /// Sends a change if this watch selects it. Like upstream's watch cache, an object that
    /// starts matching the selectors arrives as ADDED and one that stops matching as DELETED.
    async fn deliver(&self, change: &Change) -> bool {
        let now = self.filter.matches(&change.object);
        let before = change.previous.as_ref().map(|p| self.filter.matches(p));
        let retyped =
            |kind: ChangeKind| line(&json!({"type": kind.as_str(), "object": &*change.object}));
        match (before, now) {
            (Some(false), true) => self.send(retyped(ChangeKind::Added)).await,
            (Some(true), false) => self.send(retyped(ChangeKind::Deleted)).await,
            (_, true) => self.send(change.line.clone()).await,
            (_, false) => true,
        }
    }

    async fn run(mut self, start: WatchStart, initial_end: bool) {
        self.closer.borrow_and_update();
        match start {
            WatchStart::Snapshot(objects) => {
                for obj in objects.iter().filter(|o| self.filter.matches(o)) {
                    let event =
                        line(&json!({"type": ChangeKind::Added.as_str(), "object": &**obj}));
                    if !self.send(event).await {
                        return;
                    }
                }
            }
            WatchStart::Replay(changes) => {
                for change in changes {
                    self.last_rv = change.rv;
                    if !self.deliver(&change).await {
                        return;
                    }
                }
            }
        }
        if initial_end && !self.send(bookmark(self.resource, self.last_rv, true)).await {
            return;
        }
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.bookmark_every,
            self.bookmark_every,
        );
        loop {
            // Biased: once a close was asked for, no further event may slip out.
            tokio::select! {
                biased;
                _ = self.closer.changed() => return,
                () = tokio::time::sleep_until(self.deadline) => return,
                () = self.tx.closed() => return,
                _ = ticks.tick(), if self.bookmarks => {
                    if !self.send(bookmark(self.resource, self.last_rv, false)).await {
                        return;
                    }
                }
                received = self.live.recv() => match received {
                    Ok(change) => {
                        if change.rv <= self.last_rv {
                            continue;
                        }
                        self.last_rv = change.rv;
                        if !self.deliver(&change).await {
                            return;
                        }
                    }
                    // A watcher too slow to keep up is closed, as upstream does; the client
                    // re-watches from its last resourceVersion.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

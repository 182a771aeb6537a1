//! The `/_testkit` HTTP control endpoint, for tests that cannot call Rust (the addon's JS tests):
//! the same fault switches and request counters as [`Faults`](crate::Faults) and
//! [`Cluster::requests`](crate::Cluster::requests). JSON bodies, no authentication (the server
//! only listens on 127.0.0.1). See the crate docs for the list of routes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Rule, User};
use crate::cluster::Shared;
use crate::faults::{Script, Verb};
use crate::logs::LogCut;
use crate::server::json_response;

type St = State<Arc<Shared>>;

fn ok() -> Response {
    json_response(200, &json!({"ok": true}))
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/requests", get(requests))
        .route("/requests/reset", post(reset_requests))
        .route("/faults/fail", post(fail))
        .route("/faults/latency", post(latency))
        .route("/faults/cut-logs", post(cut_logs))
        .route("/faults/close-watches", post(close_watches))
        .route("/faults/refuse-connections", post(refuse))
        .route("/faults/forbid", post(forbid))
        .route("/faults/log-error", post(log_error))
        .route("/faults/stream-lag", post(stream_lag))
        .route("/faults/job-finish-delay", post(job_finish_delay))
        .route("/faults/unschedulable", post(unschedulable))
        .route("/faults/image-pull", post(image_pull))
        .route("/faults/script", post(script))
        .route("/faults/clear", post(clear))
        .route("/users", post(add_user))
}

async fn requests(State(s): St) -> Response {
    json_response(200, &s.accounting.snapshot())
}

async fn reset_requests(State(s): St) -> Response {
    s.accounting.reset();
    ok()
}

#[derive(Deserialize)]
struct Fail {
    verb: Verb,
    resource: String,
    #[serde(default = "one")]
    n: u32,
    #[serde(default = "service_unavailable")]
    code: u16,
}

fn one() -> u32 {
    1
}

fn service_unavailable() -> u16 {
    503
}

async fn fail(State(s): St, Json(f): Json<Fail>) -> Response {
    s.faults.fail_next(f.verb, &f.resource, f.n, f.code);
    ok()
}

#[derive(Deserialize)]
struct Millis {
    ms: u64,
}

async fn latency(State(s): St, Json(m): Json<Millis>) -> Response {
    s.faults.latency(Duration::from_millis(m.ms));
    ok()
}

#[derive(Deserialize)]
struct Count {
    #[serde(default = "one")]
    n: u32,
}

async fn log_error(State(s): St, Json(c): Json<Count>) -> Response {
    s.faults.log_error_next(c.n);
    ok()
}

async fn forbid(State(s): St, Json(m): Json<Millis>) -> Response {
    s.faults.forbid_all(Duration::from_millis(m.ms));
    ok()
}

async fn stream_lag(State(s): St, Json(m): Json<Millis>) -> Response {
    s.faults.stream_lag(Duration::from_millis(m.ms));
    ok()
}

async fn job_finish_delay(State(s): St, Json(m): Json<Millis>) -> Response {
    s.faults.job_finish_delay(Duration::from_millis(m.ms));
    ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cut {
    after_lines: Option<u64>,
    every_ms: Option<u64>,
}

async fn cut_logs(State(s): St, Json(c): Json<Cut>) -> Response {
    let cut = match (c.after_lines, c.every_ms) {
        (Some(n), _) => LogCut::AfterLines(n),
        (None, Some(ms)) => LogCut::Every(Duration::from_millis(ms)),
        (None, None) => LogCut::Never,
    };
    s.faults.cut_logs(cut);
    ok()
}

async fn close_watches(State(s): St) -> Response {
    s.faults.close_watches();
    ok()
}

async fn refuse(State(s): St, Json(m): Json<Millis>) -> Response {
    s.faults.refuse_connections(Duration::from_millis(m.ms));
    ok()
}

#[derive(Deserialize)]
struct Pods {
    pods: String,
}

async fn unschedulable(State(s): St, Json(p): Json<Pods>) -> Response {
    s.faults.unschedulable(&p.pods);
    ok()
}

#[derive(Deserialize)]
struct Pattern {
    pattern: String,
}

async fn image_pull(State(s): St, Json(p): Json<Pattern>) -> Response {
    s.faults.image_pull_fail(&p.pattern);
    ok()
}

#[derive(Deserialize)]
struct ScriptBody {
    pods: String,
    #[serde(flatten)]
    script: Script,
}

async fn script(State(s): St, Json(b): Json<ScriptBody>) -> Response {
    s.faults.script(&b.pods, b.script);
    ok()
}

async fn clear(State(s): St) -> Response {
    s.faults.clear();
    ok()
}

#[derive(Deserialize)]
struct RuleBody {
    verbs: Vec<String>,
    #[serde(default)]
    group: String,
    resources: Vec<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct UserBody {
    token: String,
    name: String,
    rules: Vec<RuleBody>,
}

async fn add_user(State(s): St, Json(u): Json<UserBody>) -> Response {
    let rules = u
        .rules
        .into_iter()
        .map(|r| Rule {
            verbs: r.verbs,
            groups: vec![r.group],
            resources: r.resources,
            namespace: r.namespace,
        })
        .collect();
    s.auth.add(
        &u.token,
        User {
            name: u.name,
            rules,
        },
    );
    ok()
}

//! A fake OpenAI-compatible LLM server (TEST DOUBLE) for running the real `opencode` offline.
//!
//! It serves `GET /v1/models` and streaming (SSE) or plain `POST /v1/chat/completions` on
//! 127.0.0.1, the wire format `@ai-sdk/openai-compatible` (OpenCode's provider) accepts, as
//! captured in `fixtures/opencode/`. The behaviour of a request is chosen by its model id
//! ([`Behaviour`]), so one OpenCode config (see [`FakeLlm::opencode_config`]) covers every
//! scenario. Every completion reports token usage ([`ReportedUsage`]) and every model has a price
//! ([`PRICE`]), so a test can check the usage and cost a run reports against what was served.
//!
//! It also knows where `scripts/setup-opencode` puts the real binary ([`find_opencode`]) and
//! how to make it runnable by a pod's unprivileged user ([`stage_opencode`]).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The reply of [`Behaviour::Plain`] (and of the reasoning model after its reasoning).
pub const REPLY: &str = "Hi! I am the fake model.";
/// The reply of [`Behaviour::ToolCall`] once the tool result came back.
pub const TOOL_REPLY: &str = "The tool said hello.";
/// The command [`Behaviour::ToolCall`] asks the `bash` tool to run, and what it prints.
pub const TOOL_COMMAND: &str = "echo hello-from-tool";
/// The reply of [`Behaviour::ToolError`] once the (failed) tool result came back.
pub const TOOL_ERROR_REPLY: &str = "The read failed.";
/// The file [`Behaviour::ToolError`] asks the `read` tool for; it does not exist.
pub const MISSING_FILE: &str = "does-not-exist.txt";
/// The reasoning [`Behaviour::Reasoning`] streams before its reply.
pub const REASONING: &str = "Let me think about this.";
/// The reply of [`Behaviour::Slow`], streamed one word per [`SLOW_WORD_DELAY`].
pub const SLOW_REPLY: &str = "This reply streams slowly, one word at a time, from the fake LLM.";
/// Delay between the words of [`Behaviour::Slow`].
pub const SLOW_WORD_DELAY: Duration = Duration::from_millis(150);
/// The provider's error message for [`Behaviour::Unauthorized`] (HTTP 401).
pub const UNAUTHORIZED_MESSAGE: &str = "Incorrect API key provided: fake";
/// The provider's error message for [`Behaviour::ServerError`] (HTTP 500).
pub const SERVER_ERROR_MESSAGE: &str = "fake upstream exploded";
/// The provider id [`FakeLlm::opencode_config`] declares: models are `fake/<model id>`.
pub const PROVIDER: &str = "fake";

/// What the fake does for a request, chosen by the request's model id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A plain text reply ([`REPLY`]).
    Plain,
    /// A `bash` tool call ([`TOOL_COMMAND`]); once the tool result is back, [`TOOL_REPLY`].
    ToolCall,
    /// A `read` tool call for a missing file (a tool error); then [`TOOL_ERROR_REPLY`].
    ToolError,
    /// Reasoning tokens ([`REASONING`], `reasoning_content` deltas), then [`REPLY`].
    Reasoning,
    /// HTTP 401 with an OpenAI-style error body ([`UNAUTHORIZED_MESSAGE`]).
    Unauthorized,
    /// HTTP 500 with an OpenAI-style error body. OpenCode retries this silently for ~90 s.
    ServerError,
    /// [`SLOW_REPLY`] streamed one word every [`SLOW_WORD_DELAY`].
    Slow,
}

impl Behaviour {
    /// Every behaviour, in the order `/v1/models` lists them.
    pub const ALL: [Behaviour; 7] = [
        Behaviour::Plain,
        Behaviour::ToolCall,
        Behaviour::ToolError,
        Behaviour::Reasoning,
        Behaviour::Unauthorized,
        Behaviour::ServerError,
        Behaviour::Slow,
    ];

    /// The model id that selects this behaviour.
    pub fn model_id(self) -> &'static str {
        match self {
            Behaviour::Plain => "fake-model",
            Behaviour::ToolCall => "fake-tool",
            Behaviour::ToolError => "fake-toolerr",
            Behaviour::Reasoning => "fake-reasoning",
            Behaviour::Unauthorized => "fake-401",
            Behaviour::ServerError => "fake-500",
            Behaviour::Slow => "fake-slow",
        }
    }

    /// The model as OpenCode names it: `fake/<model id>`.
    pub fn model(self) -> String {
        format!("{PROVIDER}/{}", self.model_id())
    }

    /// The behaviour a model id selects; unknown ids behave as [`Behaviour::Plain`].
    pub fn for_model_id(id: &str) -> Behaviour {
        Behaviour::ALL
            .into_iter()
            .find(|b| b.model_id() == id)
            .unwrap_or(Behaviour::Plain)
    }

    fn calls_tool(self) -> bool {
        matches!(self, Behaviour::ToolCall | Behaviour::ToolError)
    }

    fn reply(self) -> &'static str {
        match self {
            Behaviour::ToolCall => TOOL_REPLY,
            Behaviour::ToolError => TOOL_ERROR_REPLY,
            Behaviour::Slow => SLOW_REPLY,
            _ => REPLY,
        }
    }
}

/// Token counts the fake reports for one completion, in OpenAI's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedUsage {
    /// `prompt_tokens`, cached ones included.
    pub prompt_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// `completion_tokens`, reasoning included.
    pub completion_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
}

impl ReportedUsage {
    fn for_behaviour(behaviour: Behaviour) -> ReportedUsage {
        ReportedUsage {
            prompt_tokens: 120,
            cached_tokens: 20,
            completion_tokens: 7,
            reasoning_tokens: if behaviour == Behaviour::Reasoning {
                3
            } else {
                0
            },
        }
    }

    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }

    /// The sum of two reports.
    pub fn plus(self, other: ReportedUsage) -> ReportedUsage {
        ReportedUsage {
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            cached_tokens: self.cached_tokens + other.cached_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            reasoning_tokens: self.reasoning_tokens + other.reasoning_tokens,
        }
    }

    /// What this usage costs at [`PRICE`], in USD: uncached input, cached input and completion
    /// (reasoning included) each at their price per million tokens.
    pub fn cost_usd(self) -> f64 {
        let uncached = self.prompt_tokens.saturating_sub(self.cached_tokens) as f64;
        (uncached * PRICE.input
            + self.cached_tokens as f64 * PRICE.cache_read
            + self.completion_tokens as f64 * PRICE.output)
            / 1_000_000.0
    }
}

/// USD per million tokens, declared for every model in [`FakeLlm::opencode_config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Uncached input.
    pub input: f64,
    /// Output, reasoning included.
    pub output: f64,
    /// Input read from the cache.
    pub cache_read: f64,
}

/// The price of every fake model.
pub const PRICE: Price = Price {
    input: 3.0,
    output: 15.0,
    cache_read: 0.3,
};

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// The request's `model`.
    pub model: String,
    /// OpenCode's title agent asked for a session title (not part of the agent's turn).
    pub title: bool,
    /// The HTTP status answered.
    pub status: u16,
    /// The usage reported, for completions.
    pub usage: Option<ReportedUsage>,
    /// The request body.
    pub body: Value,
}

#[derive(Debug, Default)]
struct Shared {
    served: Mutex<Vec<Served>>,
    ids: AtomicU64,
}

impl Shared {
    fn record(&self, served: Served) {
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(served);
    }
}

/// The running fake LLM; stops when dropped.
#[derive(Debug)]
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl FakeLlm {
    /// Starts the server on 127.0.0.1 and a free port.
    pub async fn start() -> io::Result<FakeLlm> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let cancel = CancellationToken::new();
        let router = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .fallback(not_found)
            .with_state(shared.clone());
        let stop = cancel.clone();
        tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(err) = serve.await {
                tracing::error!(%err, "fake LLM server stopped");
            }
        });
        tracing::info!(%addr, "fake LLM (test double) is serving");
        Ok(FakeLlm {
            addr,
            shared,
            cancel,
        })
    }

    /// The OpenAI base URL: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.shared
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The usage reported to the agent's turns so far: every completion but title requests.
    pub fn reported_usage(&self) -> ReportedUsage {
        self.served()
            .iter()
            .filter(|s| !s.title)
            .filter_map(|s| s.usage)
            .fold(ReportedUsage::default(), ReportedUsage::plus)
    }

    /// An OpenCode config (for `OPENCODE_CONFIG_CONTENT`) whose provider [`PROVIDER`] is this
    /// server, with one model per [`Behaviour`], each priced at [`PRICE`]. It also sets the
    /// small model (session titles) to the plain fake so no other provider is ever asked.
    pub fn opencode_config(&self) -> Value {
        let cost = json!({
            "input": PRICE.input,
            "output": PRICE.output,
            "cache_read": PRICE.cache_read,
            "cache_write": PRICE.input,
        });
        let models: serde_json::Map<String, Value> = Behaviour::ALL
            .into_iter()
            .map(|b| {
                let mut model = json!({"name": format!("Fake {b:?}"), "cost": cost});
                if b.calls_tool() {
                    model["tool_call"] = json!(true);
                }
                if b == Behaviour::Reasoning {
                    model["reasoning"] = json!(true);
                }
                (b.model_id().to_owned(), model)
            })
            .collect();
        json!({
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": false,
            "share": "disabled",
            "model": Behaviour::Plain.model(),
            "small_model": Behaviour::Plain.model(),
            "provider": {
                PROVIDER: {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Fake LLM (test double)",
                    "options": {"baseURL": self.base_url(), "apiKey": "sk-fake"},
                    "models": models,
                }
            }
        })
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn models() -> Response {
    let data: Vec<Value> = Behaviour::ALL
        .into_iter()
        .map(|b| json!({"id": b.model_id(), "object": "model", "created": 0, "owned_by": "fake"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not found",
        "invalid_request_error",
        "not_found",
    )
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code}});
    (status, axum::Json(body)).into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let behaviour = Behaviour::for_model_id(&model);
    let title = is_title_request(&body);
    let record = |status: StatusCode, usage: Option<ReportedUsage>| Served {
        model: model.clone(),
        title,
        status: status.as_u16(),
        usage,
        body: body.clone(),
    };
    let failure = match behaviour {
        Behaviour::Unauthorized => Some((
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED_MESSAGE,
            "invalid_request_error",
            "invalid_api_key",
        )),
        Behaviour::ServerError => Some((
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER_ERROR_MESSAGE,
            "server_error",
            "internal_error",
        )),
        _ => None,
    };
    if let Some((status, message, kind, code)) = failure {
        shared.record(record(status, None));
        return error_response(status, message, kind, code);
    }
    let usage = ReportedUsage::for_behaviour(behaviour);
    shared.record(record(StatusCode::OK, Some(usage)));
    let id = format!(
        "chatcmpl-fake-{}",
        shared.ids.fetch_add(1, Ordering::Relaxed)
    );
    let text = if title {
        "Fake title"
    } else {
        behaviour.reply()
    };
    let wants_tool = behaviour.calls_tool() && !title && !has_tool_result(&body);
    if body["stream"].as_bool() != Some(true) {
        let message = json!({"role": "assistant", "content": text});
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "usage": usage.to_json(),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut events = vec![(
        Duration::ZERO,
        chunk(json!({"role": "assistant", "content": ""}), None),
    )];
    if wants_tool {
        let (name, args) = if behaviour == Behaviour::ToolError {
            ("read", json!({"filePath": MISSING_FILE}))
        } else {
            (
                "bash",
                json!({"command": TOOL_COMMAND, "description": "Print a greeting"}),
            )
        };
        events.push((
            Duration::ZERO,
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
        ));
        // Arguments arrive in pieces, as real providers stream them.
        let args = args.to_string();
        for piece in args.as_bytes().chunks(16) {
            let piece = String::from_utf8_lossy(piece);
            events.push((
                Duration::ZERO,
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    None,
                ),
            ));
        }
        events.push((Duration::ZERO, chunk(json!({}), Some("tool_calls"))));
    } else {
        if behaviour == Behaviour::Reasoning && !title {
            for piece in ["Let me ", "think about ", "this."] {
                events.push((
                    Duration::ZERO,
                    chunk(json!({"reasoning_content": piece}), None),
                ));
            }
        }
        let delay = if behaviour == Behaviour::Slow && !title {
            SLOW_WORD_DELAY
        } else {
            Duration::ZERO
        };
        let words: Vec<&str> = text.split(' ').collect();
        for (i, word) in words.iter().enumerate() {
            let sep = if i + 1 == words.len() { "" } else { " " };
            events.push((
                delay,
                chunk(json!({"content": format!("{word}{sep}")}), None),
            ));
        }
        events.push((Duration::ZERO, chunk(json!({}), Some("stop"))));
    }
    // The usage comes last, in a chunk without choices (`stream_options.include_usage`).
    events.push((
        Duration::ZERO,
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [], "usage": usage.to_json()}),
    ));
    let frames = events
        .into_iter()
        .map(|(delay, event)| (delay, format!("data: {event}\n\n")))
        .chain([(Duration::ZERO, "data: [DONE]\n\n".to_owned())]);
    let stream = futures::stream::iter(frames).then(|(delay, frame)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// OpenCode's title agent: its system prompt calls itself a title generator.
fn is_title_request(body: &Value) -> bool {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    messages.iter().any(|m| {
        let text = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        text.to_lowercase().contains("title generator")
    })
}

fn has_tool_result(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
}

/// The OpenCode version the end-to-end tests and the demo are written against.
pub const OPENCODE_VERSION: &str = "1.18.33";

/// Where `scripts/setup-opencode` links the installed binary: `$OPENCODE_K8S_CACHE` (default
/// `$HOME/.cache/opencode-k8s`) + `/opencode/bin/opencode`.
pub fn opencode_cache_path() -> Option<PathBuf> {
    let cache = match std::env::var_os("OPENCODE_K8S_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/opencode-k8s"),
    };
    Some(cache.join("opencode/bin/opencode"))
}

/// The real `opencode` binary: `$OPENCODE_BIN` if set, else the one `scripts/setup-opencode`
/// installed ([`opencode_cache_path`]). The error says where it looked and what to run.
pub fn find_opencode() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("OPENCODE_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "OPENCODE_BIN={} is not a file; unset it or run scripts/setup-opencode",
                bin.display()
            ))
        };
    }
    match opencode_cache_path() {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(format!(
            "the real opencode binary (opencode-ai@{OPENCODE_VERSION}) is not installed at {}; run scripts/setup-opencode (or set OPENCODE_BIN)",
            path.display()
        )),
        None => Err(format!(
            "HOME is not set, so the opencode-ai@{OPENCODE_VERSION} cache cannot be found; set OPENCODE_K8S_CACHE or OPENCODE_BIN, or run scripts/setup-opencode"
        )),
    }
}

/// Puts `binary` into `dir` as `opencode`, readable and executable by any user, and returns
/// its path. A pod's process runs as an unprivileged user (uid 1000) that usually cannot
/// traverse the installer's cache (under root's 0700 home): a hard link (or, across file
/// systems, a copy) in a world-readable directory needs no access to the original path.
pub fn stage_opencode(binary: &Path, dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let source = std::fs::canonicalize(binary)?;
    let target = dir.join("opencode");
    if std::fs::hard_link(&source, &target).is_err() {
        std::fs::copy(&source, &target)?;
    }
    let mode = std::fs::metadata(&target)?.permissions().mode() | 0o555;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    Ok(target)
}

//! The fake OpenAI-compatible LLM: what an OpenAI client sees for each scripted behaviour.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use opencode_k8s_testkit::FakeLlm;
use opencode_k8s_testkit::llm::{self, Behaviour, ReportedUsage};
use serde_json::{Value, json};

/// One request; returns the status, the content type and the body.
async fn send(
    llm: &FakeLlm,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Bytes) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", llm.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = crate::send(request).await;
    (
        answer.code,
        answer.content_type.unwrap_or_default(),
        answer.body,
    )
}

fn chat(model: &str, messages: Value) -> Value {
    json!({"model": model, "stream": true, "messages": messages})
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The JSON payloads of an SSE body, checking it ends with `[DONE]`.
fn sse_events(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).unwrap();
    let payloads: Vec<&str> = text
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| f.strip_prefix("data: ").expect("SSE data frame"))
        .collect();
    assert_eq!(payloads.last(), Some(&"[DONE]"), "{text}");
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}

fn content(events: &[Value], field: &str) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"][field].as_str())
        .collect()
}

#[tokio::test]
async fn models_lists_one_model_per_behaviour() {
    let llm = FakeLlm::start().await.unwrap();
    let (status, _, body) = send(&llm, "GET", "/models", None).await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = Behaviour::ALL.iter().map(|b| b.model_id()).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_plain_reply_streams_its_text_then_the_usage() {
    let llm = FakeLlm::start().await.unwrap();
    let (status, content_type, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-model", user("hi"))),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    let events = sse_events(&body);
    assert_eq!(content(&events, "content"), llm::REPLY);
    let finish: Vec<&str> = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 120);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 20);
    assert_eq!(usage["completion_tokens"], 7);
    assert_eq!(
        llm.reported_usage(),
        ReportedUsage {
            prompt_tokens: 120,
            cached_tokens: 20,
            completion_tokens: 7,
            reasoning_tokens: 0
        }
    );
}

#[tokio::test]
async fn a_tool_call_comes_first_and_the_reply_after_the_tool_result() {
    let llm = FakeLlm::start().await.unwrap();
    let (_, _, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-tool", user("go"))),
    )
    .await;
    let events = sse_events(&body);
    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["function"]["name"], "bash");
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    let arguments: Value = serde_json::from_str(&arguments).expect("arguments reassemble");
    assert_eq!(arguments["command"], llm::TOOL_COMMAND);
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "tool_calls")
    );

    let after = json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "call_fake_1", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "hello-from-tool"},
    ]);
    let (_, _, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-tool", after)),
    )
    .await;
    assert_eq!(content(&sse_events(&body), "content"), llm::TOOL_REPLY);
    assert_eq!(llm.reported_usage().prompt_tokens, 240, "two completions");
}

#[tokio::test]
async fn a_tool_error_asks_to_read_a_missing_file() {
    let llm = FakeLlm::start().await.unwrap();
    let (_, _, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-toolerr", user("go"))),
    )
    .await;
    let events = sse_events(&body);
    let arguments: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap()["filePath"],
        llm::MISSING_FILE
    );
}

#[tokio::test]
async fn reasoning_tokens_are_streamed_and_reported() {
    let llm = FakeLlm::start().await.unwrap();
    let (_, _, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-reasoning", user("think"))),
    )
    .await;
    let events = sse_events(&body);
    assert_eq!(content(&events, "reasoning_content"), llm::REASONING);
    assert_eq!(content(&events, "content"), llm::REPLY);
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 3);
    assert_eq!(llm.reported_usage().reasoning_tokens, 3);
}

#[tokio::test]
async fn http_errors_carry_an_openai_style_body() {
    let llm = FakeLlm::start().await.unwrap();
    for (model, status, message) in [
        ("fake-401", 401, llm::UNAUTHORIZED_MESSAGE),
        ("fake-500", 500, llm::SERVER_ERROR_MESSAGE),
    ] {
        let (got, _, body) = send(
            &llm,
            "POST",
            "/chat/completions",
            Some(chat(model, user("x"))),
        )
        .await;
        assert_eq!(got, status, "{model}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["message"], message);
    }
    let statuses: Vec<u16> = llm.served().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [401, 500]);
    assert_eq!(
        llm.reported_usage(),
        ReportedUsage::default(),
        "no usage for errors"
    );
}

#[tokio::test]
async fn the_slow_stream_spreads_its_words_over_time() {
    let llm = FakeLlm::start().await.unwrap();
    let started = Instant::now();
    let (_, _, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-slow", user("x"))),
    )
    .await;
    let words = llm::SLOW_REPLY.split(' ').count() as u32;
    assert!(
        started.elapsed() >= llm::SLOW_WORD_DELAY * words,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(content(&sse_events(&body), "content"), llm::SLOW_REPLY);
}

#[tokio::test]
async fn title_requests_are_answered_but_not_counted_as_the_agents_usage() {
    let llm = FakeLlm::start().await.unwrap();
    let title = json!([
        {"role": "system", "content": "You are a title generator. You output ONLY a thread title."},
        {"role": "user", "content": "hi"},
    ]);
    let (_, _, body) = send(
        &llm,
        "POST",
        "/chat/completions",
        Some(chat("fake-tool", title)),
    )
    .await;
    assert_eq!(content(&sse_events(&body), "content"), "Fake title");
    assert!(llm.served()[0].title);
    assert_eq!(llm.reported_usage(), ReportedUsage::default());
}

#[tokio::test]
async fn a_non_streaming_request_gets_one_completion() {
    let llm = FakeLlm::start().await.unwrap();
    let request = json!({"model": "fake-model", "messages": user("hi")});
    let (status, content_type, body) = send(&llm, "POST", "/chat/completions", Some(request)).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], llm::REPLY);
    assert_eq!(body["usage"]["total_tokens"], 127);
}

#[tokio::test]
async fn the_opencode_config_points_every_model_at_this_server_with_a_price() {
    let llm = FakeLlm::start().await.unwrap();
    let config = llm.opencode_config();
    let provider = &config["provider"][llm::PROVIDER];
    assert_eq!(provider["options"]["baseURL"], llm.base_url());
    assert_eq!(provider["npm"], "@ai-sdk/openai-compatible");
    for behaviour in Behaviour::ALL {
        let model = &provider["models"][behaviour.model_id()];
        assert_eq!(model["cost"]["input"], llm::PRICE.input, "{behaviour:?}");
    }
    assert_eq!(config["small_model"], Behaviour::Plain.model());
    let usage = ReportedUsage {
        prompt_tokens: 120,
        cached_tokens: 20,
        completion_tokens: 7,
        reasoning_tokens: 3,
    };
    // OpenCode's own figure for this usage at this price (fixtures/opencode/run9: $0.000411).
    assert!(
        (usage.cost_usd() - 0.000411).abs() < 1e-12,
        "{}",
        usage.cost_usd()
    );
}

// Paperclip UI parser for the opencode_k8s run log: one self-contained CommonJS script, no
// imports, no dependencies. Paperclip evaluates it in a locked-down worker with
// `new Function("exports", "module", "self", "globalThis", source)` and calls
// `parseStdoutLine(line, ts)` for every line of the run log, in order.
//
// The lines it gets are what the agent pod wrote — OpenCode's JSON events on stdout and its
// non-JSON errors (with ANSI colour codes) on stderr, interleaved by the kubelet. The engine's
// own lines (`[opencode-k8s] ...` notices, `[k8s] Normal|Warning ...` Kubernetes events) are
// written to the run log's `system` stream, which Paperclip shows as system entries without
// calling this parser. So this parser never makes a `system` entry: whatever the agent prints,
// even a line that starts like an engine line, is shown as the agent's.
//
// OpenCode prints a `step_finish` with tokens and cost after every model step; a run has one
// final result, so steps are added up per session and one `result` entry is emitted when the
// run's last step finishes (any reason but `tool-calls`) or OpenCode reports an error.
"use strict";

var ANSI = /\u001b\[[0-9;?]*[ -\/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)/g;

// Per-session running totals of the steps seen since the last final result.
var totals = {};

function record(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? value : null;
}

function str(value) {
  return typeof value === "string" ? value : "";
}

function num(value) {
  return typeof value === "number" && isFinite(value) ? value : 0;
}

function parseJson(line) {
  if (line.charAt(0) !== "{") return null;
  try {
    return record(JSON.parse(line));
  } catch (err) {
    return null;
  }
}

function sessionTotals(sessionId) {
  var key = sessionId || "";
  if (!totals[key]) {
    totals[key] = { inputTokens: 0, outputTokens: 0, cachedTokens: 0, costUsd: 0 };
  }
  return totals[key];
}

function finalResult(sessionId, ts, text, subtype, errors) {
  var sum = sessionTotals(sessionId);
  delete totals[sessionId || ""];
  return {
    kind: "result",
    ts: ts,
    text: text,
    inputTokens: sum.inputTokens,
    outputTokens: sum.outputTokens,
    cachedTokens: sum.cachedTokens,
    costUsd: sum.costUsd,
    subtype: subtype,
    isError: errors.length > 0,
    errors: errors,
  };
}

function errorMessage(error) {
  var rec = record(error);
  if (!rec) return str(error);
  var data = record(rec.data);
  return str(data && data.message) || str(rec.message) || str(rec.name) || JSON.stringify(rec);
}

function toolEntries(event, ts) {
  var part = record(event.part) || {};
  var state = record(part.state) || {};
  var name = str(part.tool) || "tool";
  var id = str(part.callID) || str(part.id) || name;
  var entries = [
    { kind: "tool_call", ts: ts, name: name, toolUseId: id, input: state.input === undefined ? {} : state.input },
  ];
  var status = str(state.status);
  if (status === "completed" || status === "error") {
    entries.push({
      kind: "tool_result",
      ts: ts,
      toolUseId: id,
      toolName: name,
      content: status === "error" ? str(state.error) || name + " failed" : str(state.output) || str(part.title),
      isError: status === "error",
    });
  }
  return entries;
}

function eventEntries(event, ts) {
  var type = str(event.type);
  var part = record(event.part) || {};
  var sessionId = str(event.sessionID);
  if (type === "text" || type === "reasoning") {
    var text = str(part.text).trim();
    if (!text) return [];
    return [{ kind: type === "text" ? "assistant" : "thinking", ts: ts, text: text }];
  }
  if (type === "tool_use") return toolEntries(event, ts);
  if (type === "step_start") return [];
  if (type === "step_finish") {
    var tokens = record(part.tokens) || {};
    var cache = record(tokens.cache) || {};
    var sum = sessionTotals(sessionId);
    sum.inputTokens += num(tokens.input);
    sum.outputTokens += num(tokens.output) + num(tokens.reasoning);
    sum.cachedTokens += num(cache.read);
    sum.costUsd += num(part.cost);
    var reason = str(part.reason) || "stop";
    if (reason === "tool-calls") return [];
    return [finalResult(sessionId, ts, reason, reason, [])];
  }
  if (type === "error") {
    var message = errorMessage(event.error);
    return [{ kind: "stderr", ts: ts, text: message }, finalResult(sessionId, ts, message, "error", [message])];
  }
  return [{ kind: "stdout", ts: ts, text: JSON.stringify(event) }];
}

function parseStdoutLine(line, ts) {
  var text = String(line).replace(ANSI, "").replace(/\r$/, "");
  if (!text.trim()) return [];
  var event = parseJson(text.trim());
  if (event) return eventEntries(event, ts);
  // OpenCode writes only JSON events to stdout: anything else came from its stderr.
  return [{ kind: "stderr", ts: ts, text: text }];
}

module.exports = { parseStdoutLine: parseStdoutLine };

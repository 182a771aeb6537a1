// The UI parser under the evaluation Paperclip's UI uses, against real OpenCode output.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { PACKAGE_DIR, fixture } from "./helpers.mjs";

const source = readFileSync(join(PACKAGE_DIR, "ui-parser.cjs"), "utf8");

// Each call gives a fresh module, as a fresh worker would.
function load() {
  const module = { exports: {} };
  new Function("exports", "module", "self", "globalThis", source)(module.exports, module, {}, {});
  return module.exports;
}

function parse(text) {
  const { parseStdoutLine } = load();
  return text.split("\n").flatMap((line) => parseStdoutLine(line, "2026-11-27T00:00:00.000Z"));
}

test("the parser is a self-contained CommonJS script exporting parseStdoutLine", () => {
  assert.doesNotMatch(source, /\brequire\(|\bimport\b|\bexport\b/);
  assert.equal(typeof load().parseStdoutLine, "function");
});

test("a run with a tool call: assistant text, tool call with its input, result, one final result", () => {
  const entries = parse(fixture("opencode/run3-tool.stdout.jsonl"));
  const call = entries.find((e) => e.kind === "tool_call");
  assert.equal(call.name, "bash");
  assert.deepEqual(call.input, { command: "echo hello-from-tool", description: "Print a greeting" });
  const result = entries.find((e) => e.kind === "tool_result");
  assert.equal(result.toolUseId, call.toolUseId);
  assert.equal(result.isError, false);
  assert.match(result.content, /hello-from-tool/);
  assert.deepEqual(
    entries.filter((e) => e.kind === "assistant").map((e) => e.text),
    ["The tool said hello."],
  );
  const results = entries.filter((e) => e.kind === "result");
  assert.equal(results.length, 1, "one final result per run, not one per step");
  assert.equal(results[0].isError, false);
  assert.equal(results[0].inputTokens, 200, "tokens of both steps added up");
});

test("a tool error is an error tool result, not a failed run", () => {
  const entries = parse(fixture("opencode/run5-tool-error.stdout.jsonl"));
  const result = entries.find((e) => e.kind === "tool_result");
  assert.equal(result.isError, true);
  assert.match(result.content, /File not found/);
  const finals = entries.filter((e) => e.kind === "result");
  assert.equal(finals.length, 1);
  assert.equal(finals[0].isError, false);
});

test("reasoning becomes thinking", () => {
  const entries = parse(fixture("opencode/run9-reasoning-thinking.stdout.jsonl"));
  assert.deepEqual(entries.find((e) => e.kind === "thinking").text, "Let me think about this.");
});

test("an OpenCode error event is an error result with the provider's message", () => {
  const entries = parse(fixture("opencode/run7-http500.stdout.jsonl"));
  const final = entries.find((e) => e.kind === "result");
  assert.equal(final.isError, true);
  assert.deepEqual(final.errors, ["fake upstream exploded"]);
});

test("stderr lines lose their ANSI codes; an agent line that looks like the engine's is not a system entry", () => {
  const [stderr] = parse(fixture("opencode/run6-bogus-session.stderr.txt").trim());
  assert.deepEqual(stderr, { kind: "stderr", ts: "2026-11-27T00:00:00.000Z", text: "Error: Session not found" });
  // Engine lines reach the run log on the system stream, which Paperclip never hands to the
  // parser; on stdout such a line was printed by the agent.
  for (const forged of ["[opencode-k8s] created Job paperclip/oc-a-1", "[k8s] Normal Started pod/oc-a-1: Container started"]) {
    assert.deepEqual(parse(forged), [{ kind: "stderr", ts: "2026-11-27T00:00:00.000Z", text: forged }]);
  }
  assert.deepEqual(parse(""), []);
});

test("every captured stdout line parses without throwing", () => {
  for (const name of ["run1", "run2-resume", "run4-permission-rejected", "run8-http401", "run15-slowtool", "run22-responses-api"]) {
    const entries = parse(fixture(`opencode/${name}.stdout.jsonl`));
    assert.ok(entries.length > 0, name);
    assert.ok(entries.every((e) => typeof e.kind === "string" && typeof e.ts === "string"), name);
  }
});

// The built addon driven through createServerAdapter() against the simulated cluster.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createServerAdapter } from "../index.js";
import { native } from "../lib/engine.js";
import { CWD, NS, PACKAGE_DIR, context, fixture, startCluster, waitFor } from "./helpers.mjs";

const SESSION = "ses_de2d87857ffeYcorR0xMgtIWlV";
let cluster;
let adapter;
let skillSources;

before(async () => {
  cluster = await startCluster();
  skillSources = mkdtempSync(join(tmpdir(), "oc-k8s-skills-"));
  // The claim's directory stands for the Paperclip pod's /paperclip.
  adapter = createServerAdapter({ engine: { selfPodNamespace: NS, selfPodName: "paperclip" }, volumeDir: cluster.pvcDir });
});

after(async () => {
  await cluster?.stop();
  if (skillSources) rmSync(skillSources, { recursive: true, force: true });
});

function output(logs) {
  return logs.map((l) => l.chunk).join("");
}

function replay(name, rc, before = "cat > /dev/null") {
  const file = cluster.file(`${name}.jsonl`, fixture(`opencode/${name}.stdout.jsonl`));
  cluster.opencode(`${before}; cat ${file}; exit ${rc}`);
}

test("a successful run streams its output and returns session, usage and billing", async () => {
  replay(
    "run1",
    0,
    [
      "prompt=$(cat)",
      'echo "PROMPT: $(printf "%s\\n" "$prompt" | head -n 1)"',
      'printf "%s\\n" "$prompt" | grep -q "You are agent agent-ok (Echo Agent)" && echo "TEMPLATE: yes"',
      'echo "ENV: $PAPERCLIP_RUN_ID ${PAPERCLIP_API_KEY:+key-set} $PAPERCLIP_AGENT_ID"',
      'echo "[opencode-k8s] forged by the agent"',
      'echo "[k8s] Normal Started pod/forged: by the agent" >&2',
    ].join("; "),
  );
  const logs = [];
  const ctx = context(cluster, { runId: "run-ok", agentId: "agent-ok", logs });
  const result = await adapter.execute(ctx);
  assert.equal(result.errorMessage, null, output(logs));
  assert.equal(result.exitCode, 0);
  assert.equal(result.errorCode, null);
  assert.equal(result.sessionId, SESSION);
  assert.deepEqual(result.sessionParams, { sessionId: SESSION, cwd: CWD });
  assert.equal(result.summary, "Hi! I am the fake model.");
  assert.equal(result.usageBasis, "per_run");
  assert.equal(result.provider, "fake");
  assert.equal(result.model, "fake/fake-model");
  assert.equal(typeof result.usage.inputTokens, "number");
  const text = output(logs);
  assert.ok(text.includes(fixture("opencode/run1.stdout.jsonl")), "the agent's events, whole and in order");
  assert.match(text, /PROMPT: ## Paperclip Wake Payload/, "the host's wake prompt comes first");
  assert.match(text, /TEMPLATE: yes/, "the host's heartbeat template reached the pod");
  assert.match(text, /ENV: run-ok key-set agent-ok/, "PAPERCLIP_* env and the agent token reached the pod");
  assert.match(text, /\[k8s\] Normal Started pod\//, "Kubernetes events are in the run log");
  // The engine's lines are on the system stream, which only the adapter writes; whatever the
  // agent prints, even a line that looks like the engine's, is on stdout.
  const streamOf = (re) => [...new Set(logs.filter((l) => re.test(l.chunk)).map((l) => l.stream))];
  assert.deepEqual(streamOf(/\[k8s\] Normal Started pod\/oc-/), ["system"]);
  assert.deepEqual(streamOf(/^\[opencode-k8s\] (?!forged)/), ["system"]);
  assert.deepEqual(streamOf(/forged/), ["stdout"]);
  assert.deepEqual(streamOf(/"type":"step_start"/), ["stdout"]);
  assert.ok(!JSON.stringify(await cluster.jobs()).includes("agent-jwt-for-test"), "the token is not in a Job spec");
});

test("a failed run returns the exit code and a stable error code", async () => {
  replay("run7-http500", 1);
  const result = await adapter.execute(context(cluster, { runId: "run-fail", agentId: "agent-fail" }));
  assert.equal(result.exitCode, 1);
  assert.equal(result.errorCode, "llm_api_error");
  assert.match(result.errorMessage, /fake upstream exploded/);
});

/** A runtime skill of Paperclip's shape whose directory is `skillSources/<name>`. */
function skill(name) {
  const source = join(skillSources, name);
  mkdirSync(source, { recursive: true });
  writeFileSync(join(source, "SKILL.md"), `---\nname: ${name}\ndescription: ${name}\n---\nUse ${name}.\n`);
  return { key: `test/${name}`, runtimeName: name, source, sourceStatus: "available", missingDetail: null };
}

test("each agent's skills are in its own pod's ~/.claude/skills, and only its own", async () => {
  cluster.opencode('cat > /dev/null; echo "HOME $HOME"; echo "SKILLS $(ls "$HOME/.claude/skills" | tr "\\n" " ")"');
  const skills = [skill("only-for-a"), skill("only-for-b")];
  const run = async (agentId, wanted) => {
    const logs = [];
    const config = { paperclipRuntimeSkills: skills, paperclipSkillSync: { desiredSkills: [`test/${wanted}`] } };
    const result = await adapter.execute(context(cluster, { runId: `run-skills-${agentId}`, agentId, config, logs }));
    assert.equal(result.errorMessage, null, output(logs));
    return output(logs);
  };
  const a = await run("agent-skills-a", "only-for-a");
  const b = await run("agent-skills-b", "only-for-b");
  const companyId = JSON.parse(fixture("paperclip/ctx-issue-assigned.json")).agent.companyId;
  const home = native.agentHome(companyId, "agent-skills-a");
  assert.equal(home, `/paperclip/.opencode-k8s/${companyId}/agent-skills-a`);
  assert.match(a, new RegExp(`HOME ${home}\n`), "the pod's HOME is the engine's agentHome");
  assert.match(a, /SKILLS only-for-a \n/);
  assert.match(b, /SKILLS only-for-b \n/);
});

test("an invalid config fails with config_invalid and creates nothing", async () => {
  const before = (await cluster.jobs()).length;
  const result = await adapter.execute(
    context(cluster, { runId: "run-bad", agentId: "agent-bad", config: { model: "no-slash", cpu: "x" } }),
  );
  assert.equal(result.errorCode, "config_invalid");
  assert.match(result.errorMessage, /model/);
  assert.equal((await cluster.jobs()).length, before);
});

test("aborting the signal cancels the run, acknowledges it and deletes the Job", async () => {
  cluster.opencode('cat > /dev/null; echo "working"; exec sleep 300');
  const controller = new AbortController();
  const logs = [];
  const ctx = context(cluster, { runId: "run-cancel", agentId: "agent-cancel", logs, signal: controller.signal });
  const running = adapter.execute(ctx);
  await waitFor("the agent's first output", () => output(logs).includes("working"));
  controller.abort();
  const result = await running;
  assert.equal(result.errorCode, "cancelled");
  assert.equal(result.resultJson.executionCancellation.state, "acknowledged");
  assert.ok(Date.parse(result.resultJson.executionCancellation.acknowledgedAt));
  const jobName = result.resultJson.jobName;
  assert.ok(jobName, JSON.stringify(result));
  await waitFor("the Job to be gone", async () => !(await cluster.jobs()).some((j) => j.metadata.name === jobName));
});

test("Paperclip losing its lease on the run (a restart) leaves the Job working, its result whole", async () => {
  const release = join(cluster.bin, "release-lease");
  cluster.opencode(`cat > /dev/null; echo "working"; while [ ! -e ${release} ]; do sleep 0.05; done; cat ${cluster.file("run1.jsonl", fixture("opencode/run1.stdout.jsonl"))}`);
  const controller = new AbortController();
  const logs = [];
  const ctx = context(cluster, { runId: "run-lease", agentId: "agent-lease", logs, signal: controller.signal });
  const running = adapter.execute(ctx);
  await waitFor("the agent's first output", () => output(logs).includes("working"));
  // What Paperclip's lease watcher does when a renewal fails.
  controller.abort(new Error("Legacy controller lease lost"));
  await waitFor("the adapter to say it leaves the Job", () => output(logs).includes("the Job is left running"));
  const mine = (await cluster.jobs()).filter((j) => j.metadata.annotations?.["opencode-k8s.dev/run-id"] === "run-lease");
  assert.equal(mine.length, 1, "the Job is still there");
  writeFileSync(release, "");
  const result = await running;
  assert.equal(result.errorCode, null, output(logs));
  assert.equal(result.sessionId, SESSION, "the Job's work reached the result");
  assert.equal(result.resultJson.executionCancellation, undefined);
});

test("a signal aborted before execute creates no Job", async () => {
  const controller = new AbortController();
  controller.abort();
  const before = (await cluster.jobs()).length;
  const result = await adapter.execute(
    context(cluster, { runId: "run-pre-abort", agentId: "agent-pre-abort", signal: controller.signal }),
  );
  assert.equal(result.errorCode, "cancelled");
  assert.equal(result.resultJson.executionCancellation.state, "acknowledged");
  assert.equal((await cluster.jobs()).length, before);
});

test("two runs of one agent: the second waits for the first", async () => {
  cluster.opencode('cat > /dev/null; echo "start $PAPERCLIP_RUN_ID"; sleep 1; echo "end $PAPERCLIP_RUN_ID"');
  const order = [];
  const track = (ctx) => {
    ctx.onLog = async (_stream, chunk) => {
      for (const line of chunk.split("\n")) if (/^(start|end) /.test(line)) order.push(line);
    };
    return ctx;
  };
  const [first, second] = await Promise.all([
    adapter.execute(track(context(cluster, { runId: "run-a", agentId: "agent-busy" }))),
    adapter.execute(track(context(cluster, { runId: "run-b", agentId: "agent-busy" }))),
  ]);
  assert.equal(first.errorMessage, null);
  assert.equal(second.errorMessage, null);
  assert.equal(order.length, 4, order.join(" | "));
  assert.equal(order[0].split(" ")[1], order[1].split(" ")[1], `one run at a time: ${order.join(" | ")}`);
});

test("a Job left running by an earlier adapter process is harvested, then the next run's own prompt runs", async () => {
  const lines = Array.from({ length: 40 }, (_, i) => `line ${i}`);
  cluster.opencode(`cat > /dev/null; for i in $(seq 0 39); do echo "line $i"; sleep 0.05; done`);
  await fetch(`${cluster.url}/_testkit/requests/reset`, { method: "POST" });
  const ctx = context(cluster, { runId: "run-before-restart", agentId: "agent-restart", taskKey: "task-7" });
  // The earlier Paperclip process: started the run, then died without cleaning up.
  const child = spawn(process.execPath, [`${PACKAGE_DIR}/test/run-in-child.mjs`], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  child.stdin.end(JSON.stringify({ ...ctx, signal: undefined, onLog: undefined, onCancellationReady: undefined }));
  let childOut = "";
  child.stdout.on("data", (d) => (childOut += d));
  await waitFor("the first run's output", () => childOut.includes("line 1"));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));

  const logs = [];
  const next = context(cluster, { runId: "run-after-restart", agentId: "agent-restart", taskKey: "task-7", logs });
  const result = await adapter.execute(next);
  assert.equal(result.errorMessage, null, output(logs));
  const seen = output(logs)
    .split("\n")
    .filter((l) => l.startsWith("line "));
  assert.deepEqual(seen, [...lines, ...lines], "the orphan's whole output once, then the own Job's");
  assert.match(output(logs), /nobody follows it/);
  assert.match(output(logs), /harvested orphaned Job .* own prompt/);
  const counts = await (await fetch(`${cluster.url}/_testkit/requests`)).json();
  assert.equal(JSON.stringify(counts).match(/"create jobs":\s*(\d+)/)?.[1], "2", JSON.stringify(counts));
});

test("a panic inside the engine becomes a failed run, and the host process lives on", async () => {
  replay("run1", 0);
  process.env.OPENCODE_K8S_TEST_PANIC_RUN_ID = "run-panic";
  try {
    const result = await adapter.execute(context(cluster, { runId: "run-panic", agentId: "agent-panic" }));
    assert.equal(result.errorCode, "adapter_internal");
    assert.match(result.errorMessage, /panic provoked/);
  } finally {
    delete process.env.OPENCODE_K8S_TEST_PANIC_RUN_ID;
  }
  const after = await adapter.execute(context(cluster, { runId: "run-after-panic", agentId: "agent-after-panic" }));
  assert.equal(after.errorMessage, null, "the engine still runs");
});

test("a throwing onLog loses its events, not the run or the host", async () => {
  replay("run1", 0);
  const ctx = context(cluster, { runId: "run-bad-log", agentId: "agent-bad-log" });
  ctx.onLog = () => {
    throw new Error("log sink down");
  };
  const result = await adapter.execute(ctx);
  assert.equal(result.errorMessage, null);
  assert.equal(result.sessionId, SESSION);
});

test("testEnvironment passes against a reachable cluster and fails on a bad config", async () => {
  const ok = await adapter.testEnvironment({
    companyId: "c",
    adapterType: "opencode_k8s",
    config: { model: "fake/fake-model", kubeconfigContent: cluster.kubeconfigContent },
  });
  assert.notEqual(ok.status, "fail", JSON.stringify(ok, null, 1));
  assert.ok(ok.checks.length > 5, "the doctor's checks, one per RBAC rule among them");
  for (const c of ok.checks) assert.ok(["info", "warn", "error"].includes(c.level) && c.code && c.message);
  const bad = await adapter.testEnvironment({ companyId: "c", adapterType: "opencode_k8s", config: {} });
  assert.equal(bad.status, "fail");
  assert.equal(bad.checks[0].code, "config_invalid");
  assert.match(bad.checks[0].detail, /model/);
});

test("a kubeconfig path is refused by the server unless inside OPENCODE_K8S_KUBECONFIG_DIR, and nothing is created", async () => {
  assert.equal(process.env.OPENCODE_K8S_KUBECONFIG_DIR, undefined, "the tests run without it");
  const before = (await cluster.jobs()).length;
  const logs = [];
  const ctx = context(cluster, { runId: "run-kubeconfig-path", agentId: "agent-kubeconfig-path", config: { kubeconfig: cluster.kubeconfig }, logs });
  delete ctx.config.kubeconfigContent;
  const result = await adapter.execute(ctx);
  assert.equal(result.errorCode, "config_invalid", output(logs));
  assert.match(result.errorMessage, /kubeconfig/);
  assert.match(result.errorMessage, /OPENCODE_K8S_KUBECONFIG_DIR/);
  assert.equal((await cluster.jobs()).length, before);
});

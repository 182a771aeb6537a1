// End to end with the real Paperclip server (paperclipai 2026.916.1): the packed adapter is
// installed through POST /api/adapters/install, an `opencode_k8s` agent runs against kube-sim (a
// simulated cluster, TEST DOUBLE) with a fake `opencode` replaying captured output, and every
// assertion reads what an operator would see through the Paperclip API — plus, for cancel, the
// cluster, which is where a leaked Job would be. Run it with scripts/e2e-paperclip.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { NAMESPACE, RUN_DIR, required, startKubeSim, startPaperclip, waitFor } from "./harness.mjs";

/** The session id in the captured runs the fake replays (fixtures/opencode/run1, run2-resume). */
const SESSION = "ses_de2d87857ffeYcorR0xMgtIWlV";
/** A line of the captured output: the pod's stdout, as OpenCode wrote it. */
const MODEL_TEXT = "Hi! I am the fake model.";
/** Both runs of the resume case share a task, so Paperclip keeps one session for them. */
const TASK_KEY = "e2e-paperclip-task";
const RUN_ID_ANNOTATION = "opencode-k8s.dev/run-id";
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);

let cluster;
let paperclip;
let api;
let companyId;
let fakeBin;

/** Puts the fake `opencode` and the captured output it replays where the pods can run them. */
function installFakeOpencode() {
  const bin = path.join(RUN_DIR, "bin");
  fs.mkdirSync(bin, { mode: 0o755 });
  fs.copyFileSync(new URL("./fake-opencode", import.meta.url), path.join(bin, "opencode"));
  fs.chmodSync(path.join(bin, "opencode"), 0o755);
  const fixtures = path.join(required("E2E_FIXTURES"), "opencode");
  for (const name of ["run1.stdout.jsonl", "run2-resume.stdout.jsonl"]) {
    fs.copyFileSync(path.join(fixtures, name), path.join(bin, name));
    fs.chmodSync(path.join(bin, name), 0o644);
  }
  return bin;
}

async function createAgent(name, extraEnv = {}) {
  const { status, body } = await api.post(`/companies/${companyId}/agents`, {
    name,
    adapterType: "opencode_k8s",
    adapterConfig: {
      model: "fake/fake-model",
      kubeconfig: cluster.kubeconfig,
      namespace: NAMESPACE,
      env: { PATH: `${fakeBin}:/usr/local/bin:/usr/bin:/bin`, ...extraEnv },
    },
  });
  assert.equal(status, 201, `creating agent ${name}: ${JSON.stringify(body)}`);
  return body.id;
}

async function invoke(agentId) {
  const { status, body } = await api.post(`/agents/${agentId}/heartbeat/invoke`, {
    payload: { taskKey: TASK_KEY },
  });
  assert.equal(status, 202, `invoking a heartbeat: ${JSON.stringify(body)}`);
  assert.ok(body.id, `the invoke answer names the run: ${JSON.stringify(body)}`);
  return body.id;
}

async function getRun(runId) {
  const { status, body } = await api.get(`/heartbeat-runs/${runId}`);
  assert.equal(status, 200, `GET /heartbeat-runs/${runId}: ${JSON.stringify(body)}`);
  return body;
}

/**
 * Waits for the run to end and for Paperclip to finish its bookkeeping: the run's status is
 * written before the task session and the agent's status, and a wake-up that lands in between
 * sees the old session.
 */
async function finishedRun(runId) {
  const run = await waitFor(`run ${runId} to finish`, async () => {
    const current = await getRun(runId);
    return TERMINAL.has(current.status) ? current : undefined;
  }, { timeoutMs: 120_000, proc: paperclip.proc });
  await waitFor(`agent ${run.agentId} to be idle again`, async () => {
    const { body } = await api.get(`/agents/${run.agentId}`);
    return body.status !== "running";
  }, { timeoutMs: 30_000, proc: paperclip.proc });
  return run;
}

/** The session Paperclip stored for the agent's task, once it is there. */
async function storedSession(agentId) {
  let sessions = [];
  return waitFor(`a stored session for task ${TASK_KEY}`, async () => {
    const response = await api.get(`/agents/${agentId}/task-sessions`);
    assert.equal(response.status, 200);
    sessions = response.body;
    return sessions.find((s) => s.taskKey === TASK_KEY);
  }, { timeoutMs: 30_000, proc: paperclip.proc }).catch((error) => {
    throw new Error(`${error.message}; sessions: ${JSON.stringify(sessions)}`);
  });
}

function describeRun(run, log) {
  return `status=${run.status} error=${run.error} errorCode=${run.errorCode}\n--- run log ---\n${log}`;
}

/** How many Jobs were created in the cluster so far (the engine deletes finished ones). */
async function jobsCreated() {
  return (await cluster.requests())["create jobs"] ?? 0;
}

/** The engine's objects in the cluster that belong to one Paperclip run. */
async function clusterObjectsOf(runId) {
  const mine = (list) =>
    list.items.filter((item) => item.metadata.annotations?.[RUN_ID_ANNOTATION] === runId);
  const query = `?labelSelector=${encodeURIComponent("app.kubernetes.io/managed-by=opencode-k8s")}`;
  const jobs = mine(await cluster.kube(`/apis/batch/v1/namespaces/${NAMESPACE}/jobs${query}`));
  const secrets = mine(await cluster.kube(`/api/v1/namespaces/${NAMESPACE}/secrets${query}`));
  const pods = mine(await cluster.kube(`/api/v1/namespaces/${NAMESPACE}/pods${query}`));
  return { jobs, secrets, pods };
}

describe("opencode_k8s in the real Paperclip server", { concurrency: 1 }, () => {
  before(async () => {
    fakeBin = installFakeOpencode();
    cluster = await startKubeSim();
    paperclip = await startPaperclip({ pvcDir: cluster.pvcDir });
    api = paperclip.api;
    const company = await api.post("/companies", { name: "opencode-k8s e2e" });
    assert.equal(company.status, 201, `POST /api/companies: ${JSON.stringify(company.body)}`);
    companyId = company.body.id;
  }, { timeout: 420_000 });

  after(async () => {
    await paperclip?.proc.stop(30_000);
    await cluster?.proc.stop(15_000);
  }, { timeout: 60_000 });

  it("installs the packed package by local path", async () => {
    const adapterDir = required("E2E_ADAPTER_DIR");
    const { status, body } = await api.post("/adapters/install", {
      packageName: adapterDir,
      isLocalPath: true,
    });
    assert.equal(status, 201, `POST /api/adapters/install: ${JSON.stringify(body)}`);
    assert.equal(body.type, "opencode_k8s");
  });

  let agentId;
  let firstRun;

  const slow = { timeout: 180_000 };

  it("runs a heartbeat as a Job that succeeds, with the pod's output in the run log", slow, async (t) => {
    agentId = await createAgent("opencode-k8s e2e agent");
    const jobsBefore = await jobsCreated();
    const runId = await invoke(agentId);
    firstRun = await finishedRun(runId);
    const log = await api.runLog(runId);
    t.diagnostic(`run log:\n${log.trimEnd()}`);
    assert.equal(firstRun.status, "succeeded", describeRun(firstRun, log));
    assert.equal(await jobsCreated(), jobsBefore + 1, "the run was one Kubernetes Job");
    assert.match(
      log,
      /fake-opencode: new session after a [1-9]\d*-byte prompt/,
      "the pod ran and got the prompt",
    );
    assert.ok(log.includes(MODEL_TEXT), `the pod's stdout is in the run log:\n${log}`);
  });

  it("stores the session id and resumes it on the next run", slow, async () => {
    assert.ok(firstRun, "needs the first run");
    assert.equal(firstRun.sessionIdAfter, SESSION, "the run reported OpenCode's session id");
    const stored = await storedSession(agentId);
    assert.equal(stored.sessionParamsJson?.sessionId, SESSION, "the session id is stored for the task");

    const runId = await invoke(agentId);
    const second = await finishedRun(runId);
    const log = await api.runLog(runId);
    assert.equal(second.status, "succeeded", describeRun(second, log));
    assert.equal(second.sessionIdBefore, SESSION, "Paperclip handed the stored session to the adapter");
    assert.ok(
      log.includes(`fake-opencode: resuming session ${SESSION}`),
      `the pod was started with --session ${SESSION}:\n${log}`,
    );
  });

  it("cancels a long run: the operator's cancel answers 200 and no Job is left", slow, async () => {
    const slowAgent = await createAgent("opencode-k8s e2e long agent", { E2E_FAKE_OPENCODE_HOLD: "600" });
    const runId = await invoke(slowAgent);
    await waitFor(
      "the long run's pod to start",
      async () => (await api.runLog(runId)).includes("fake-opencode: holding"),
      { timeoutMs: 120_000, proc: paperclip.proc },
    );
    const running = await clusterObjectsOf(runId);
    assert.equal(running.jobs.length, 1, "the long run has a Job before the cancel");

    const cancel = await api.post(`/heartbeat-runs/${runId}/cancel`);
    assert.equal(cancel.status, 200, `POST .../cancel: ${JSON.stringify(cancel.body)}`);
    assert.equal(cancel.body.status, "cancelled");
    const run = await getRun(runId);
    assert.equal(run.status, "cancelled");

    let left;
    const gone = await waitFor(
      "the cancelled run's Job, pod and Secret to be gone",
      async () => {
        left = await clusterObjectsOf(runId);
        return left.jobs.length + left.pods.length + left.secrets.length === 0;
      },
      { timeoutMs: 30_000 },
    ).catch((error) => {
      const names = Object.entries(left ?? {}).flatMap(([kind, items]) =>
        items.map((item) => `${kind}/${item.metadata.name}`),
      );
      throw new Error(`${error.message}; still there: ${names.join(", ")}`);
    });
    assert.equal(gone, true);
  });
});

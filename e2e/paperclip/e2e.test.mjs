// End to end with the real Paperclip server (paperclipai 2026.916.1): the packed adapter is
// installed through POST /api/adapters/install, an `opencode_k8s` agent runs against kube-sim (a
// simulated cluster, TEST DOUBLE) with a fake `opencode` replaying captured output, and every
// assertion reads what an operator would see through the Paperclip API — plus, for cancel, the
// cluster, which is where a leaked Job would be. Run it with scripts/e2e-paperclip.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { execFileSync } from "node:child_process";

import {
  NAMESPACE,
  RUN_DIR,
  required,
  startKubeSim,
  startPaperclip,
  startRegistry,
  waitFor,
} from "./harness.mjs";

/** The session id in the captured runs the fake replays (fixtures/opencode/run1, run2-resume). */
const SESSION = "ses_de2d87857ffeYcorR0xMgtIWlV";
/** A line of the captured output: the pod's stdout, as OpenCode wrote it. */
const MODEL_TEXT = "Hi! I am the fake model.";
/** Both runs of the resume case share a task, so Paperclip keeps one session for them. */
const TASK_KEY = "e2e-paperclip-task";
const RUN_ID_ANNOTATION = "opencode-k8s.dev/run-id";
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const PACKAGE = "paperclip-adapter-opencode-k8s";
/** Paperclip's GET /heartbeat-runs/:id/log pages at this many bytes. */
const LOG_PAGE_BYTES = 256_000;

let cluster;
let paperclip;
let api;
let companyId;
let fakeBin;
let registry;

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
      // The server refuses a kubeconfig path outside OPENCODE_K8S_KUBECONFIG_DIR; the content is
      // what an operator pastes into the form.
      kubeconfigContent: fs.readFileSync(cluster.kubeconfig, "utf8"),
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
 * sees the old session. `agentIdle: false` skips the second wait, for an agent Paperclip still
 * counts as busy with a run it lost at a restart.
 */
async function finishedRun(runId, { agentIdle = true } = {}) {
  const run = await waitFor(`run ${runId} to finish`, async () => {
    const current = await getRun(runId);
    return TERMINAL.has(current.status) ? current : undefined;
  }, { timeoutMs: 120_000, proc: paperclip.proc });
  if (!agentIdle) return run;
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
    await registry?.proc.stop(10_000);
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
    // Paperclip's required skill is a file OpenCode finds in the pod, not prompt text.
    assert.match(log, /fake-opencode: skills: .*\bpaperclip\b/, "the skills reached the pod");
    // With Paperclip's five skills inlined it was 69,420 bytes; opencode_local's is ~10 KB.
    const promptBytes = Number(/new session after a (\d+)-byte prompt/.exec(log)[1]);
    t.diagnostic(`fresh prompt: ${promptBytes} bytes`);
    assert.ok(promptBytes < 20_000, `the fresh prompt is ${promptBytes} bytes`);
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
  /** The README's upgrade step: restart the server; the database, home and volume stay. */
  async function restartPaperclip() {
    await paperclip.proc.stop(30_000);
    paperclip = await startPaperclip({ pvcDir: cluster.pvcDir });
    api = paperclip.api;
  }

  async function adapterInfo() {
    const { status, body } = await api.get("/adapters");
    assert.equal(status, 200);
    return body.find((a) => a.type === "opencode_k8s");
  }

  /** The run's chunks whose text matches `re`, by stream. */
  async function streamsOf(runId, re) {
    const chunks = await api.runLogChunks(runId);
    return [...new Set(chunks.filter((c) => re.test(c.chunk)).map((c) => c.stream))];
  }

  /** The version in a package tarball's package.json. */
  function tarballVersion(tarball) {
    const json = execFileSync("tar", ["-xzOf", tarball, "package/package.json"], { encoding: "utf8" });
    return JSON.parse(json).version;
  }

  let version;

  it("installs by name from the operator's registry, as the README says, and runs a heartbeat", slow, async (t) => {
    const tarball = required("E2E_TARBALL");
    version = tarballVersion(tarball);
    registry = await startRegistry();
    registry.publish(tarball);
    // The README's step: the registry goes into the .npmrc of the directory Paperclip runs
    // `npm install` in ($PAPERCLIP_HOME/adapter-plugins, on the shared volume).
    const plugins = path.join(cluster.pvcDir, "adapter-plugins");
    fs.mkdirSync(plugins, { recursive: true });
    fs.writeFileSync(path.join(plugins, ".npmrc"), `registry=${registry.url}\n`);

    const started = Date.now();
    const { status, body } = await api.post("/adapters/install", { packageName: `${PACKAGE}@${version}` });
    t.diagnostic(`install by name took ${Date.now() - started} ms`);
    assert.equal(status, 201, `POST /api/adapters/install: ${JSON.stringify(body)}`);
    assert.equal(body.type, "opencode_k8s");
    assert.equal(body.version, version);
    assert.equal(body.requiresRestart, true, "replacing the local-path install needs a restart");
    await restartPaperclip();
    const info = await adapterInfo();
    assert.equal(info.packageName, PACKAGE);
    assert.equal(info.version, version);
    assert.equal(info.isLocalPath, undefined, "installed from the registry, not a path");

    // A run log longer than one page of the log endpoint: the harness joins the pages.
    const agent = await createAgent("opencode-k8s e2e by-name agent", { E2E_FAKE_OPENCODE_PAD: String(LOG_PAGE_BYTES + 50_000) });
    const runId = await invoke(agent);
    const run = await finishedRun(runId);
    const log = await api.runLog(runId);
    assert.equal(run.status, "succeeded", describeRun(run, log.slice(-4000)));
    assert.ok(Buffer.byteLength(log) > LOG_PAGE_BYTES, `the log (${Buffer.byteLength(log)} bytes) spans pages`);
    assert.ok(log.includes(MODEL_TEXT), "the output after the first page is there");
    // What ran, and which lines are the engine's: only the adapter writes the system stream.
    assert.deepEqual(await streamsOf(runId, new RegExp(`\\[opencode-k8s\\] ${PACKAGE} ${version} `)), ["system"]);
    assert.deepEqual(await streamsOf(runId, /\[opencode-k8s\] created Job /), ["system"]);
    assert.deepEqual(await streamsOf(runId, /\[k8s\] Normal /), ["system"]);
    assert.deepEqual(await streamsOf(runId, /fake-opencode: new session/), ["stdout"]);
  });

  it("upgrades by name during a long run: the Job survives, the next run harvests it on the new version, then runs its own prompt", slow, async (t) => {
    assert.ok(version, "needs the by-name install");
    const release = path.join(RUN_DIR, "release-upgrade-run");
    const agent = await createAgent("opencode-k8s e2e upgrade agent", { E2E_FAKE_OPENCODE_RELEASE: release });
    const oldRunId = await invoke(agent);
    await waitFor(
      "the long run's pod to start",
      async () => (await api.runLog(oldRunId)).includes("fake-opencode: waiting for"),
      { timeoutMs: 120_000, proc: paperclip.proc },
    );
    const [job] = (await clusterObjectsOf(oldRunId)).jobs;
    assert.ok(job, "the long run has a Job");

    // The next version, published as its maintainer would (a test-only version bump).
    const next = path.join(RUN_DIR, "next-version");
    fs.mkdirSync(next);
    execFileSync("tar", ["-xzf", required("E2E_TARBALL"), "-C", next]);
    const pkgFile = path.join(next, "package", "package.json");
    const pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
    const [major, minor, patch] = version.split(/[.-]/).map(Number);
    const nextVersion = `${major}.${minor}.${patch + 1}`;
    fs.writeFileSync(pkgFile, JSON.stringify({ ...pkg, version: nextVersion }, null, 2));
    registry.publish(path.join(next, "package"));

    const started = Date.now();
    const { status, body } = await api.post("/adapters/install", { packageName: `${PACKAGE}@${nextVersion}` });
    t.diagnostic(`upgrade install by name took ${Date.now() - started} ms`);
    assert.equal(status, 201, `POST /api/adapters/install: ${JSON.stringify(body)}`);
    assert.equal(body.version, nextVersion);
    assert.equal(body.requiresRestart, true, "Paperclip asks for the restart");
    // Before the restart Paperclip already reports the new version (it reads package.json from
    // disk) while the old code is still the one loaded; the run goes on undisturbed.
    assert.equal((await adapterInfo()).version, nextVersion);
    assert.equal((await getRun(oldRunId)).status, "running", "the install did not stop the run");

    await restartPaperclip();
    const info = await adapterInfo();
    assert.equal(info.version, nextVersion, "GET /api/adapters reports the new version");
    // What Paperclip shows for the old run is Paperclip's business (with the scheduler off, as
    // here, it still says `running`: nothing reaps it); the Job is ours, and it must live on.
    const oldRun = await getRun(oldRunId);
    t.diagnostic(`the old run after the restart: status=${oldRun.status} errorCode=${oldRun.errorCode}`);
    const still = await clusterObjectsOf(oldRunId);
    assert.equal(still.jobs.length, 1, "the old run's Job was not killed by the upgrade");
    assert.equal(still.jobs[0].metadata.uid, job.metadata.uid);

    // The old process is gone and its Lease expires: the next run of the agent, on the new
    // version, follows the orphaned Job to its end (its output once, from the start, and its
    // usage), then runs its own prompt in a Job of its own.
    const createdBefore = await jobsCreated();
    const nextRunId = await invoke(agent);
    const orphanNotice = `Job ${NAMESPACE}/${job.metadata.name} of run ${oldRunId} was left behind and nobody follows it`;
    await waitFor(
      "the next run to harvest the orphaned Job",
      async () => (await api.runLog(nextRunId)).includes(orphanNotice),
      { timeoutMs: 120_000, proc: paperclip.proc },
    );
    fs.writeFileSync(release, "");
    // Paperclip still counts the old run as running (nothing reaps it with the scheduler off),
    // so the agent does not go idle.
    const nextRun = await finishedRun(nextRunId, { agentIdle: false });
    const log = await api.runLog(nextRunId);
    const { inputTokens: shownInput, outputTokens: shownOutput } = nextRun.usageJson ?? {};
    t.diagnostic(`next run: status=${nextRun.status} inputTokens=${shownInput} outputTokens=${shownOutput} job=${nextRun.resultJson?.jobName}`);
    assert.equal(nextRun.status, "succeeded", describeRun(nextRun, log));
    assert.ok(log.includes(`[opencode-k8s] ${PACKAGE} ${nextVersion} `), `the new version ran it:\n${log}`);

    const count = (text) => log.split(text).length - 1;
    const orphanStart = `(run ${oldRunId}, session new)`;
    const ownStart = `(run ${nextRunId}, session ${SESSION})`;
    assert.equal(count(orphanStart), 1, `the orphan's output, once:\n${log}`);
    assert.equal(count("fake-opencode: released"), 2, "the orphan's output after the restart is not lost, and the own Job ran");
    assert.equal(count(MODEL_TEXT), 2, "both turns' answers reached Paperclip");
    const harvested = /harvested orphaned Job \S+: (\d+) input, (\d+) output tokens, [\d.]+ USD, counted in this run; now running this run's own prompt, continuing session (\S+) it produced/.exec(log);
    assert.ok(harvested, `the harvest is in the run log:\n${log}`);
    assert.equal(harvested[3], SESSION, "the own prompt continues the orphan's session of the same task");
    // The own prompt reached the fake agent, in a Job of its own, after the orphan's.
    assert.equal(count(ownStart), 1, `the own prompt ran, resuming the session:\n${log}`);
    assert.ok(log.indexOf(orphanStart) < log.indexOf(harvested[0]) && log.indexOf(harvested[0]) < log.indexOf(ownStart));
    assert.match(log, new RegExp(`fake-opencode: waiting for \\S+ after a [1-9]\\d*-byte prompt \\(run ${nextRunId}`));
    assert.equal(await jobsCreated(), createdBefore + 1, "one Job for the own prompt, none for the orphan");
    assert.equal(nextRun.sessionIdAfter, SESSION, "the session is kept");
    // Both Jobs replay the same captured turn: the run's usage is the orphan's plus its own.
    const orphanInput = Number(harvested[1]);
    const usage = nextRun.usageJson ?? {};
    const inputTokens = usage.inputTokens ?? usage.rawInputTokens;
    assert.ok(orphanInput > 0, "the orphan's usage was read");
    assert.equal(inputTokens, 2 * orphanInput, `the orphan's usage is recorded with the run's: ${JSON.stringify(usage)}`);

    let left;
    await waitFor(
      "both Jobs, their pods and Secrets to be gone",
      async () => {
        const [old, own] = [await clusterObjectsOf(oldRunId), await clusterObjectsOf(nextRunId)];
        left = [old, own].flatMap((o) => [...o.jobs, ...o.pods, ...o.secrets].map((item) => item.metadata.name));
        return left.length === 0;
      },
      { timeoutMs: 30_000 },
    ).catch((error) => {
      throw new Error(`${error.message}; still there: ${left?.join(", ")}`);
    });
  });
});

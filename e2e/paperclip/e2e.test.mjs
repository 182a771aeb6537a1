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

async function createAgent(name, extraEnv = {}, extraConfig = {}) {
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
      ...extraConfig,
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

  it("every field of the agent form reaches the Job", slow, async (t) => {
    // What Paperclip's form sends for this adapter (its generic fields included: Thinking
    // effort as `thinkingEffort` on create, Command, Extra args as an array).
    const command = path.join(fakeBin, "opencode");
    const extraArgs = ["--agent", "build", "--title", "two words"];
    const resources = {
      requests: { cpu: "250m", memory: "256Mi" },
      limits: { cpu: "1500m", memory: "1Gi" },
    };
    const literal = "a literal value, with spaces";
    const labels = { team: "e2e-forms", "example.com/owner": "forms" };
    const { status, body } = await api.post(`/companies/${companyId}/agents`, {
      name: "opencode-k8s e2e form agent",
      adapterType: "opencode_k8s",
      adapterConfig: {
        model: "fake/fake-model",
        thinkingEffort: "high",
        command,
        extraArgs,
        resources,
        timeoutSec: 600,
        ttlSecondsAfterFinished: 120,
        retainJobs: true,
        labels,
        kubeconfigContent: fs.readFileSync(cluster.kubeconfig, "utf8"),
        namespace: NAMESPACE,
        // No fake on PATH: only `command` finds it.
        env: { PATH: "/usr/local/bin:/usr/bin:/bin", E2E_FORM_LITERAL: literal },
      },
    });
    assert.equal(status, 201, `creating the form agent: ${JSON.stringify(body)}`);
    const runId = await invoke(body.id);
    const run = await finishedRun(runId);
    const log = await api.runLog(runId);
    assert.equal(run.status, "succeeded", describeRun(run, log));

    // retainJobs: the finished Job and its pod are still there to inspect.
    const { jobs, pods } = await clusterObjectsOf(runId);
    assert.equal(jobs.length, 1, "the retained Job is still there after the run");
    assert.equal(pods.length, 1, "the retained pod is still there after the run");
    const [job] = jobs;
    const spec = job.spec.template.spec;
    t.diagnostic(`job spec: ${JSON.stringify({ ...job.spec, template: undefined })}`);
    assert.equal(spec.containers.length, 1);
    const [container] = spec.containers;
    // The container runs `sh -c <wrapper> opencode <args...>`: the args are OpenCode's argv.
    assert.deepEqual(container.command.slice(0, 2), ["sh", "-c"]);
    assert.equal(container.command[3], "opencode");
    assert.deepEqual(container.args, [
      command, "run", "--format", "json",
      "--model", "fake/fake-model",
      "--variant", "high",
      ...extraArgs,
    ]);
    assert.ok(
      log.includes(`fake-opencode: argv: ${command} run --format json --model fake/fake-model --variant high --agent build --title two words`),
      `the pod ran the command with those arguments:\n${log}`,
    );
    assert.deepEqual(container.resources, resources);
    assert.equal(job.spec.activeDeadlineSeconds, 600, "timeoutSec is the Job's deadline");
    assert.equal(job.spec.ttlSecondsAfterFinished, undefined, "a retained Job has no TTL");
    for (const [where, meta] of [["Job", job.metadata], ["pod template", job.spec.template.metadata]]) {
      for (const [key, value] of Object.entries(labels)) {
        assert.equal(meta.labels?.[key], value, `the ${where} has label ${key}`);
      }
    }
    // The env value is in the run's Secret, not in the Job; the process saw it.
    const envVar = container.env.find((e) => e.name === "E2E_FORM_LITERAL");
    assert.equal(envVar?.value, undefined, `the value is not in the Job: ${JSON.stringify(envVar)}`);
    assert.equal(envVar?.valueFrom?.secretKeyRef?.key, "env.E2E_FORM_LITERAL");
    assert.ok(!JSON.stringify(job).includes(literal), "the value appears nowhere in the Job");
    assert.ok(log.includes(`fake-opencode: E2E_FORM_LITERAL=${literal}`), "the pod got the env value");
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

  /** Paperclip's "Run now": a wake-up with no payload, hence no task key. */
  async function runNow(agentId) {
    const { status, body } = await api.post(`/agents/${agentId}/heartbeat/invoke`);
    assert.equal(status, 202, `Run now: ${JSON.stringify(body)}`);
    assert.ok(body.id, `the invoke answer names the run: ${JSON.stringify(body)}`);
    return body.id;
  }

  /** When the first chunk of the run log containing `text` was written, in ms since the epoch. */
  function chunkTime(chunks, text) {
    const chunk = chunks.find((c) => c.chunk.includes(text));
    assert.ok(chunk, `no chunk with ${JSON.stringify(text)}`);
    return Date.parse(chunk.ts);
  }

  it("upgrades by name during a long run: the Job survives, the next run harvests it on the new version, then runs its own prompt — with a task key and without (Run now)", slow, async (t) => {
    assert.ok(version, "needs the by-name install");
    // Two agents, each with a long run that outlives the restart: one woken for a task, one by
    // "Run now" (no task key, as the UI's button sends; the one the next run cannot match by task).
    const cases = [
      { name: "task", agent: "opencode-k8s e2e upgrade agent", wake: invoke, config: {} },
      // The form's TTL field, on a Job that is not retained (a retained one has no TTL).
      { name: "run-now", agent: "opencode-k8s e2e run-now agent", wake: runNow, config: { ttlSecondsAfterFinished: 90 } },
    ];
    for (const c of cases) {
      c.release = path.join(RUN_DIR, `release-upgrade-${c.name}`);
      c.agentId = await createAgent(c.agent, { E2E_FAKE_OPENCODE_RELEASE: c.release }, c.config);
      c.oldRunId = await c.wake(c.agentId);
    }
    for (const c of cases) {
      await waitFor(
        `the ${c.name} long run's pod to start`,
        async () => (await api.runLog(c.oldRunId)).includes("fake-opencode: waiting for"),
        { timeoutMs: 120_000, proc: paperclip.proc },
      );
      [c.job] = (await clusterObjectsOf(c.oldRunId)).jobs;
      assert.ok(c.job, `the ${c.name} long run has a Job`);
    }
    const taskOf = (c) => c.job.metadata.annotations["opencode-k8s.dev/task-key"];
    assert.equal(taskOf(cases[0]), TASK_KEY);
    assert.equal(taskOf(cases[1]), undefined, "Run now sent no task key");
    assert.equal(cases[0].job.spec.ttlSecondsAfterFinished, 300, "the default TTL");
    assert.equal(cases[1].job.spec.ttlSecondsAfterFinished, 90, "ttlSecondsAfterFinished is the Job's TTL");

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
    for (const c of cases) {
      assert.equal((await getRun(c.oldRunId)).status, "running", "the install did not stop the run");
    }

    const stoppedAt = Date.now();
    await restartPaperclip();
    const restartedAt = Date.now();
    const info = await adapterInfo();
    assert.equal(info.version, nextVersion, "GET /api/adapters reports the new version");
    for (const c of cases) {
      // What Paperclip shows for the old run is Paperclip's business (with the scheduler off, as
      // here, it still says `running`: nothing reaps it); the Job is ours, and it must live on.
      const oldRun = await getRun(c.oldRunId);
      t.diagnostic(`the ${c.name} old run after the restart: status=${oldRun.status} errorCode=${oldRun.errorCode}`);
      const still = await clusterObjectsOf(c.oldRunId);
      assert.equal(still.jobs.length, 1, "the old run's Job was not killed by the upgrade");
      assert.equal(still.jobs[0].metadata.uid, c.job.metadata.uid);
    }

    // The old process is gone and its Lease expires: the next run of each agent, on the new
    // version, follows the orphaned Job to its end (its output once, from the start, and its
    // usage), then runs its own prompt in a Job of its own. Each is woken as its old run was.
    const createdBefore = await jobsCreated();
    for (const c of cases) {
      c.invokedAt = Date.now();
      c.nextRunId = await c.wake(c.agentId);
    }
    for (const c of cases) {
      const orphanNotice = `Job ${NAMESPACE}/${c.job.metadata.name} of run ${c.oldRunId} was left behind and nobody follows it`;
      await waitFor(
        `the next ${c.name} run to harvest the orphaned Job`,
        async () => (await api.runLog(c.nextRunId)).includes(orphanNotice),
        { timeoutMs: 120_000, proc: paperclip.proc },
      );
      fs.writeFileSync(c.release, "");
      c.orphanNotice = orphanNotice;
    }
    for (const c of cases) {
      // Paperclip still counts the old run as running (nothing reaps it with the scheduler off),
      // so the agent does not go idle.
      c.nextRun = await finishedRun(c.nextRunId, { agentIdle: false });
    }
    assert.equal(await jobsCreated(), createdBefore + cases.length, "one Job for each own prompt, none for the orphans");

    for (const c of cases) {
      const { nextRun, nextRunId, oldRunId } = c;
      const chunks = await api.runLogChunks(nextRunId);
      const log = chunks.map((chunk) => chunk.chunk).join("");
      const { inputTokens: shownInput, outputTokens: shownOutput } = nextRun.usageJson ?? {};
      t.diagnostic(`next ${c.name} run: status=${nextRun.status} inputTokens=${shownInput} outputTokens=${shownOutput} job=${nextRun.resultJson?.jobName}`);
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
      // With a task key, the orphan worked on the same task; without one (Run now), the run
      // continues whatever the agent's orphan produced.
      assert.equal(harvested[3], SESSION, "the own prompt continues the orphan's session");
      // The own prompt reached the fake agent, in a Job of its own, after the orphan's.
      assert.equal(count(ownStart), 1, `the own prompt ran, resuming the session:\n${log}`);
      assert.ok(log.indexOf(orphanStart) < log.indexOf(harvested[0]) && log.indexOf(harvested[0]) < log.indexOf(ownStart));
      assert.match(log, new RegExp(`fake-opencode: waiting for \\S+ after a [1-9]\\d*-byte prompt \\(run ${nextRunId}`));
      assert.equal(nextRun.sessionIdAfter, SESSION, "the session is kept");
      // Both Jobs replay the same captured turn: the run's usage is the orphan's plus its own.
      const orphanInput = Number(harvested[1]);
      const usage = nextRun.usageJson ?? {};
      const inputTokens = usage.inputTokens ?? usage.rawInputTokens;
      assert.ok(orphanInput > 0, "the orphan's usage was read");
      assert.equal(inputTokens, 2 * orphanInput, `the orphan's usage is recorded with the run's: ${JSON.stringify(usage)}`);

      // The dead process's Lease lasted 30 s from its last renewal, at most from the stop: the
      // next run takes the orphan then, or at once when it starts later.
      const s = (ms) => (ms / 1000).toFixed(1);
      const adopted = chunkTime(chunks, c.orphanNotice);
      const harvestedAt = chunkTime(chunks, harvested[0]);
      const ownAt = chunkTime(chunks, ownStart);
      t.diagnostic(`${c.name}: from the stop: restarted ${s(restartedAt - stoppedAt)} s, next run woken ${s(c.invokedAt - stoppedAt)} s, orphan adopted ${s(adopted - stoppedAt)} s, harvested ${s(harvestedAt - stoppedAt)} s, own prompt started ${s(ownAt - stoppedAt)} s`);
      const bound = Math.max(stoppedAt + 30_000, c.invokedAt) + 10_000;
      assert.ok(adopted <= bound, `the orphan was adopted ${s(adopted - stoppedAt)} s after the stop, past the Lease's 30 s and some slack`);
    }

    let left;
    await waitFor(
      "all Jobs, their pods and Secrets to be gone",
      async () => {
        const runs = cases.flatMap((c) => [c.oldRunId, c.nextRunId]);
        const objects = await Promise.all(runs.map(clusterObjectsOf));
        left = objects.flatMap((o) => [...o.jobs, ...o.pods, ...o.secrets].map((item) => item.metadata.name));
        return left.length === 0;
      },
      { timeoutMs: 30_000 },
    ).catch((error) => {
      throw new Error(`${error.message}; still there: ${left?.join(", ")}`);
    });
  });
});

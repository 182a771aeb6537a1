// Test support: a simulated cluster (kube-sim, a TEST DOUBLE from crates/testkit) with a
// Paperclip pod, a fake `opencode` script on the pod's PATH, and Paperclip-shaped contexts.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_DIR = join(PACKAGE_DIR, "..", "..");
export const FIXTURES = join(REPO_DIR, "fixtures");
export const NS = "paperclip";
export const CWD = "/paperclip/workspaces/project";

export function fixture(path) {
  return readFileSync(join(FIXTURES, path), "utf8");
}

/** Wait until `probe()` returns a truthy value, polling with a bound. */
export async function waitFor(what, probe, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * kube-sim on 127.0.0.1 with a Paperclip pod in `paperclip`, and a directory for the fake.
 * `pvcDir` is the host directory of the shared claim (what the Paperclip pod mounts at
 * `/paperclip`): the adapter's `volumeDir` in these tests.
 */
export async function startCluster() {
  const dir = mkdtempSync(join(tmpdir(), "oc-k8s-node-test-"));
  chmodSync(dir, 0o755);
  const bin = join(dir, "bin");
  writeFileSync(join(dir, "seed.yaml"), `paperclip: [${NS}]\n`);
  const kubeconfig = join(dir, "kubeconfig");
  const exe = process.env.KUBE_SIM ?? join(REPO_DIR, "target", "debug", "kube-sim");
  if (!existsSync(exe)) throw new Error(`${exe} is missing: run scripts/build-package first`);
  // kube-sim keeps its volumes and PVCs in a temporary directory: this one, to find the claim.
  const simDir = join(dir, "sim");
  mkdirSync(simDir);
  const child = spawn(exe, ["serve", "--seed", join(dir, "seed.yaml"), "--kubeconfig-out", kubeconfig], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, TMPDIR: simDir },
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const url = await waitFor("kube-sim to start", () => out.match(/server:\s+(\S+)/)?.[1] && existsSync(kubeconfig) && out.match(/server:\s+(\S+)/)[1]);
  const token = readFileSync(kubeconfig, "utf8").match(/token:\s*"?([^"\s]+)"?/)[1];
  // testkit's layout: <data dir>/pvcs/<namespace>/<claim>, made when the seeded pod mounts it.
  const pvcDir = await waitFor("the paperclip-data PVC directory", () =>
    readdirSync(simDir)
      .map((entry) => join(simDir, entry, "pvcs", NS, "paperclip-data"))
      .find((candidate) => existsSync(candidate)),
  );
  mkdirSync(bin, { mode: 0o755 });
  chmodSync(bin, 0o755);
  return {
    url,
    kubeconfig,
    /** The kubeconfig's text, as `kubeconfigContent` (a server refuses a kubeconfig path). */
    kubeconfigContent: readFileSync(kubeconfig, "utf8"),
    pvcDir,
    bin,
    /** Install the fake `opencode`: a POSIX shell body; the prompt is on stdin. */
    opencode(body) {
      const path = join(bin, "opencode");
      writeFileSync(path, `#!/bin/sh\n${body}\n`);
      chmodSync(path, 0o755);
    },
    /** A data file next to the fake, readable by the pod's user. */
    file(name, contents) {
      const path = join(bin, name);
      writeFileSync(path, contents);
      chmodSync(path, 0o644);
      return path;
    },
    async api(path, init = {}) {
      const res = await fetch(`${url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...init.headers },
      });
      return res.json();
    },
    async jobs() {
      return (await this.api(`/apis/batch/v1/namespaces/${NS}/jobs`)).items ?? [];
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An adapterConfig pointing at the cluster, with the fake first on PATH. */
export function adapterConfig(cluster, extra = {}) {
  return {
    model: "fake/fake-model",
    kubeconfigContent: cluster.kubeconfigContent,
    namespace: NS,
    env: { PATH: `${cluster.bin}:/usr/local/bin:/usr/bin:/bin` },
    ...extra,
  };
}

/** An execute context shaped like the captured ones (fixtures/paperclip/ctx-issue-assigned.json). */
export function context(cluster, { runId, agentId, taskKey, config, runtime, signal, logs }) {
  const captured = JSON.parse(fixture("paperclip/ctx-issue-assigned.json"));
  const cfg = { ...captured.config, ...adapterConfig(cluster), ...config };
  delete cfg.promptTemplate;
  return {
    runId,
    agent: { ...captured.agent, id: agentId, adapterType: "opencode_k8s", adapterConfig: cfg },
    runtime: { sessionId: null, sessionParams: null, sessionDisplayId: null, taskKey: taskKey ?? `task-of-${runId}`, ...runtime },
    config: cfg,
    context: {
      ...captured.context,
      paperclipWorkspace: { ...captured.context.paperclipWorkspace, cwd: CWD, source: "project_primary" },
    },
    authToken: "agent-jwt-for-test",
    signal,
    onCancellationReady: async () => {},
    onLog: async (stream, chunk) => {
      logs?.push({ stream, chunk });
    },
  };
}

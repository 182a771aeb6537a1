// The processes of the Paperclip end-to-end test and the clients to talk to them: kube-sim (the
// simulated cluster, a TEST DOUBLE whose kubelet runs pods as local processes) and the real
// Paperclip server with its embedded PostgreSQL. Everything listens on 127.0.0.1 and lives in
// E2E_RUN_DIR; every process group started is written to E2E_RUN_DIR/pgids so that
// scripts/e2e-paperclip can kill it even when this process dies.
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";

/** The value of a variable scripts/e2e-paperclip sets; the test cannot run without it. */
export function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this test through scripts/e2e-paperclip`);
  }
  return value;
}

export const RUN_DIR = required("E2E_RUN_DIR");

/** The Kubernetes namespace kube-sim seeds with a Paperclip pod, a RWX PVC and Secrets. */
export const NAMESPACE = "paperclip";
/** Where a Paperclip Deployment mounts its volume; the agent pods mount it at the same path. */
export const WORKSPACE_MOUNT = "/paperclip";

/** Strips terminal colour codes (pino-pretty colours the server's log). */
function plain(text) {
  return text.replace(/\u001b\[[0-9;]*m/g, "");
}

function tail(file, lines = 40) {
  try {
    return plain(fs.readFileSync(file, "utf8")).split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Polls `probe` until it returns something other than undefined/false, for at most `timeoutMs`.
 * Fails early, with the log's tail, when `proc` exits: a dead server will never get there.
 */
export async function waitFor(what, probe, { timeoutMs, intervalMs = 250, proc } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    if (proc?.exited) {
      const log = proc.logTail();
      throw new Error(`${proc.name} exited (${proc.exitStatus}) while waiting for ${what}:\n${log}`);
    }
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const why = lastError ? `; last error: ${lastError.message}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await delay(intervalMs);
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks it; released just before use). */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** A process started in its own process group, its stdout and stderr in one log file. */
class Proc {
  constructor(name, command, args, { env, cwd, log }) {
    this.name = name;
    this.log = log;
    const fd = fs.openSync(log, "a");
    this.child = spawn(command, args, { env, cwd, detached: true, stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    this.exited = false;
    this.exitStatus = null;
    this.exit = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exited = true;
        this.exitStatus = signal ?? code;
        resolve();
      });
      // A command that cannot be started (missing binary) emits only this.
      this.child.once("error", (error) => {
        this.exited = true;
        this.exitStatus = error.message;
        resolve();
      });
    });
    if (this.child.pid) fs.appendFileSync(path.join(RUN_DIR, "pgids"), `${this.child.pid}\n`);
  }

  logTail(lines) {
    return tail(this.log, lines);
  }

  logText() {
    return plain(fs.readFileSync(this.log, "utf8"));
  }

  /** SIGTERM to the main process (a graceful shutdown), then SIGKILL to the whole group. */
  async stop(graceMs) {
    if (!this.exited) {
      try {
        process.kill(this.child.pid, "SIGTERM");
      } catch {
        // Already gone.
      }
      await Promise.race([this.exit, delay(graceMs)]);
    }
    try {
      process.kill(-this.child.pid, "SIGKILL");
    } catch {
      // The group is empty.
    }
  }
}

/** Reads `token:` and `server:` from the kubeconfig kube-sim wrote. */
function readKubeconfig(file) {
  const text = fs.readFileSync(file, "utf8");
  const server = /server:\s*(\S+)/.exec(text)?.[1];
  const token = /token:\s*(\S+)/.exec(text)?.[1];
  if (!server || !token) throw new Error(`no server or token in ${file}`);
  return { server, token };
}

/**
 * Starts `kube-sim serve` with a Paperclip pod seeded in NAMESPACE. Returns its kubeconfig, a
 * client for its API and the host directory of the `paperclip-data` PVC.
 */
export async function startKubeSim() {
  const dir = path.join(RUN_DIR, "kube-sim");
  fs.mkdirSync(dir, { recursive: true });
  const seed = path.join(RUN_DIR, "seed.yaml");
  fs.writeFileSync(seed, `paperclip: [${NAMESPACE}]\n`);
  const kubeconfig = path.join(RUN_DIR, "kubeconfig");
  const proc = new Proc(
    "kube-sim",
    required("E2E_KUBE_SIM"),
    ["serve", "--seed", seed, "--kubeconfig-out", kubeconfig],
    {
      // kube-sim keeps pod logs, volumes and PVCs in a temporary directory: keep it in the run.
      env: { PATH: process.env.PATH, TMPDIR: dir, RUST_LOG: "warn" },
      cwd: RUN_DIR,
      log: path.join(RUN_DIR, "kube-sim.log"),
    },
  );
  await waitFor("kube-sim to serve", () => /^kubeconfig: /m.test(proc.logText()), {
    timeoutMs: 30_000,
    proc,
  });
  const { server, token } = readKubeconfig(kubeconfig);
  // testkit's Cluster::pvc_path layout: <data dir>/pvcs/<namespace>/<claim>; the kubelet creates
  // it when the seeded Paperclip pod mounts the claim.
  const pvcDir = await waitFor(
    "the paperclip-data PVC directory",
    () => {
      for (const entry of fs.readdirSync(dir)) {
        const candidate = path.join(dir, entry, "pvcs", NAMESPACE, "paperclip-data");
        if (fs.existsSync(candidate)) return candidate;
      }
      return undefined;
    },
    { timeoutMs: 30_000, proc },
  );
  const kube = async (apiPath) => {
    const response = await fetch(`${server}${apiPath}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`GET ${apiPath}: ${response.status} ${body.message}`);
    return body;
  };
  /** kube-sim's request accounting: `{"verb resource": count}`. */
  const requests = async () => (await fetch(`${server}/_testkit/requests`)).json();
  return { proc, kubeconfig, pvcDir, kube, requests };
}

let starts = 0;
let embeddedPostgresPort;

/**
 * Starts the real Paperclip server (local_trusted mode: no login, loopback only) as a Paperclip
 * Deployment's pod would run it: PAPERCLIP_HOME on the shared volume at /paperclip, POD_NAME and
 * POD_NAMESPACE naming the seeded pod. It runs in a private mount namespace where /paperclip is
 * the PVC's directory, so a workspace path means the same in the server and in the agent pods.
 */
export async function startPaperclip({ pvcDir }) {
  const appDir = required("E2E_PAPERCLIP_DIR");
  const port = await freePort();
  // A restart keeps the database, the home and the volume; it gets a fresh port and log file.
  const generation = (starts += 1);
  const dbDir = path.join(RUN_DIR, "db");
  const pgPort = generation === 1 ? await freePort() : embeddedPostgresPort;
  embeddedPostgresPort = pgPort;
  fs.mkdirSync(dbDir, { recursive: true });
  // The embedded PostgreSQL runs as `postgres` when the server is root (PostgreSQL refuses root).
  execFileSync("chown", ["postgres:postgres", dbDir]);
  const home = path.join(RUN_DIR, "home");
  fs.mkdirSync(home, { recursive: true });
  // Inside the server's namespace the Paperclip install is bound here, below /tmp, because the
  // postgres user must execute the PostgreSQL binaries and may not traverse root's HOME, where
  // the cache usually is.
  const appMount = path.join(RUN_DIR, "paperclip-app");
  fs.mkdirSync(appMount, { recursive: true });
  // The mountpoint must exist on the host; kube-sim's kubelet creates it the same way.
  fs.mkdirSync(WORKSPACE_MOUNT, { recursive: true });
  const config = path.join(RUN_DIR, "paperclip-config.json");
  fs.writeFileSync(
    config,
    JSON.stringify(
      {
        $meta: { version: 1, updatedAt: new Date().toISOString(), source: "onboard" },
        database: {
          mode: "embedded-postgres",
          embeddedPostgresDataDir: dbDir,
          embeddedPostgresPort: pgPort,
          backup: {
            enabled: false,
            intervalMinutes: 60,
            retentionDays: 1,
            dir: path.join(RUN_DIR, "backups"),
          },
        },
        logging: { mode: "file", logDir: path.join(RUN_DIR, "paperclip-logs") },
        server: {
          deploymentMode: "local_trusted",
          exposure: "private",
          host: "127.0.0.1",
          port,
          serveUi: false,
        },
        telemetry: { enabled: false },
        updates: { checkEnabled: false },
      },
      null,
      2,
    ),
  );
  const nodeBin = process.execPath;
  const proc = new Proc(
    "paperclip",
    "unshare",
    [
      "--mount",
      "--propagation",
      "private",
      "--",
      "/bin/sh",
      "-c",
      'set -e; mount --bind "$1" /paperclip; mount --bind "$2" "$3"; shift 3; exec "$@"',
      "sh",
      pvcDir,
      appDir,
      appMount,
      nodeBin,
      path.join(appMount, "node_modules/@paperclipai/server/dist/index.js"),
    ],
    {
      env: {
        PATH: `${path.dirname(nodeBin)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
        HOME: home,
        LANG: "C.UTF-8",
        PAPERCLIP_HOME: WORKSPACE_MOUNT,
        PAPERCLIP_CONFIG: config,
        HOST: "127.0.0.1",
        PORT: String(port),
        SERVE_UI: "false",
        PAPERCLIP_MIGRATION_AUTO_APPLY: "true",
        PAPERCLIP_MIGRATION_PROMPT: "never",
        PAPERCLIP_ANNOUNCEMENTS_ENABLED: "false",
        PAPERCLIP_DB_BACKUP_ENABLED: "false",
        PAPERCLIP_OPEN_ON_LISTEN: "false",
        HEARTBEAT_SCHEDULER_ENABLED: "false",
        // What a Deployment sets through the downward API: the pod the agent Jobs inherit from.
        POD_NAME: "paperclip",
        POD_NAMESPACE: NAMESPACE,
        // The npm cache of the machine, not a fresh one in HOME: the registry's tarballs are
        // content-addressed, so installing by name does not download them again every run.
        NPM_CONFIG_CACHE: required("E2E_NPM_CACHE"),
      },
      cwd: RUN_DIR,
      log: path.join(RUN_DIR, generation === 1 ? "server.log" : `server-${generation}.log`),
    },
  );
  // The server picks the next free port when the one asked for was taken meanwhile.
  const bound = await waitFor(
    "the Paperclip server to listen",
    () => /Server listener bound on 127\.0\.0\.1:(\d+)/.exec(proc.logText())?.[1],
    { timeoutMs: 240_000, proc },
  );
  const base = `http://127.0.0.1:${bound}/api`;
  await waitFor(
    "Paperclip health to be ok",
    async () => (await (await fetch(`${base}/health`)).json()).status === "ok",
    { timeoutMs: 120_000, proc },
  );
  return { proc, api: paperclipClient(base) };
}

/** A JSON client of the Paperclip API; every call returns `{ status, body }`. */
function paperclipClient(base) {
  const call = async (method, apiPath, body) => {
    const response = await fetch(`${base}${apiPath}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    return { status: response.status, body: parsed };
  };
  return {
    get: (apiPath) => call("GET", apiPath),
    post: (apiPath, body) => call("POST", apiPath, body ?? {}),
    /**
     * The run log's chunks, `{ ts, stream, chunk }`, in order. The endpoint pages at 256,000
     * bytes wherever that falls, mid-line included: the pages are joined before the NDJSON is
     * parsed.
     */
    async runLogChunks(runId) {
      let offset = 0;
      let ndjson = "";
      for (;;) {
        const { status, body } = await call("GET", `/heartbeat-runs/${runId}/log?offset=${offset}`);
        if (status !== 200) throw new Error(`GET /heartbeat-runs/${runId}/log: ${status}`);
        ndjson += body.content;
        if (body.nextOffset === undefined || body.nextOffset === null) break;
        offset = body.nextOffset;
      }
      return ndjson
        .split("\n")
        .filter((line) => line.trim())
        .map((line) => JSON.parse(line));
    },
    /** The whole run log as text, every stream. */
    async runLog(runId) {
      return (await this.runLogChunks(runId)).map((c) => c.chunk).join("");
    },
  };
}

/**
 * Starts verdaccio on 127.0.0.1 with a throwaway storage and config in RUN_DIR: the operator's
 * registry. Our package is published to it; everything else (the peer
 * `@paperclipai/adapter-utils`) it proxies from registry.npmjs.org, as a company registry
 * would. Returns its URL and `publish(dir)`, which publishes a staged package as a registered
 * user.
 */
export async function startRegistry() {
  const dir = path.join(RUN_DIR, "registry");
  fs.mkdirSync(path.join(dir, "storage"), { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const config = path.join(dir, "config.yaml");
  fs.writeFileSync(
    config,
    [
      `storage: ${path.join(dir, "storage")}`,
      "auth:",
      "  htpasswd:",
      `    file: ${path.join(dir, "htpasswd")}`,
      "uplinks:",
      "  npmjs:",
      "    url: https://registry.npmjs.org/",
      "packages:",
      "  'paperclip-adapter-opencode-k8s':",
      "    access: $all",
      "    publish: $authenticated",
      "  '**':",
      "    access: $all",
      "    proxy: npmjs",
      // The default, 10mb, is less than a package with a debug addon.
      "max_body_size: 200mb",
      "log: { type: stdout, format: pretty, level: warn }",
      "",
    ].join("\n"),
  );
  const proc = new Proc(
    "verdaccio",
    process.execPath,
    [required("E2E_VERDACCIO"), "--config", config, "--listen", `127.0.0.1:${port}`],
    {
      // The machine's extra CA (a TLS-inspecting proxy) is what lets it reach npmjs; npm reads
      // it from its own config, verdaccio only from this variable.
      env: {
        PATH: process.env.PATH,
        HOME: dir,
        ...(process.env.NODE_EXTRA_CA_CERTS ? { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS } : {}),
      },
      cwd: dir,
      log: path.join(RUN_DIR, "verdaccio.log"),
    },
  );
  await waitFor(
    "verdaccio to answer",
    async () => (await fetch(`${url}-/ping`)).ok,
    { timeoutMs: 60_000, proc },
  );
  // A user for publishing: verdaccio's htpasswd backend registers on the first PUT.
  const user = await fetch(`${url}-/user/org.couchdb.user:e2e`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "e2e", password: "e2e-password", type: "user", roles: [] }),
  });
  const { token } = await user.json();
  if (!token) throw new Error(`verdaccio gave no token (${user.status})`);
  const npmrc = path.join(dir, "publisher.npmrc");
  fs.writeFileSync(npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=${token}\n`);
  return {
    proc,
    url,
    /** `npm publish` of a package tarball or directory, as the package's maintainer would. */
    publish(spec) {
      execFileSync("npm", ["publish", spec, "--userconfig", npmrc, "--loglevel=warn"], {
        cwd: dir,
        env: { ...process.env, HOME: dir },
        stdio: ["ignore", "pipe", "pipe"],
      });
    },
  };
}

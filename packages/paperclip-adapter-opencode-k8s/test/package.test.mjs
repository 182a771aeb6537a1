// What Paperclip reads from the module besides execute, and what `npm pack` ships.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createServerAdapter } from "../index.js";
import { native } from "../lib/engine.js";
import { PACKAGE_DIR, REPO_DIR } from "./helpers.mjs";

const adapter = createServerAdapter();

test("the module has what Paperclip calls", async () => {
  assert.equal(adapter.type, "opencode_k8s");
  assert.equal(adapter.supportsLocalAgentJwt, true);
  assert.equal(adapter.supportsInstructionsBundle, true);
  assert.equal(adapter.instructionsPathKey, "instructionsFilePath");
  assert.deepEqual(await adapter.listModels(), adapter.models);
  assert.ok(adapter.models.every((m) => /^[^/]+\/.+/.test(m.id)));
  assert.match(adapter.agentConfigurationDoc, /kubeconfigContent/);
});

test("the config schema has every field with the engine's label, section and hint, textareas for maps and tolerations", async () => {
  const { fields } = await adapter.getConfigSchema();
  assert.ok(fields.length >= 20);
  const sections = ["Model", "Kubernetes", "Resources", "Session", "Advanced"];
  for (const f of fields) assert.ok(f.hint && f.label && f.type && sections.includes(f.group), JSON.stringify(f));
  const byKey = Object.fromEntries(fields.map((f) => [f.key, f]));
  // The labels and sections are core's (one table for the form, the CLI and the docs), not
  // words made from the key.
  assert.deepEqual([byKey.effort.label, byKey.effort.group], ["Thinking effort", "Model"]);
  assert.deepEqual([byKey["resources.limits.memory"].label, byKey["resources.limits.memory"].group], ["Memory limit", "Resources"]);
  assert.deepEqual([byKey.kubeconfigContent.label, byKey.kubeconfigContent.group], ["Kubeconfig content", "Kubernetes"]);
  assert.equal(byKey.env.type, "textarea");
  assert.equal(byKey.tolerations.type, "textarea");
  assert.equal(byKey.nodeSelector.type, "textarea");
  assert.equal(byKey.imagePullPolicy.type, "select");
  assert.equal(byKey.model.required, true);
});

test("the session codec resumes from sessionId alone and keeps cwd", () => {
  const { sessionCodec } = adapter;
  assert.deepEqual(sessionCodec.deserialize({ sessionId: "ses_1" }), { sessionId: "ses_1" });
  assert.deepEqual(sessionCodec.serialize({ sessionId: "ses_1", cwd: "/paperclip/w" }), {
    sessionId: "ses_1",
    cwd: "/paperclip/w",
  });
  assert.equal(sessionCodec.getDisplayId({ sessionId: "ses_1" }), "ses_1");
  assert.equal(sessionCodec.deserialize({ cwd: "/x" }), null);
});

test("the published package: the shipped files, README and LICENSE, a package.json for installing", () => {
  const out = mkdtempSync(join(tmpdir(), "oc-k8s-stage-"));
  try {
    const summary = JSON.parse(execFileSync("node", [join(PACKAGE_DIR, "scripts", "stage.mjs"), out], { encoding: "utf8" }));
    const listing = execFileSync("tar", ["-tzf", summary.tarball], { encoding: "utf8" });
    const files = listing.trim().split("\n").map((f) => f.replace(/^package\//, "")).sort();
    assert.deepEqual(files, [
      "LICENSE",
      "README.md",
      "index.js",
      ...readdirSync(join(PACKAGE_DIR, "lib")).map((f) => `lib/${f}`),
      "native/index.cjs",
      "native/index.d.ts",
      "native/opencode-k8s.linux-x64-gnu.node",
      "package.json",
      "ui-parser.cjs",
    ].sort());
    const pkg = JSON.parse(readFileSync(join(summary.staged, "package.json"), "utf8"));
    assert.equal(pkg.devDependencies, undefined, "an install needs no devDependencies");
    assert.equal(pkg.scripts, undefined, "nor the development scripts");
    assert.equal(pkg.dependencies, undefined, "the host provides everything: only a peer");
    assert.deepEqual(Object.keys(pkg.peerDependencies), ["@paperclipai/adapter-utils"]);
    assert.equal(pkg.exports["./ui-parser"], "./ui-parser.cjs");
    assert.equal(pkg.paperclip.adapterUiParser, "1.0.0");
    for (const word of ["paperclip", "paperclip-adapter", "opencode", "kubernetes"]) assert.ok(pkg.keywords.includes(word), word);
    assert.equal(pkg.license, "MIT");
    assert.match(pkg.repository.url, /github\.com/);
    assert.deepEqual([pkg.os, pkg.cpu, pkg.libc], [["linux"], ["x64"], ["glibc"]]);
    // The peer's own requirement: an older Node cannot load @paperclipai/adapter-utils anyway.
    const peer = JSON.parse(readFileSync(join(PACKAGE_DIR, "node_modules/@paperclipai/adapter-utils/package.json"), "utf8"));
    assert.equal(pkg.engines.node, peer.engines.node);
    assert.match(readFileSync(join(summary.staged, "README.md"), "utf8"), /Node\.js 24\.11[\s\S]*glibc 2\.34/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("one version: package.json, the Rust workspace (opencode-k8s --version) and the addon agree", () => {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_DIR, "package.json"), "utf8"));
  const cargo = readFileSync(join(REPO_DIR, "Cargo.toml"), "utf8");
  const workspace = /\[workspace\.package\][^[]*?\nversion = "([^"]+)"/.exec(cargo)?.[1];
  assert.equal(pkg.version, workspace, "package.json's version is the workspace version in Cargo.toml");
  assert.equal(native.version(), pkg.version, "the addon is built from this version");
});

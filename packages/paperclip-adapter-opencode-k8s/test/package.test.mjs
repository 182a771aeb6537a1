// What Paperclip reads from the module besides execute, and what `npm pack` ships.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createServerAdapter } from "../index.js";
import { PACKAGE_DIR } from "./helpers.mjs";

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

test("the config schema has every field with a hint, textareas for maps and tolerations", async () => {
  const { fields } = await adapter.getConfigSchema();
  assert.ok(fields.length >= 20);
  for (const f of fields) assert.ok(f.hint && f.label && f.type, JSON.stringify(f));
  const byKey = Object.fromEntries(fields.map((f) => [f.key, f]));
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

test("npm pack ships the entry, the ui-parser, the addon and its types", () => {
  const [packed] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json"], { cwd: PACKAGE_DIR, encoding: "utf8" }));
  const files = packed.files.map((f) => f.path);
  for (const f of ["index.js", "ui-parser.cjs", "native/index.cjs", "native/index.d.ts", "native/opencode-k8s.linux-x64-gnu.node", "lib/execute.js"]) {
    assert.ok(files.includes(f), `${f} in ${files.join(", ")}`);
  }
  const pkg = JSON.parse(readFileSync(join(PACKAGE_DIR, "package.json"), "utf8"));
  assert.equal(pkg.exports["./ui-parser"], "./ui-parser.cjs");
  assert.equal(pkg.paperclip.adapterUiParser, "1.0.0");
});

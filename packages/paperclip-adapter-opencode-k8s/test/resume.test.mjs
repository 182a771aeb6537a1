// The engine's resume decision, asked through the addon, against the table the Rust test reads
// too (crates/core/tests/resume-decisions.json): one decision, the same answer on both sides.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { resumeDecision } from "../lib/engine.js";
import { PACKAGE_DIR } from "./helpers.mjs";

const table = JSON.parse(readFileSync(join(PACKAGE_DIR, "../../crates/core/tests/resume-decisions.json"), "utf8"));

test("the adapter asks the engine, and gets the shared table's answers", () => {
  assert.ok(table.length >= 10);
  for (const row of table) {
    const session = row.saved ? { sessionId: row.saved.sessionId, cwd: row.saved.cwd ?? undefined } : null;
    const config = { model: "fake/fake-model", resumeLastSession: row.resumeLastSession };
    const got = resumeDecision(session, row.cwd, config);
    assert.equal(got.decision, row.expect, row.case);
    if (got.decision === "resumed") assert.equal(got.sessionId, row.saved.sessionId, row.case);
    if (got.decision === "fresh") assert.ok(got.reason?.length > 0, row.case);
  }
});

test("the config's cwd is the run's cwd when the workspace gives none, as for the Job", () => {
  const session = { sessionId: "ses_1", cwd: "/paperclip/w" };
  const got = resumeDecision(session, null, { model: "fake/fake-model", cwd: "/paperclip/w" });
  assert.equal(got.decision, "resumed");
});

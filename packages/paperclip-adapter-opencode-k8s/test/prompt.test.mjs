// The prompt is no larger than the one the host's own opencode_local adapter builds for the same
// run, and the agent's skills are files OpenCode finds, not prompt text. The reference prompt
// is measured, not modelled: opencode_local's execute runs against a stand-in `opencode` and
// reports the prompt it sends through onMeta.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { execute as localExecute } from "@paperclipai/adapter-opencode-local/server";
import { resumeDecision } from "../lib/engine.js";
import { buildPrompt, savedSession, workspace } from "../lib/prompt.js";
import { hostAgentHome, materializeSkills } from "../lib/skills.js";
import { fixture } from "./helpers.mjs";

const FIXTURES = [
  ["fresh", "paperclip/ctx-issue-assigned.json"],
  ["fresh", "paperclip/ctx-on-demand-first-run.json"],
  ["resumed", "paperclip/ctx-issue-reopened-via-comment-resumed.json"],
  ["resumed", "paperclip/ctx-run-handoff-resumed.json"],
];
/** A SKILL.md body as large as Paperclip's own (its five skills make ~60 KB). */
const SKILL_BODY = "Use the Paperclip API for every change to an issue.\n".repeat(240);

let dir;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "oc-k8s-prompt-test-"));
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The captured context with its skills, cwd and instructions file made local to `root`. */
function localContext(name, root) {
  const captured = JSON.parse(fixture(name));
  const cwd = join(root, "workspace");
  mkdirSync(cwd, { recursive: true });
  const instructions = join(root, "AGENTS.md");
  writeFileSync(instructions, "You are a careful engineer. Keep changes small.\n".repeat(40));
  const skills = captured.config.paperclipRuntimeSkills.map((entry) => {
    const source = join(root, "skills-source", entry.runtimeName);
    mkdirSync(join(source, "references"), { recursive: true });
    writeFileSync(
      join(source, "SKILL.md"),
      `---\nname: ${entry.runtimeName}\ndescription: ${entry.runtimeName} skill\n---\n\n${SKILL_BODY}`,
    );
    writeFileSync(join(source, "references", "api.md"), "GET /api/issues\n");
    return { ...entry, source };
  });
  const fake = join(root, "opencode");
  writeFileSync(fake, "#!/bin/sh\ncat > /dev/null\nexit 0\n");
  chmodSync(fake, 0o755);
  const config = {
    ...captured.config,
    model: "fake/fake-model",
    command: fake,
    instructionsFilePath: instructions,
    paperclipRuntimeSkills: skills,
    env: { HOME: join(root, "home"), OPENCODE_ALLOW_ALL_MODELS: "true" },
  };
  delete config.promptTemplate;
  const context = { ...captured.context, paperclipWorkspace: { ...captured.context.paperclipWorkspace, cwd } };
  // A session this adapter saved names its cwd (an unknown one is not resumed), and it is this
  // workspace's: the captured ones come from an adapter that saved none.
  const runtime = captured.runtime?.sessionParams
    ? { ...captured.runtime, sessionParams: { ...captured.runtime.sessionParams, cwd } }
    : captured.runtime;
  return { ...captured, config, context, runtime, agent: { ...captured.agent, adapterConfig: config } };
}

/** The prompt opencode_local sends to `opencode` on stdin for this context. */
async function opencodeLocalPrompt(ctx) {
  let prompt;
  await localExecute({
    ...ctx,
    onLog: async () => {},
    onMeta: async (meta) => {
      prompt ??= meta.prompt;
    },
  });
  assert.equal(typeof prompt, "string", "opencode_local reported its prompt");
  return prompt;
}

async function ourPrompt(ctx) {
  const ws = workspace(ctx.config, ctx.context);
  // As execute does: the engine's decision.
  const resumed = resumeDecision(savedSession(ctx.runtime), ws.cwd, ctx.config).decision === "resumed";
  const warnings = [];
  const prompt = await buildPrompt(ctx, ctx.config, { cwd: ws.cwd, resumed, warn: async (w) => warnings.push(w) });
  assert.deepEqual(warnings, []);
  return { prompt, resumed };
}

for (const [kind, name] of FIXTURES) {
  test(`${kind} run (${name}): the prompt is no larger than opencode_local's`, async (t) => {
    const root = join(dir, name.replace(/\W/g, "-"));
    const ctx = localContext(name, root);
    const theirs = await opencodeLocalPrompt(ctx);
    const { prompt: ours, resumed } = await ourPrompt(ctx);
    assert.equal(resumed, kind === "resumed");
    const bytes = (s) => Buffer.byteLength(s, "utf8");
    t.diagnostic(`prompt bytes: opencode_k8s ${bytes(ours)}, opencode_local ${bytes(theirs)}`);
    assert.ok(bytes(ours) <= bytes(theirs), `ours ${bytes(ours)} > opencode_local's ${bytes(theirs)}`);
    assert.ok(!ours.includes(SKILL_BODY.slice(0, 200)), "no skill text in the prompt");
    // The host's own sections are there: its wake prompt or heartbeat template.
    assert.ok(ours.length > 0 && theirs.includes(ours.split("\n")[0]), ours.slice(0, 200));
  });
}

test("the desired skills are copied whole into the agent home's skills, once, and refreshed when changed", async () => {
  const root = join(dir, "materialize");
  const ctx = localContext("paperclip/ctx-issue-assigned.json", root);
  const agentHome = join(root, "volume", ".opencode-k8s", "company", "agent");
  const home = join(agentHome, ".claude", "skills");
  const warnings = [];
  const warn = async (w) => warnings.push(w);
  const present = await materializeSkills(ctx.config, agentHome, warn);
  assert.deepEqual(warnings, []);
  // paperclip is always desired; the captured agent asked for no other.
  assert.deepEqual(present, ["paperclip"]);
  // The adapter made the agent's HOME: only the agent may enter it, as the init container would.
  assert.equal(statSync(agentHome).mode & 0o777, 0o700);
  const skill = join(home, "paperclip");
  assert.match(readFileSync(join(skill, "SKILL.md"), "utf8"), /^---\nname: paperclip\n/);
  assert.equal(readFileSync(join(skill, "references", "api.md"), "utf8"), "GET /api/issues\n");

  const source = ctx.config.paperclipRuntimeSkills.find((e) => e.runtimeName === "paperclip").source;
  writeFileSync(join(source, "SKILL.md"), "---\nname: paperclip\ndescription: new\n---\nv2\n");
  await materializeSkills(ctx.config, agentHome, warn);
  assert.match(readFileSync(join(skill, "SKILL.md"), "utf8"), /v2/, "a changed skill is refreshed");

  const desired = { ...ctx.config, paperclipSkillSync: { desiredSkills: ["paperclipai/paperclip/paperclip-board"] } };
  assert.deepEqual(await materializeSkills(desired, agentHome, warn), ["paperclip", "paperclip-board"]);
  assert.ok(existsSync(join(home, "paperclip-board", "SKILL.md")));
});

test("a skill the agent no longer has is removed, and only the copies the adapter made", async () => {
  const root = join(dir, "unwanted");
  const ctx = localContext("paperclip/ctx-issue-assigned.json", root);
  const agentHome = join(root, "volume", ".opencode-k8s", "company", "agent");
  const home = join(agentHome, ".claude", "skills");
  const lines = [];
  const log = async (line) => lines.push(line);
  const both = { ...ctx.config, paperclipSkillSync: { desiredSkills: ["paperclipai/paperclip/paperclip-board"] } };
  assert.deepEqual(await materializeSkills(both, agentHome, log), ["paperclip", "paperclip-board"]);
  // One the agent wrote itself, without the adapter's stamp.
  mkdirSync(join(home, "mine"));
  writeFileSync(join(home, "mine", "SKILL.md"), "---\nname: mine\n---\n");

  assert.deepEqual(await materializeSkills(ctx.config, agentHome, log), ["paperclip"]);
  assert.ok(!existsSync(join(home, "paperclip-board")), "the unselected skill is gone");
  assert.ok(existsSync(join(home, "paperclip", "SKILL.md")), "the selected one stays");
  assert.ok(existsSync(join(home, "mine", "SKILL.md")), "the agent's own skill stays");
  assert.deepEqual(lines, [`removed skill "paperclip-board" from ${home}: the agent no longer has it`]);
});

test("a skills directory the agent replaced by a symlink is not followed out of its HOME", async () => {
  const root = join(dir, "linked");
  const ctx = localContext("paperclip/ctx-issue-assigned.json", root);
  const agentHome = join(root, "volume", ".opencode-k8s", "company", "agent");
  // Another agent's skills, which a link in this agent's HOME points at.
  const elsewhere = join(root, "volume", ".opencode-k8s", "company", "other", ".claude");
  mkdirSync(join(elsewhere, "skills", "theirs"), { recursive: true });
  writeFileSync(join(elsewhere, "skills", "theirs", ".opencode-k8s-source"), "x");
  mkdirSync(agentHome, { recursive: true });
  symlinkSync(elsewhere, join(agentHome, ".claude"));
  const lines = [];
  assert.deepEqual(await materializeSkills(ctx.config, agentHome, async (line) => lines.push(line)), []);
  assert.deepEqual(readdirSync(join(elsewhere, "skills")), ["theirs"], "nothing written or removed there");
  assert.equal(lines.length, 1);
  assert.match(lines[0], /is a symlink; skills are not copied or removed there/);
});

test("a skill that cannot be copied is a warning, and the others still land", async () => {
  const root = join(dir, "missing");
  const ctx = localContext("paperclip/ctx-issue-assigned.json", root);
  const config = {
    ...ctx.config,
    paperclipSkillSync: { desiredSkills: ["paperclipai/paperclip/paperclip-board"] },
    paperclipRuntimeSkills: ctx.config.paperclipRuntimeSkills.map((e) =>
      e.runtimeName === "paperclip-board" ? { ...e, source: join(root, "gone") } : e,
    ),
  };
  const warnings = [];
  const present = await materializeSkills(config, join(root, "home"), async (w) => warnings.push(w));
  assert.deepEqual(present, ["paperclip"]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /could not copy skill "paperclipai\/paperclip\/paperclip-board"/);
});

test("an agent's HOME seen from this process: the engine's path moved under the volume's mount point", () => {
  assert.equal(hostAgentHome("/paperclip/.opencode-k8s/c/a"), "/paperclip/.opencode-k8s/c/a");
  assert.equal(hostAgentHome("/paperclip/.opencode-k8s/c/a", "/srv/pvc"), "/srv/pvc/.opencode-k8s/c/a");
  for (const off of ["/paperclip", "/tmp/x", "/paperclip/../etc"]) assert.throws(() => hostAgentHome(off), /not below \/paperclip/);
});

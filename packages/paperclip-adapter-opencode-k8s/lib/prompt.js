// The prompt and the PAPERCLIP_* env of one run, assembled with the host's own
// @paperclipai/adapter-utils exactly as the built-in opencode_local adapter does it (template,
// bootstrap prompt on fresh sessions, wake prompt or resume delta, session handoff, instructions
// file on fresh sessions). The wake-prompt logic changes often in the host: it is called, never
// ported. Skills are not in the prompt: they are files OpenCode finds (./skills.js).
import fs from "node:fs/promises";
import path from "node:path";
import {
  DEFAULT_PAPERCLIP_AGENT_PROMPT_TEMPLATE,
  DEFAULT_PAPERCLIP_CONVERSATION_PROMPT_TEMPLATE,
  asString,
  buildPaperclipEnv,
  buildRuntimeToolsEnv,
  isPaperclipRecoveryWakePayload,
  joinPromptSections,
  parseObject,
  readPaperclipIssueWorkModeFromContext,
  refreshPaperclipWorkspaceEnvForExecution,
  renderPaperclipWakePrompt,
  renderTemplate,
  selectPaperclipTaskMarkdown,
  stringifyPaperclipWakePayload,
} from "@paperclipai/adapter-utils/server-utils";

function nonEmpty(value) {
  return typeof value === "string" && value.trim().length > 0 ? value.trim() : null;
}

/** The saved session of this task: `sessionId` alone is enough. */
export function savedSession(runtime) {
  const params = parseObject(runtime?.sessionParams);
  const sessionId = nonEmpty(params.sessionId) ?? nonEmpty(runtime?.sessionId);
  if (!sessionId) return null;
  return { sessionId, cwd: nonEmpty(params.cwd) ?? undefined };
}

/** The run's working directory: the Paperclip workspace, else the configured `cwd`. */
export function workspace(config, context) {
  const ws = parseObject(context?.paperclipWorkspace);
  const configuredCwd = asString(config.cwd, "");
  const source = asString(ws.source, "");
  // As opencode_local: an agent-home workspace yields to an explicitly configured cwd.
  const cwd = source === "agent_home" && configuredCwd ? "" : asString(ws.cwd, "");
  return {
    cwd: cwd || configuredCwd || null,
    workspaceCwd: cwd,
    source,
    workspaceId: asString(ws.workspaceId, ""),
    repoUrl: asString(ws.repoUrl, ""),
    repoRef: asString(ws.repoRef, ""),
    agentHome: asString(ws.agentHome, ""),
    hints: Array.isArray(context?.paperclipWorkspaces)
      ? context.paperclipWorkspaces.filter((v) => typeof v === "object" && v !== null)
      : [],
  };
}

/** `PAPERCLIP_*` variables for the pod, computed by the host's helpers. */
export function paperclipEnv(ctx, config, ws) {
  const { agent, context = {}, runId } = ctx;
  const env = { ...buildPaperclipEnv(agent), ...buildRuntimeToolsEnv(ctx.runtimeTools) };
  env.PAPERCLIP_RUN_ID = runId;
  const taskId = nonEmpty(context.taskId) ?? nonEmpty(context.issueId);
  const set = (key, value) => {
    if (value) env[key] = value;
  };
  set("PAPERCLIP_TASK_ID", taskId);
  set("PAPERCLIP_ISSUE_WORK_MODE", readPaperclipIssueWorkModeFromContext(context));
  set("PAPERCLIP_WAKE_REASON", nonEmpty(context.wakeReason));
  set("PAPERCLIP_WAKE_COMMENT_ID", nonEmpty(context.wakeCommentId) ?? nonEmpty(context.commentId));
  set("PAPERCLIP_APPROVAL_ID", nonEmpty(context.approvalId));
  set("PAPERCLIP_APPROVAL_STATUS", nonEmpty(context.approvalStatus));
  const linked = Array.isArray(context.issueIds) ? context.issueIds.filter((v) => nonEmpty(v)) : [];
  set("PAPERCLIP_LINKED_ISSUE_IDS", linked.join(","));
  set("PAPERCLIP_WAKE_PAYLOAD_JSON", stringifyPaperclipWakePayload(context.paperclipWake));
  refreshPaperclipWorkspaceEnvForExecution({
    env,
    envConfig: parseObject(config.env),
    workspaceCwd: ws.workspaceCwd,
    workspaceSource: ws.source,
    workspaceId: ws.workspaceId,
    workspaceRepoUrl: ws.repoUrl,
    workspaceRepoRef: ws.repoRef,
    workspaceHints: ws.hints,
    agentHome: ws.agentHome,
    executionTargetIsRemote: false,
    executionCwd: ws.cwd ?? undefined,
  });
  // These values become literal env in the Job spec: keep only the host's PAPERCLIP_*
  // variables. The agent token and the configured `env` (which may hold resolved secrets) go
  // through the per-run Secret instead.
  return Object.fromEntries(
    Object.entries(env).filter(
      ([key, value]) => key.startsWith("PAPERCLIP_") && key !== "PAPERCLIP_API_KEY" && typeof value === "string",
    ),
  );
}

async function instructions(config, cwd, warn) {
  const file = nonEmpty(config.instructionsFilePath);
  if (!file) return "";
  const resolved = path.resolve(cwd ?? "/", file);
  try {
    const text = await fs.readFile(resolved, "utf8");
    const dir = `${path.dirname(resolved)}/`;
    return `${text}\n\nThe above agent instructions were loaded from ${resolved}. Resolve any relative file references from ${dir}.\n\n`;
  } catch (err) {
    await warn(`could not read the agent instructions file "${resolved}": ${err.message}; continuing without them`);
    return "";
  }
}

/** The prompt OpenCode gets on stdin. */
export async function buildPrompt(ctx, config, { cwd, resumed, warn }) {
  const { agent, context = {}, runId } = ctx;
  const conversation = context.conversationMode === true;
  const template = asString(
    config.promptTemplate,
    conversation ? DEFAULT_PAPERCLIP_CONVERSATION_PROMPT_TEMPLATE : DEFAULT_PAPERCLIP_AGENT_PROMPT_TEMPLATE,
  );
  const data = {
    agentId: agent.id,
    companyId: agent.companyId,
    runId,
    company: { id: agent.companyId },
    agent,
    run: { id: runId, source: "on_demand" },
    context,
  };
  const bootstrapTemplate = asString(config.bootstrapPromptTemplate, "");
  const bootstrap = !resumed && bootstrapTemplate.trim() ? renderTemplate(bootstrapTemplate, data).trim() : "";
  const taskNote = conversation ? selectPaperclipTaskMarkdown(context, { resumedSession: resumed }) : "";
  const wake = renderPaperclipWakePrompt(context.paperclipWake, {
    conversationMode: conversation,
    resumedSession: resumed,
    suppressIssueDescription: taskNote.length > 0,
  });
  const useResumeDelta = resumed && wake.length > 0;
  const heartbeat =
    useResumeDelta || isPaperclipRecoveryWakePayload(context.paperclipWake) ? "" : renderTemplate(template, data);
  const handoff = asString(context.paperclipSessionHandoffMarkdown, "").trim();
  return joinPromptSections([
    resumed ? "" : await instructions(config, cwd, warn),
    bootstrap,
    wake,
    taskNote,
    handoff,
    heartbeat,
  ]);
}

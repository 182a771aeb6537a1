// execute(ctx): one Paperclip run as one Kubernetes Job, through the engine addon.
//
// The run log keeps each chunk's stream, and Paperclip's transcript shows a `system` chunk as a
// system entry and a `stderr` chunk as an error entry without passing them to the UI parser.
// Everything the agent pod prints (its stdout and stderr, merged by the kubelet) goes on
// `stdout`; the engine's notices, its Kubernetes events and this adapter's own warnings go on
// `system`. The UI parser never makes a system entry, so an agent cannot print a line that
// looks like the engine's: only this adapter chooses the stream.
import { inferOpenAiCompatibleBiller } from "@paperclipai/adapter-utils";
import { asString, parseObject } from "@paperclipai/adapter-utils/server-utils";
import { EngineError, VERSION_LINE, native, resumeDecision, startRun } from "./engine.js";
import { buildPrompt, paperclipEnv, savedSession, workspace } from "./prompt.js";
import { hostAgentHome, materializeSkills } from "./skills.js";

function providerOf(model) {
  const slash = model.indexOf("/");
  return slash > 0 ? model.slice(0, slash) : null;
}

function cancellation(forced) {
  return { state: "acknowledged", acknowledgedAt: new Date().toISOString(), forced };
}

/**
 * Whether an abort is Paperclip giving up its claim on the run rather than someone stopping it.
 * Paperclip renews a lease on every running run in its database every 10 s and aborts the
 * run's signal when a renewal fails — which happens on every graceful shutdown (an upgrade's
 * restart), once the database is stopped or the run is marked interrupted. Deleting the Job
 * then would throw away the agent's work; left running, it is followed to its end by this
 * process, or — should the process be gone — harvested by the agent's next run (its output and
 * usage recorded) before that run's own prompt. The reason's message is the only thing that
 * tells the two apart.
 */
export function isLeaseLoss(reason) {
  return reason instanceof Error && reason.message === "Legacy controller lease lost";
}

/** The run-log stream of an engine event (see the top of this file). */
export function streamOf(event) {
  return event.type === "output" ? "stdout" : "system";
}

/**
 * Run one agent turn. Never throws: every failure is a result with an `errorCode`.
 * `options.volumeDir` is where this process sees the shared volume (default `/paperclip`, as
 * in the agent pods): the agent's skills are copied into its HOME there.
 */
export async function execute(engine, ctx, options = {}) {
  // Paperclip must be able to cancel before anything exists in the cluster.
  if (typeof ctx.onCancellationReady === "function") await ctx.onCancellationReady();
  const config = parseObject(ctx.config ?? ctx.agent?.adapterConfig);
  // A failing host log sink loses that chunk; it never fails the run.
  const onLog = async (stream, chunk) => {
    try {
      await ctx.onLog?.(stream, chunk);
    } catch {
      // Nothing better to do with a log line the host refused.
    }
  };
  const warn = (line) => onLog("system", `[opencode-k8s] ${line}\n`);
  // After an upgrade the run log says which version ran the run.
  await onLog("system", `[opencode-k8s] ${VERSION_LINE}\n`);
  const model = asString(config.model, "").trim();
  const provider = providerOf(model);
  const billing = {
    usageBasis: "per_run",
    provider,
    biller: inferOpenAiCompatibleBiller(parseObject(config.env), null) ?? provider ?? "unknown",
    model: model || null,
    billingType: "unknown",
  };
  const signal = ctx.signal;
  try {
    const ws = workspace(config, ctx.context);
    const session = savedSession(ctx.runtime);
    // The engine decides; the prompt matches. A resumed session gets the short resume prompt,
    // and the full one rides along for any attempt that does not resume (the fresh retry after
    // a stale session).
    const resumed = resumeDecision(session, ws.cwd, config).decision === "resumed";
    const home = hostAgentHome(native.agentHome(ctx.agent.companyId, ctx.agent.id), options.volumeDir);
    await materializeSkills(config, home, warn);
    const prompt = await buildPrompt(ctx, config, { cwd: ws.cwd, resumed, warn });
    const freshPrompt = resumed ? await buildPrompt(ctx, config, { cwd: ws.cwd, resumed: false, warn }) : undefined;
    const request = {
      runId: ctx.runId,
      agentId: ctx.agent.id,
      companyId: ctx.agent.companyId,
      agentName: ctx.agent.name ?? undefined,
      taskKey: ctx.runtime?.taskKey ?? undefined,
      prompt,
      freshPrompt,
      cwd: ws.cwd ?? undefined,
      paperclipEnv: paperclipEnv(ctx, config, ws),
      apiKey: ctx.authToken ?? undefined,
      resume: session ?? undefined,
    };
    if (signal?.aborted) return cancelledBeforeStart(billing);
    const run = startRun(engine, request, config, (event) =>
      onLog(streamOf(event), event.type === "output" ? event.text : `${event.text}\n`),
    );
    // An AbortSignal that fired before the listener was added would never call it.
    const abort = () => {
      if (!isLeaseLoss(signal.reason)) {
        run.cancel();
        return;
      }
      warn(
        "Paperclip lost its lease on this run (its database is unreachable, or the server is shutting down): the Job is left running; if this process stops before it ends, the agent's next run records its output and usage first",
      );
    };
    signal?.addEventListener("abort", abort, { once: true });
    if (signal?.aborted) abort();
    try {
      return toResult(await run.result, billing, session);
    } finally {
      signal?.removeEventListener("abort", abort);
    }
  } catch (err) {
    const code = err instanceof EngineError ? err.code : "adapter_internal";
    const message = err instanceof Error ? err.message : String(err);
    return {
      exitCode: null,
      signal: null,
      timedOut: false,
      errorCode: signal?.aborted ? "cancelled" : code,
      errorMessage: message,
      ...billing,
      resultJson: signal?.aborted ? { executionCancellation: cancellation(false) } : { errorCode: code },
    };
  }
}

function cancelledBeforeStart(billing) {
  return {
    exitCode: null,
    signal: null,
    timedOut: false,
    errorCode: "cancelled",
    errorMessage: "cancelled before the Job was created",
    ...billing,
    resultJson: { executionCancellation: cancellation(false) },
  };
}

function toResult(r, billing, previousSession) {
  const succeeded = r.status === "succeeded";
  const session = r.session ?? (r.clearSession ? null : previousSession);
  const result = {
    exitCode: r.exitCode ?? null,
    signal: null,
    timedOut: r.timedOut,
    errorCode: succeeded ? null : (r.errorCode ?? "adapter_failed"),
    errorMessage: succeeded ? null : (r.errorMessage ?? `run ${r.status}`),
    usage: {
      inputTokens: r.usage.inputTokens,
      outputTokens: r.usage.outputTokens,
      cachedInputTokens: r.usage.cachedInputTokens,
    },
    ...billing,
    costUsd: r.costUsd,
    summary: r.summary ?? null,
    clearSession: r.clearSession,
    resultJson: {
      status: r.status,
      namespace: r.namespace,
      jobName: r.jobName,
      attempts: r.attempts,
      outputTail: r.outputTail,
    },
  };
  if (session) {
    result.sessionId = session.sessionId;
    result.sessionParams = { sessionId: session.sessionId, ...(session.cwd ? { cwd: session.cwd } : {}) };
    result.sessionDisplayId = session.sessionId;
  }
  if (r.status === "cancelled") result.resultJson.executionCancellation = cancellation(false);
  return result;
}

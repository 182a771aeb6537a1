// execute(ctx): one Paperclip run as one Kubernetes Job, through the engine addon.
import { inferOpenAiCompatibleBiller } from "@paperclipai/adapter-utils";
import { asString, parseObject } from "@paperclipai/adapter-utils/server-utils";
import { EngineError, resumeDecision, startRun } from "./engine.js";
import { buildPrompt, paperclipEnv, savedSession, workspace } from "./prompt.js";

function providerOf(model) {
  const slash = model.indexOf("/");
  return slash > 0 ? model.slice(0, slash) : null;
}

function cancellation(forced) {
  return { state: "acknowledged", acknowledgedAt: new Date().toISOString(), forced };
}

/** Run one agent turn. Never throws: every failure is a result with an `errorCode`. */
export async function execute(engine, ctx) {
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
  const log = (line) => onLog("stdout", `${line}\n`);
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
    const prompt = await buildPrompt(ctx, config, { cwd: ws.cwd, resumed, log });
    const freshPrompt = resumed ? await buildPrompt(ctx, config, { cwd: ws.cwd, resumed: false, log }) : undefined;
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
      event.type === "output" ? onLog("stdout", event.text) : onLog("stdout", `${event.text}\n`),
    );
    // An AbortSignal that fired before the listener was added would never call it.
    const abort = () => run.cancel();
    signal?.addEventListener("abort", abort, { once: true });
    if (signal?.aborted) run.cancel();
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

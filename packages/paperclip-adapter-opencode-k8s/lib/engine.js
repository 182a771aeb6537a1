// The addon, wrapped for JavaScript callers: a run's error outcome becomes a thrown Error with
// the stable code as `err.code`, and the event callback never rejects (a throwing host `onLog`
// must not stop the run or reach the addon).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** The native addon (see ../native/index.d.ts). */
export const native = require("../native/index.cjs");

/** Which adapter runs, for the run log: the package's version and the addon's. */
const pkg = require("../package.json");
export const VERSION_LINE = `${pkg.name} ${pkg.version} (engine ${native.version()})`;

/** An Error carrying a stable opencode-k8s error code. */
export class EngineError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "EngineError";
    this.code = code;
  }
}

/**
 * Start a run on `engine`. Returns `{ cancel, result }`: `result` resolves to the run's result
 * (succeeded, failed, timed out or cancelled) or rejects with an EngineError.
 */
export function startRun(engine, request, config, onEvent, checkpoint) {
  const handle = engine.run(
    request,
    config,
    async (event) => {
      try {
        await onEvent(event);
      } catch {
        // The host's log sink failed for this event; the run itself goes on.
      }
    },
    checkpoint ?? null,
  );
  const result = handle.outcome().then((outcome) => {
    if (outcome.error) throw new EngineError(outcome.error.code, outcome.error.message);
    return outcome.result;
  });
  return { cancel: () => handle.cancel(), result };
}

/**
 * The engine's resume decision for a run of `config` at `cwd` with the saved `session`:
 * `{ decision: "new" | "resumed" | "fresh", sessionId?, reason? }`. The prompt is built for it.
 */
export function resumeDecision(session, cwd, config) {
  return native.resumeDecision(session ?? null, cwd ?? null, config);
}

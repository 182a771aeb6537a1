// Paperclip adapter `opencode_k8s`: runs OpenCode agents as Kubernetes Jobs. Paperclip imports
// this entry and calls only createServerAdapter().
import { ADAPTER_TYPE, agentConfigurationDoc, getConfigSchema, models, sessionCodec, testEnvironment } from "./lib/adapter.js";
import { native } from "./lib/engine.js";
import { execute } from "./lib/execute.js";

export { EngineError } from "./lib/engine.js";

/**
 * The adapter module. `options.engine` is for tests and embedding (`selfPodNamespace`,
 * `selfPodName`) and `options.volumeDir` (where this process sees the shared volume, default
 * `/paperclip`; each agent's skills are copied into its HOME there); Paperclip passes nothing
 * and the Jobs inherit from the pod it runs in.
 */
export function createServerAdapter(options = {}) {
  const engine = new native.Engine(options.engine ?? null);
  return {
    type: ADAPTER_TYPE,
    execute: (ctx) => execute(engine, ctx, { volumeDir: options.volumeDir }),
    testEnvironment: (ctx) => testEnvironment(engine, ctx),
    sessionCodec,
    models,
    listModels: async () => models,
    getConfigSchema,
    agentConfigurationDoc: agentConfigurationDoc(),
    supportsLocalAgentJwt: true,
    supportsInstructionsBundle: true,
    instructionsPathKey: "instructionsFilePath",
  };
}

export default createServerAdapter;

// What Paperclip sees of the adapter besides execute: environment test, session codec, models,
// config schema and the configuration doc.
import { native } from "./engine.js";

export const ADAPTER_TYPE = "opencode_k8s";

function nonEmpty(value) {
  return typeof value === "string" && value.trim().length > 0 ? value.trim() : null;
}

/**
 * Sessions are OpenCode session ids with the cwd they were created in; `sessionId` alone is
 * accepted, and the engine starts such a session fresh (its directory is unknown).
 */
export const sessionCodec = {
  deserialize(raw) {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return null;
    const sessionId = nonEmpty(raw.sessionId) ?? nonEmpty(raw.session_id) ?? nonEmpty(raw.sessionID);
    if (!sessionId) return null;
    const cwd = nonEmpty(raw.cwd);
    return cwd ? { sessionId, cwd } : { sessionId };
  },
  serialize(params) {
    return params ? sessionCodec.deserialize(params) : null;
  },
  getDisplayId(params) {
    return sessionCodec.deserialize(params)?.sessionId ?? null;
  },
};

/** Models offered in the picker; any `provider/model` OpenCode knows is accepted. */
export const models = [
  "anthropic/claude-sonnet-4-5",
  "anthropic/claude-opus-4-1",
  "openai/gpt-5.2-codex",
  "openai/gpt-5.2",
  "openai/gpt-5.1-codex-mini",
  "google/gemini-2.5-pro",
].map((id) => ({ id, label: id }));

// How core's field kinds render in Paperclip's form: maps and tolerations are multi-line text
// (`key=value` lines, JSON/YAML), as core accepts them.
const UI_TYPES = {
  text: "text",
  textarea: "textarea",
  integer: "number",
  boolean: "toggle",
  quantity: "text",
  choice: "select",
  map: "textarea",
  tolerations: "textarea",
  args: "text",
};

function defaultValue(field) {
  if (field.default == null) return undefined;
  if (field.kind === "boolean") return field.default === "true";
  if (field.kind === "integer") return Number(field.default);
  return field.default;
}

/** Every config field, from core's one table, each with its label, form section and hint. */
export function getConfigSchema() {
  return {
    fields: native.configFields().map((field) => {
      const schema = {
        key: field.name,
        label: field.label,
        group: field.group,
        type: UI_TYPES[field.kind] ?? "text",
        hint: `${field.hint} Accepted: ${field.accepted}.`,
        required: field.name === "model",
        meta: { kind: field.kind },
      };
      const value = defaultValue(field);
      if (value !== undefined) schema.default = value;
      if (field.kind === "choice") schema.options = field.options.map((o) => ({ label: o, value: o }));
      if (field.name === "model") {
        schema.type = "combobox";
        schema.options = models.map((m) => ({ label: m.label, value: m.id }));
      }
      return schema;
    }),
  };
}

/** The UI's "test" button: the config, then every check of `opencode-k8s doctor`. */
export async function testEnvironment(engine, ctx) {
  let checks;
  try {
    checks = await engine.checkEnvironment(ctx?.config ?? {});
  } catch (err) {
    checks = [{ code: "adapter_internal", level: "error", message: `environment check failed: ${err.message}` }];
  }
  const normalized = checks.map((c) => ({
    code: c.code,
    level: c.level,
    message: c.message,
    detail: c.detail ?? null,
    hint: c.hint ?? null,
  }));
  const status = normalized.some((c) => c.level === "error")
    ? "fail"
    : normalized.some((c) => c.level === "warn")
      ? "warn"
      : "pass";
  return { adapterType: ADAPTER_TYPE, status, checks: normalized, testedAt: new Date().toISOString() };
}

/** Served as text by Paperclip: how to configure an opencode_k8s agent. */
export function agentConfigurationDoc() {
  const rows = native
    .configFields()
    .map((f) => `- ${f.name} (${f.kind}${f.default != null ? `, default ${f.default}` : ""}): ${f.hint} Accepted: ${f.accepted}.`);
  return `# opencode_k8s agent configuration

Adapter: opencode_k8s

Runs each turn of an OpenCode agent (\`opencode run --format json\`) as an isolated Kubernetes Job
that inherits the Paperclip pod's image, pull secrets, env and the shared volume at /paperclip,
streams the pod's output into the run log and cleans up after itself.

Use when:
- Paperclip runs in a Kubernetes cluster (or can reach one) and agent runs should be isolated,
  resource-limited and survive Paperclip restarts

Fields:
${rows.join("\n")}

Notes:
- The workspace cwd must be on the shared volume (/paperclip) for the pod to see it.
- A saved session is resumed only when its saved cwd equals this run's cwd; one saved without a
  cwd starts a fresh session (resuming from another directory hangs OpenCode).
- A failed run carries a stable errorCode (config_invalid, k8s_forbidden, k8s_image_pull_failed,
  llm_api_error, opencode_failed, timeout, cancelled, ...).
`;
}

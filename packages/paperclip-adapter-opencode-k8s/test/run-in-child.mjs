// A separate "Paperclip process" for the reattach test: runs one execute with the context on
// stdin, echoing the run log to stdout, until the test kills it.
import { createServerAdapter } from "../index.js";
import { NS } from "./helpers.mjs";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const ctx = JSON.parse(input);
ctx.onLog = async (_stream, chunk) => {
  process.stdout.write(chunk);
};
const adapter = createServerAdapter({ engine: { selfPodNamespace: NS, selfPodName: "paperclip" } });
await adapter.execute(ctx);

// Loads the opencode-k8s engine addon (napi-rs). The package ships one prebuilt binary,
// linux-x64 against glibc 2.34 or newer; on anything else loading fails with one sentence that
// names this machine and what is supported, instead of the dynamic loader's stack trace. The
// addon's API is described by ./index.d.ts (generated).
"use strict";

const { join } = require("node:path");

/** The oldest glibc the prebuilt addon links against (its newest versioned symbol). */
const MIN_GLIBC = [2, 34];

/** What this process runs on, or null for a libc that is not glibc (musl, Alpine). */
function glibcVersion() {
  const header = process.report?.getReport?.().header;
  const version = header?.glibcVersionRuntime;
  return typeof version === "string" ? version : null;
}

/** Why the prebuilt addon cannot load here, as one sentence; null when it can. */
function unsupported() {
  const supported = `linux-x64 with glibc ${MIN_GLIBC.join(".")} or newer (a Debian or Ubuntu based image, not Alpine)`;
  const here = `${process.platform}-${process.arch}`;
  if (process.platform !== "linux" || process.arch !== "x64") {
    return `paperclip-adapter-opencode-k8s cannot run on ${here}: its engine is built for ${supported} only.`;
  }
  const glibc = glibcVersion();
  if (glibc === null) {
    return `paperclip-adapter-opencode-k8s cannot run on ${here} without glibc (musl?): its engine is built for ${supported} only.`;
  }
  const [major, minor] = glibc.split(".").map(Number);
  if (major < MIN_GLIBC[0] || (major === MIN_GLIBC[0] && minor < MIN_GLIBC[1])) {
    return `paperclip-adapter-opencode-k8s cannot run on ${here} with glibc ${glibc}: its engine is built for ${supported} only.`;
  }
  return null;
}

const reason = unsupported();
if (reason) throw new Error(reason);

module.exports = require(join(__dirname, "opencode-k8s.linux-x64-gnu.node"));

// Loads the opencode-k8s engine addon (napi-rs) for this platform. The prebuilt linux-x64-gnu
// binary ships inside the package; other platforms come from the optional per-platform
// package, the napi-rs convention. The addon's API is described by ./index.d.ts (generated).
"use strict";

const { existsSync } = require("node:fs");
const { join } = require("node:path");

const triple = `${process.platform}-${process.arch}-gnu`;
const local = join(__dirname, `opencode-k8s.${triple}.node`);

function load() {
  if (existsSync(local)) return require(local);
  try {
    return require(`paperclip-adapter-opencode-k8s-${triple}`);
  } catch (cause) {
    throw new Error(
      `failed to load the opencode-k8s engine for ${triple}: neither ${local} nor the package ` +
        `paperclip-adapter-opencode-k8s-${triple} is installed; build it with scripts/build-package ` +
        `or install a package built for this platform`,
      { cause },
    );
  }
}

module.exports = load();

// On a machine the prebuilt addon cannot run on, importing the package fails with one sentence
// naming the machine and what is supported (what Paperclip shows as "Failed to install adapter:
// ..."), not with the dynamic loader's error. Each case imports the package in a child process
// whose process.platform, process.arch or glibc version is faked before the import.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { PACKAGE_DIR } from "./helpers.mjs";

/** The error message of importing the package after `fake` ran, or "loaded". */
function importWith(fake) {
  const script = `
    ${fake}
    try {
      await import(${JSON.stringify(join(PACKAGE_DIR, "index.js"))});
      process.stdout.write("loaded");
    } catch (err) {
      process.stdout.write(err.message);
    }`;
  return execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
}

const fakeProperty = (name, value) =>
  `Object.defineProperty(process, ${JSON.stringify(name)}, { value: ${JSON.stringify(value)} });`;

const fakeGlibc = (version) => `
  const real = process.report.getReport.bind(process.report);
  process.report.getReport = () => {
    const report = real();
    if (${JSON.stringify(version)} === null) delete report.header.glibcVersionRuntime;
    else report.header.glibcVersionRuntime = ${JSON.stringify(version)};
    return report;
  };`;

const SUPPORTED = "its engine is built for linux-x64 with glibc 2.34 or newer (a Debian or Ubuntu based image, not Alpine) only.";

for (const [what, fake, expected] of [
  ["arm64", fakeProperty("arch", "arm64"), `paperclip-adapter-opencode-k8s cannot run on linux-arm64: ${SUPPORTED}`],
  ["macOS", fakeProperty("platform", "darwin"), `paperclip-adapter-opencode-k8s cannot run on darwin-x64: ${SUPPORTED}`],
  ["musl", fakeGlibc(null), `paperclip-adapter-opencode-k8s cannot run on linux-x64 without glibc (musl?): ${SUPPORTED}`],
  ["glibc 2.31", fakeGlibc("2.31"), `paperclip-adapter-opencode-k8s cannot run on linux-x64 with glibc 2.31: ${SUPPORTED}`],
]) {
  test(`on ${what}, loading fails with one sentence naming the platform and what is supported`, () => {
    assert.equal(importWith(fake), expected);
  });
}

test("on linux-x64 with a new enough glibc the package loads", () => {
  assert.equal(importWith(fakeGlibc("2.39")), "loaded");
});

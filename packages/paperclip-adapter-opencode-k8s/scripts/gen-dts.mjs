// Turns the type definitions napi-derive wrote while compiling crates/node into native/index.d.ts
// (what `napi build` does, without its separate target directory). With --check, fails when the
// committed file differs from what the current sources generate.
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateTypeDef } from "@napi-rs/cli";

const [typeDefDir, mode] = process.argv.slice(2);
if (!typeDefDir) {
  console.error("usage: gen-dts.mjs TYPE_DEF_DIR [--check]");
  process.exit(2);
}
const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = join(packageDir, "native", "index.d.ts");
const { dts } = await generateTypeDef({ typeDefDir, cwd: packageDir });
if (mode === "--check") {
  const committed = await readFile(target, "utf8").catch(() => "");
  if (committed !== dts) {
    console.error(
      `${target} is stale: it differs from what crates/node generates; run scripts/build-package and commit the result`,
    );
    process.exit(1);
  }
  console.log(`${target} is up to date`);
} else {
  await writeFile(target, dts);
  console.log(`wrote ${target}`);
}

// Stages the npm package as it is published and packs it: the files package.json's `files`
// names, the package's README.md, the repository's LICENSE, and a package.json with only what
// an install reads (no devDependencies, no scripts). `npm pack` there writes the tarball next to
// the staged directory; the staged directory is what `npm publish` takes.
//
//   node scripts/stage.mjs OUT_DIR [--version VERSION]
//
// `--version` overrides the version in the staged package.json only (the end-to-end upgrade
// test publishes a next version this way). Prints one JSON line: the tarball, the staged
// directory, the packed and unpacked sizes and the file count.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const repoDir = path.join(packageDir, "..", "..");

/** The keys of package.json an install of the published package reads. */
const PUBLISHED_KEYS = [
  "name",
  "version",
  "description",
  "keywords",
  "homepage",
  "bugs",
  "repository",
  "license",
  "type",
  "exports",
  "main",
  "files",
  "paperclip",
  "engines",
  "os",
  "cpu",
  "libc",
  "peerDependencies",
  "dependencies",
];

function usage() {
  console.error("usage: node scripts/stage.mjs OUT_DIR [--version VERSION]");
  process.exit(2);
}

const args = process.argv.slice(2);
const outDir = args.shift();
if (!outDir) usage();
let version = null;
while (args.length > 0) {
  const arg = args.shift();
  if (arg === "--version" && args.length > 0) version = args.shift();
  else usage();
}

const source = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8"));
const published = Object.fromEntries(PUBLISHED_KEYS.filter((k) => k in source).map((k) => [k, source[k]]));
if (version) published.version = version;

const staged = path.resolve(outDir, "package");
fs.rmSync(staged, { recursive: true, force: true });
fs.mkdirSync(staged, { recursive: true });
// Each `files` entry is a file, a directory (trailing slash) or a `dir/*.ext` glob.
for (const entry of source.files) {
  const from = path.join(packageDir, entry);
  if (entry.includes("*")) {
    const dir = path.dirname(entry);
    const suffix = path.basename(entry).replace(/^\*/, "");
    const names = fs.readdirSync(path.join(packageDir, dir)).filter((n) => n.endsWith(suffix));
    if (names.length === 0) throw new Error(`nothing matches ${entry}: build the addon first (scripts/build-package)`);
    fs.mkdirSync(path.join(staged, dir), { recursive: true });
    for (const name of names) fs.copyFileSync(path.join(packageDir, dir, name), path.join(staged, dir, name));
  } else {
    fs.cpSync(from, path.join(staged, entry), { recursive: true });
  }
}
fs.copyFileSync(path.join(packageDir, "README.md"), path.join(staged, "README.md"));
fs.copyFileSync(path.join(repoDir, "LICENSE"), path.join(staged, "LICENSE"));
fs.writeFileSync(path.join(staged, "package.json"), `${JSON.stringify(published, null, 2)}\n`);

const [packed] = JSON.parse(
  execFileSync("npm", ["pack", "--json", "--pack-destination", path.resolve(outDir)], {
    cwd: staged,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }),
);
console.log(
  JSON.stringify({
    tarball: path.resolve(outDir, packed.filename),
    staged,
    version: published.version,
    packedBytes: packed.size,
    unpackedBytes: packed.unpackedSize,
    files: packed.entryCount,
  }),
);

// Paperclip's runtime skills, made available to OpenCode in the agent pod as files, the way the
// built-in opencode_local adapter does it: each desired skill's directory lands in the skills
// home OpenCode searches (`~/.claude/skills/<name>/SKILL.md`), and OpenCode lists the skills to
// the model and loads one only when it is needed. The prompt stays as small as opencode_local's.
//
// opencode_local symlinks the host's skill directories; those live in Paperclip's install
// (node_modules), which the pod cannot see, so the directories are copied onto the shared
// volume instead. The pod's HOME is the agent's own state directory on the volume (the engine's
// `agentHome`, mounted at the same path in the Paperclip pod and in the agent pod), so each
// agent's skills are copied into its own `<agent home>/.claude/skills`: an agent sees only its
// own skills, and no other agent's run touches them. A skill the agent no longer has is removed
// again; only the copies this adapter made (they carry its stamp) are ever removed.
import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  isPaperclipSkillSourceMissing,
  readPaperclipRuntimeSkillEntries,
  resolveLegacyPaperclipDesiredSkillNames,
} from "@paperclipai/adapter-utils/server-utils";

const moduleDir = path.dirname(fileURLToPath(import.meta.url));

/** Where the shared volume is mounted, in the Paperclip container and in every agent pod. */
export const VOLUME_MOUNT = "/paperclip";

/**
 * Where this process sees the agent's HOME: the engine's `agentHome` (a path below
 * `/paperclip`) moved under `volumeDir`, the volume's mount point in this process (`/paperclip`
 * in the Paperclip pod; another directory in tests).
 */
export function hostAgentHome(agentHome, volumeDir = VOLUME_MOUNT) {
  const below = path.posix.relative(VOLUME_MOUNT, agentHome);
  if (!below || below.startsWith("..") || path.posix.isAbsolute(below)) {
    throw new Error(`the agent home ${agentHome} is not below ${VOLUME_MOUNT}`);
  }
  return path.join(volumeDir, below);
}

/**
 * Create the agent's HOME if this process is first: only its owner may enter it, as the init
 * container's `mkdir -m 700` would make it (which does not change a directory that exists). An
 * existing HOME is left as it is.
 */
async function ensureHome(home) {
  await fs.mkdir(path.dirname(home), { recursive: true });
  await fs.mkdir(home, { mode: 0o700 }).catch((err) => {
    if (err.code !== "EEXIST") throw err;
  });
}

/** Records which source a copied skill came from, so an unchanged skill is not copied again. */
const STAMP = ".opencode-k8s-source";

/** A digest of a directory's files (relative path and contents, symlinks followed). */
async function digest(dir) {
  const hash = createHash("sha256");
  const walk = async (rel) => {
    const entries = await fs.readdir(path.join(dir, rel), { withFileTypes: true });
    entries.sort((a, b) => a.name.localeCompare(b.name));
    for (const entry of entries) {
      const child = path.join(rel, entry.name);
      const stat = await fs.stat(path.join(dir, child));
      if (stat.isDirectory()) {
        await walk(child);
      } else if (stat.isFile()) {
        hash.update(`${child}\0${stat.size}\0`);
        hash.update(await fs.readFile(path.join(dir, child)));
      }
    }
  };
  await walk("");
  return hash.digest("hex");
}

/**
 * Copy `source` to `target` unless `target` already holds the same files. The copy is built
 * next to the target and renamed into place, so a pod starting meanwhile never sees half a skill.
 */
async function install(source, target) {
  const stamp = await digest(source);
  const current = await fs.readFile(path.join(target, STAMP), "utf8").catch(() => null);
  if (current === stamp) return "unchanged";
  const staging = `${target}.tmp-${randomUUID()}`;
  const retired = `${target}.old-${randomUUID()}`;
  try {
    await fs.cp(source, staging, { recursive: true, dereference: true });
    await fs.writeFile(path.join(staging, STAMP), stamp);
    await fs.rename(target, retired).catch((err) => {
      if (err.code !== "ENOENT") throw err;
    });
    await fs.rename(staging, target).catch((err) => {
      // Another run of the instance put the same skill in place meanwhile.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  } finally {
    await fs.rm(staging, { recursive: true, force: true });
    await fs.rm(retired, { recursive: true, force: true });
  }
  return current === null ? "installed" : "refreshed";
}

/** A staging or retired copy of a skill that a run of this instance is replacing right now. */
const IN_FLIGHT = /\.(tmp|old)-[0-9a-f-]{36}$/;

/**
 * Whether `dir`, or a directory between `home` and it, is a symlink. The agent's pod writes its
 * HOME; this process must not follow a link planted there out of it (into another agent's home
 * or the server's files).
 */
async function linkedOut(home, dir) {
  for (let p = dir; p.startsWith(home + path.sep); p = path.dirname(p)) {
    const stat = await fs.lstat(p).catch(() => null);
    if (stat?.isSymbolicLink()) return true;
  }
  return false;
}

/**
 * Remove the skills this adapter copied earlier that are not in `keep`: the directories of
 * `skillsHome` carrying the source stamp. Skills the agent or an operator put there themselves
 * (no stamp) stay. Returns the names removed.
 */
async function removeUnwanted(skillsHome, keep) {
  const entries = await fs.readdir(skillsHome, { withFileTypes: true }).catch(() => []);
  const removed = [];
  for (const entry of entries) {
    if (!entry.isDirectory() || keep.has(entry.name) || IN_FLIGHT.test(entry.name)) continue;
    const dir = path.join(skillsHome, entry.name);
    const stamped = await fs.access(path.join(dir, STAMP)).then(() => true, () => false);
    if (!stamped) continue;
    await fs.rm(dir, { recursive: true, force: true });
    removed.push(entry.name);
  }
  return removed;
}

/**
 * Put the agent's desired runtime skills into `<home>/.claude/skills`, `home` being where this
 * process sees the agent's HOME ([hostAgentHome]), and remove the ones it copied earlier that
 * the agent no longer has. Returns the runtime names of the skills that are there; a skill that
 * cannot be copied is reported through `log` and skipped (the run goes on without it, as with
 * opencode_local), and so is a removal. Nothing is created for an agent without skills.
 */
export async function materializeSkills(config, home, log) {
  const entries = await readPaperclipRuntimeSkillEntries(config, moduleDir);
  const desired = new Set(resolveLegacyPaperclipDesiredSkillNames(config, entries));
  const skillsHome = path.join(home, ".claude", "skills");
  if (await linkedOut(home, skillsHome)) {
    await log(`${skillsHome} or its parent is a symlink; skills are not copied or removed there, and the run goes on without them`);
    return [];
  }
  const wanted = entries.filter((entry) => desired.has(entry.key));
  const present = [];
  for (const entry of wanted) {
    if (isPaperclipSkillSourceMissing(entry)) continue;
    try {
      await ensureHome(home);
      await fs.mkdir(skillsHome, { recursive: true });
      await install(entry.source, path.join(skillsHome, entry.runtimeName));
      present.push(entry.runtimeName);
    } catch (err) {
      await log(`could not copy skill "${entry.key}" into ${skillsHome}: ${err.message}; the run goes on without it`);
    }
  }
  try {
    // A wanted skill whose copy failed keeps the copy it had.
    const keep = new Set(wanted.map((entry) => entry.runtimeName));
    for (const name of await removeUnwanted(skillsHome, keep)) {
      await log(`removed skill "${name}" from ${skillsHome}: the agent no longer has it`);
    }
  } catch (err) {
    await log(`could not remove skills the agent no longer has from ${skillsHome}: ${err.message}`);
  }
  return present;
}

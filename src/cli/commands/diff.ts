import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../../core/errors.js';
import type { ManifestEntry } from '../../manifest/manifest.js';
import { diffManifests, formatDiff, readManifest, type ManifestDiff } from '../../manifest/diff.js';
import { painter } from '../colour.js';
import type { Command } from '../command.js';

/** A manifest file, or a build output directory holding exactly one *.manifest.json. */
async function manifestPath(arg: string): Promise<string> {
  let st;
  try {
    st = await stat(arg);
  } catch {
    throw new UserError(`lhc diff: ${arg} does not exist`);
  }
  if (!st.isDirectory()) return arg;
  const found = (await readdir(arg)).filter((f) => f.endsWith('.manifest.json'));
  if (found.length !== 1) {
    throw new UserError(
      `lhc diff: ${arg} is a directory with ${found.length === 0 ? 'no' : found.length} *.manifest.json files; name the manifest file`,
    );
  }
  return path.join(arg, found[0]!);
}

/** `lhc diff --json` (README, "JSON output"): ok is true when the manifests are identical. */
export function diffJson(d: ManifestDiff, files: { old: string; new: string }) {
  const entry = (section: string, e: ManifestEntry) => ({ section, ...e });
  return {
    ok: d.equal,
    old: files.old,
    new: files.new,
    added: d.added.map((r) => entry(r.section, r.entry)),
    removed: d.removed.map((r) => entry(r.section, r.entry)),
    changed: d.changed.map((c) => ({
      section: c.section,
      path: c.path,
      fields: c.fields,
      before: c.before,
      after: c.after,
    })),
    meta: d.meta,
  };
}

const LINE_COLOUR = { '+': 'green', '-': 'red', '~': 'yellow' } as const;

export const diffCommand: Command = {
  name: 'diff',
  summary: 'compare two image manifests (added, removed, changed paths)',
  help: `Usage: lhc diff OLD NEW [--json]

Compares two manifests written by lhc build (<name>.manifest.json, or a build output directory
holding one) and prints one line per path that differs, image first, then the data template:
  + image /bin/x  file 0755 0:0 1234 bytes      added
  - data  /data/y  file 0644 0:0 10 bytes       removed
  ~ image /gopher/index  size 120 → 130 (+10)   changed (size, mode, owner, content, link target)
Exits 0 when the manifests are identical, 1 when they differ, 2 on a usage error.

Options:
  --json    print {"ok", "old", "new", "added", "removed", "changed", "meta"}`,
  positionals: { min: 2, max: 2, names: 'OLD and NEW' },
  json: true,
  async run({ positionals }, ctx) {
    const [oldFile, newFile] = await Promise.all(positionals.map(manifestPath));
    const d = diffManifests(await readManifest(oldFile!), await readManifest(newFile!));
    if (ctx.json) {
      ctx.emitJson(diffJson(d, { old: oldFile!, new: newFile! }));
      return d.equal ? 0 : 1;
    }
    const paint = painter(ctx.colour);
    for (const line of formatDiff(d, { old: oldFile, new: newFile }).trimEnd().split('\n')) {
      const mark = line[0] as keyof typeof LINE_COLOUR;
      ctx.out(mark in LINE_COLOUR && line[1] === ' ' ? paint(LINE_COLOUR[mark], line) : line);
    }
    return d.equal ? 0 : 1;
  },
};

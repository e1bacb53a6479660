/**
 * Reads lhc.yml: YAML syntax errors and schema errors both come back as a ConfigError whose
 * message names the field path and the line, e.g. `lua.sha256: expected 64 hex characters (lhc.yml:7)`.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineCounter, isMap, isNode, isScalar, parseDocument, visit, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.js';
import { namedPaths, pathProblem, projectRoot } from './confine.js';
import { configSchema, type LhcConfigRaw, type Probe } from './schema.js';

/** A config is a page of settings; a bigger file is a mistake or an attack on the parser. */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** YAML aliases a config may expand: enough for shared anchors, too few for a billion-laughs bomb. */
export const MAX_YAML_ALIASES = 100;

export interface LhcConfig extends Omit<
  LhcConfigRaw,
  'files' | 'probes' | 'data' | 'base' | 'packages'
> {
  /** Absolute path of the config file. */
  file: string;
  /** Directory relative paths in the config are resolved against. */
  dir: string;
  base: LhcConfigRaw['base'];
  files: { src: string; dst: string; mode?: number }[];
  data: { path: string; template?: string };
  probes: Probe[];
  /** Deprecations found while loading, for the shells and stages to show. */
  warnings: string[];
}

export const PACKAGES_RENAMED =
  'packages: renamed to prepare (a command run in the root, unlike base.packages, a list of packages); the old key still works for now';

type PathKey = string | number;

function formatPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out ? `.${String(k)}` : String(k);
  }
  return out || '(top level)';
}

/** Line of the node at `p`, or of its nearest ancestor that exists in the document. */
function lineOf(
  doc: Document,
  lc: LineCounter,
  p: readonly PathKey[],
  key?: string,
): number | undefined {
  for (let n = p.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(p.slice(0, n), true);
    if (!isNode(node) || !node.range) continue;
    if (key !== undefined && n === p.length && isMap(node)) {
      const pair = node.items.find((it) => isScalar(it.key) && it.key.value === key);
      if (pair && isScalar(pair.key) && pair.key.range) return lc.linePos(pair.key.range[0]).line;
    }
    return lc.linePos(node.range[0]).line;
  }
  return undefined;
}

function issueMessages(
  issue: z.core.$ZodIssue,
  doc: Document,
  lc: LineCounter,
  name: string,
): string[] {
  const p = issue.path.filter((k): k is PathKey => typeof k !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const line = lineOf(doc, lc, p, key);
      return `${formatPath([...p, key])}: unknown key${line ? ` (${name}:${line})` : ''}`;
    });
  }
  let message = issue.message;
  if (issue.code === 'invalid_type' && doc.getIn(p, true) === undefined) message = 'required';
  else if (
    issue.code === 'invalid_union' &&
    'note' in issue &&
    issue.note === 'No matching discriminator'
  )
    message = `${message}`;
  const line = lineOf(doc, lc, p);
  return [`${formatPath(p)}: ${message}${line ? ` (${name}:${line})` : ''}`];
}

/** A parsed config and the line of any field in it (for messages about values, not syntax). */
export interface ParsedConfig {
  raw: LhcConfigRaw;
  /** `name:LINE` of the node at `at`, or of its nearest ancestor. */
  where(at: readonly (string | number)[]): string;
}

/** Parses and validates config text; `name` is used in messages (usually the file's base name). */
export function parseConfig(text: string, name = 'lhc.yml'): LhcConfigRaw {
  return parseConfigWithLines(text, name).raw;
}

export function parseConfigWithLines(text: string, name = 'lhc.yml'): ParsedConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const msgs = doc.errors.map((e) => {
      const line = e.linePos?.[0]?.line ?? (e.pos ? lc.linePos(e.pos[0]).line : undefined);
      return `YAML syntax: ${e.message.split('\n')[0]}${line ? ` (${name}:${line})` : ''}`;
    });
    throw new ConfigError(msgs.join('\n'));
  }
  // A YAML 1.2 octal (`mode: 0o644`) would reach the schema as the number 420, which cannot be told
  // from a decimal 420: hand it on as the octal string it was written as.
  visit(doc, {
    Scalar(_key, node) {
      if (node.format === 'OCT' && typeof node.value === 'number') {
        node.value = `0${node.value.toString(8)}`;
      }
    },
  });
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (e) {
    // The yaml package throws a ReferenceError when aliases expand past maxAliasCount.
    if (/alias/i.test((e as Error).message))
      throw new ConfigError(
        `YAML aliases: the config expands more than ${MAX_YAML_ALIASES} aliases (${name}:1); write the values out`,
      );
    throw e;
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(`(top level): expected a mapping of settings (${name}:1)`);
  }
  const result = configSchema.safeParse(data);
  if (!result.success) {
    const msgs = result.error.issues.flatMap((i) => issueMessages(i, doc, lc, name));
    throw new ConfigError(msgs.join('\n'));
  }
  return {
    raw: result.data,
    where: (at) => {
      const line = lineOf(doc, lc, at);
      return line ? `${name}:${line}` : name;
    },
  };
}

/** Reads the config file itself: a regular file of at most MAX_CONFIG_BYTES, checked before parsing. */
async function readConfigText(file: string, abs: string): Promise<string> {
  const fail = (why: string) => new ConfigError(`cannot read config ${file}: ${why}`);
  let fh;
  try {
    // Non-blocking: opening a FIFO for reading would otherwise wait forever for a writer.
    fh = await open(abs, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw fail((e as NodeJS.ErrnoException).code ?? String(e));
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw fail('not a regular file');
    if (st.size > MAX_CONFIG_BYTES)
      throw fail(`${st.size} bytes, more than the cap of ${MAX_CONFIG_BYTES} bytes (1 MiB)`);
    // Read one byte past the cap, so a file that grew after the stat is caught too.
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let len = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, len);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len > MAX_CONFIG_BYTES)
        throw fail(`more than the cap of ${MAX_CONFIG_BYTES} bytes (1 MiB)`);
    }
    return buf.subarray(0, len).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * Every host path the config names (files, fixtures, the data template, a tarball path, file://
 * URLs) must stay in the project: see confine.ts. All problems are reported at once, each with its
 * field and line.
 */
async function confineConfigPaths(parsed: ParsedConfig, abs: string): Promise<void> {
  const dir = path.dirname(abs);
  const root = await projectRoot(dir);
  const errors: string[] = [];
  for (const p of namedPaths(parsed.raw)) {
    const problem = path.isAbsolute(p.value)
      ? `an absolute path (${p.value}); name a path relative to the config's directory, inside the project ${root}`
      : await pathProblem(root, path.resolve(dir, p.value), p.kind, { maxBytes: p.maxBytes });
    if (problem) errors.push(`${p.field}: ${problem} (${parsed.where(p.at)})`);
  }
  const urls: [string, (string | number)[], string[] | undefined][] = [
    ['lua.urls', ['lua', 'urls'], parsed.raw.lua?.urls],
    [
      'base.urls',
      ['base', 'urls'],
      parsed.raw.base.type === 'tarball' ? parsed.raw.base.urls : undefined,
    ],
  ];
  for (const [field, at, list] of urls) {
    for (const [i, u] of (list ?? []).entries()) {
      if (!u.startsWith('file:')) continue;
      let file: string;
      try {
        file = fileURLToPath(u);
      } catch {
        errors.push(`${field}[${i}]: not a valid file:// URL (${parsed.where([...at, i])})`);
        continue;
      }
      const problem = await pathProblem(root, file, 'file');
      if (problem) errors.push(`${field}[${i}]: ${problem} (${parsed.where([...at, i])})`);
    }
  }
  if (errors.some((e) => e.includes('is outside the project')))
    errors.push(
      `(a config reads files only inside its project, here ${root}: the git work tree that holds the config, else the config's own directory)`,
    );
  if (errors.length > 0) throw new ConfigError(errors.join('\n'));
}

/** Loads a config file and resolves its relative paths against its directory. */
export async function loadConfig(file: string): Promise<LhcConfig> {
  const abs = path.resolve(file);
  const text = await readConfigText(file, abs);
  const parsed = parseConfigWithLines(text, path.basename(abs));
  await confineConfigPaths(parsed, abs);
  return resolveConfig(parsed.raw, abs);
}

export function resolveConfig(raw: LhcConfigRaw, file: string): LhcConfig {
  const dir = path.dirname(file);
  const r = (p: string) => path.resolve(dir, p);
  const base =
    raw.base.type === 'tarball' && raw.base.path
      ? { ...raw.base, path: r(raw.base.path) }
      : raw.base;
  const { packages, ...rest } = raw;
  return {
    ...rest,
    prepare: raw.prepare ?? packages,
    warnings: packages !== undefined ? [PACKAGES_RENAMED] : [],
    file,
    dir,
    base,
    files: raw.files.map((f) => ({ ...f, src: r(f.src) })),
    data: { path: raw.data.path, template: raw.data.template ? r(raw.data.template) : undefined },
    probes: raw.probes.map((p) => (p.fixture ? { ...p, fixture: r(p.fixture) } : p)),
    outputs: { ...raw.outputs, dir: r(raw.outputs.dir) },
    board: raw.board ? { ...raw.board, tarball: r(raw.board.tarball) } : undefined,
  };
}

/**
 * Reads lhc.yml: YAML syntax errors and schema errors both come back as a ConfigError whose
 * message names the field path and the line, e.g. `lua.sha256: expected 64 hex characters (lhc.yml:7)`.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, isMap, isNode, isScalar, parseDocument, visit, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.js';
import { configSchema, type LhcConfigRaw, type Probe } from './schema.js';

export interface LhcConfig extends Omit<LhcConfigRaw, 'files' | 'probes' | 'data' | 'base'> {
  /** Absolute path of the config file. */
  file: string;
  /** Directory relative paths in the config are resolved against. */
  dir: string;
  base: LhcConfigRaw['base'];
  files: { src: string; dst: string; mode?: number }[];
  data: { path: string; template?: string };
  probes: Probe[];
}

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

/** Parses and validates config text; `name` is used in messages (usually the file's base name). */
export function parseConfig(text: string, name = 'lhc.yml'): LhcConfigRaw {
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
  const data: unknown = doc.toJS();
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(`(top level): expected a mapping of settings (${name}:1)`);
  }
  const result = configSchema.safeParse(data);
  if (!result.success) {
    const msgs = result.error.issues.flatMap((i) => issueMessages(i, doc, lc, name));
    throw new ConfigError(msgs.join('\n'));
  }
  return result.data;
}

/** Loads a config file and resolves its relative paths against its directory. */
export async function loadConfig(file: string): Promise<LhcConfig> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    throw new ConfigError(
      `cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    );
  }
  const raw = parseConfig(text, path.basename(abs));
  return resolveConfig(raw, abs);
}

export function resolveConfig(raw: LhcConfigRaw, file: string): LhcConfig {
  const dir = path.dirname(file);
  const r = (p: string) => path.resolve(dir, p);
  const base =
    raw.base.type === 'tarball' && raw.base.path
      ? { ...raw.base, path: r(raw.base.path) }
      : raw.base;
  return {
    ...raw,
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

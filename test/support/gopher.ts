/**
 * RFC 1436 shape checks for gophermoon's fixtures and responses, and a way to run the server
 * once (inetd style: request on stdin, response on stdout) under any Lua interpreter.
 *
 * Fixture names carry their kind: NAME.menu.gopher, NAME.error.gopher (a menu of type-3 lines),
 * NAME.text.gopher (type 0) and NAME.binary.gopher (type 9/I, verbatim bytes).
 */
import { execFileSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/tools/exec.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../..');
export const GOPHERMOON_DIR = path.join(REPO, 'examples/gophermoon');
export const GOPHERMOON_SCRIPT = path.join(GOPHERMOON_DIR, 'gophermoon.lua');
export const GOPHERMOON_CONTENT = path.join(GOPHERMOON_DIR, 'content');
export const GOPHERMOON_CONFIG = path.join(GOPHERMOON_DIR, 'lhc.yml');
export const GOPHERMOON_FIXTURES = path.join(REPO, 'fixtures/gophermoon');

/**
 * A copy of the gophermoon example and the fixtures its probes name, in a scratch checkout (a git
 * work tree, so the probes' ../../fixtures stays inside the project). Returns the config's path.
 */
export function copyGophermoonCheckout(dest: string): string {
  cpSync(GOPHERMOON_DIR, path.join(dest, 'examples/gophermoon'), { recursive: true });
  cpSync(GOPHERMOON_FIXTURES, path.join(dest, 'fixtures/gophermoon'), { recursive: true });
  execFileSync('git', ['init', '-q', dest]);
  return path.join(dest, 'examples/gophermoon/lhc.yml');
}

export type FixtureKind = 'menu' | 'error' | 'text' | 'binary';

export function fixtureKind(file: string): FixtureKind | undefined {
  const m = /\.(menu|error|text|binary)\.gopher$/.exec(path.basename(file));
  return m ? (m[1] as FixtureKind) : undefined;
}

/** Item types of RFC 1436 plus the de facto `i` (info) and `h` (HTML). */
const ITEM_TYPES = new Set([...'0123456789+TgIih']);

/**
 * Splits a CRLF response into lines, reporting any bare LF or CR and a missing final CRLF.
 * Returned lines have no line end.
 */
function crlfLines(bytes: Buffer, problems: string[]): string[] {
  const text = bytes.toString('latin1');
  if (!text.endsWith('\r\n')) problems.push('does not end with CRLF');
  const lines = text.split('\r\n');
  lines.pop();
  lines.forEach((l, i) => {
    if (l.includes('\n')) problems.push(`line ${i + 1}: bare LF`);
    if (l.includes('\r')) problems.push(`line ${i + 1}: bare CR`);
  });
  return lines;
}

export interface MenuItem {
  type: string;
  display: string;
  selector: string;
  host: string;
  port: number;
}

/** Parses a menu; `problems` lists every way it is not a well-formed RFC 1436 menu. */
export function parseMenu(bytes: Buffer): { items: MenuItem[]; problems: string[] } {
  const problems: string[] = [];
  const lines = crlfLines(bytes, problems);
  if (lines.at(-1) !== '.') problems.push('last line is not "."');
  else lines.pop();
  const items: MenuItem[] = [];
  lines.forEach((line, i) => {
    const where = `line ${i + 1} (${JSON.stringify(line.slice(0, 40))})`;
    if (line === '.') return problems.push(`${where}: "." before the end`);
    const fields = line.slice(1).split('\t');
    const type = line.slice(0, 1);
    if (!ITEM_TYPES.has(type)) problems.push(`${where}: unknown item type ${JSON.stringify(type)}`);
    if (fields.length !== 4)
      return problems.push(
        `${where}: ${fields.length} TAB-separated fields after the type, expected 4`,
      );
    const [display, selector, host, port] = fields as [string, string, string, string];
    if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)
      problems.push(`${where}: port ${JSON.stringify(port)} is not 1..65535`);
    if (host === '') problems.push(`${where}: empty host`);
    if (Buffer.byteLength(selector, 'latin1') > 255)
      problems.push(`${where}: selector longer than 255 bytes`);
    if (/[\0]/.test(line)) problems.push(`${where}: NUL byte`);
    items.push({ type, display, selector, host, port: Number(port) });
  });
  return { items, problems };
}

/** An error response: a menu whose items are all type 3. */
export function errorProblems(bytes: Buffer): string[] {
  const { items, problems } = parseMenu(bytes);
  if (items.length === 0) problems.push('no type-3 line');
  items.forEach((it, i) => {
    if (it.type !== '3') problems.push(`line ${i + 1}: type ${it.type}, expected 3`);
  });
  return problems;
}

/**
 * Undoes the text transfer encoding: CRLF lines, dot-stuffing and the final "." line.
 * Returns the original lines and every way the encoding is broken.
 */
export function decodeText(bytes: Buffer): { lines: string[]; problems: string[] } {
  const problems: string[] = [];
  const lines = crlfLines(bytes, problems);
  if (lines.at(-1) !== '.') problems.push('last line is not "."');
  else lines.pop();
  const out = lines.map((line, i) => {
    if (line === '.') problems.push(`line ${i + 1}: a lone "." before the end (not dot-doubled)`);
    else if (line.startsWith('.') && !line.startsWith('..'))
      problems.push(`line ${i + 1}: starts with one "." (not dot-doubled)`);
    return line.startsWith('.') ? line.slice(1) : line;
  });
  return { lines: out, problems };
}

/** Lines of a content text file as the server must send them (LF or CRLF ends, maybe no final newline). */
export function sourceLines(bytes: Buffer): string[] {
  const text = bytes.toString('latin1');
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((l) => l.replace(/\r$/, ''));
}

/** The bytes a probe sends: the selector (a search is "selector TAB query") and CRLF. */
export function requestFor(selector: string): Buffer {
  return Buffer.from(`${selector}\r\n`, 'latin1');
}

export interface ServeOptions {
  /** argv prefix that runs a Lua script, e.g. ['lua5.4'] or ['qemu-aarch64-static', '/tmp/lua']. */
  lua: readonly string[];
  root: string;
  host?: string;
  port?: string;
  /** Extra environment (QEMU_STRACE...). */
  env?: Record<string, string>;
  /** argv prefix before the interpreter (e.g. strace). */
  wrapper?: readonly string[];
}

/** Runs gophermoon once with `request` on stdin and returns what it wrote. */
export async function serveOnce(
  request: Buffer,
  opts: ServeOptions,
): Promise<{ stdout: Buffer; stderr: string; exitCode: number }> {
  const argv = [...(opts.wrapper ?? []), ...opts.lua, GOPHERMOON_SCRIPT];
  const r = await run(argv, {
    input: request,
    binary: true,
    reject: false,
    timeoutMs: 60_000,
    env: {
      GOPHER_ROOT: opts.root,
      GOPHER_HOST: opts.host ?? 'localhost',
      GOPHER_PORT: opts.port ?? '70',
      GOPHER_INDEX: undefined,
      ...opts.env,
    },
  });
  return { stdout: r.stdoutBytes, stderr: r.stderr, exitCode: r.exitCode };
}

export interface ExtraRequest {
  name: string;
  /** Raw bytes sent, line end included (or deliberately missing). */
  request: Buffer;
  /** File name in fixtures/gophermoon/. */
  fixture: string;
  /**
   * 'content': the committed content; 'symlinks': a copy of it with symlinks that point outside
   * the root (and one that points inside), re-indexed as a build would, and about.txt grown
   * after indexing (a stale index).
   */
  tree: 'content' | 'symlinks';
}

const raw = (s: string) => Buffer.from(s, 'latin1');

/** Requests lhc.yml's probes cannot express (a probe always sends selector + CRLF). */
export const EXTRA_REQUESTS: readonly ExtraRequest[] = [
  {
    name: 'LF-only line end',
    request: raw('/moon\n'),
    fixture: 'moon.menu.gopher',
    tree: 'content',
  },
  { name: 'empty line, LF only', request: raw('\n'), fixture: 'root.menu.gopher', tree: 'content' },
  {
    name: 'no line end before EOF',
    request: raw('/about.txt'),
    fixture: 'about.text.gopher',
    tree: 'content',
  },
  {
    name: 'data after the line is ignored',
    request: raw('/about.txt\r\n/etc/passwd\r\n'),
    fixture: 'about.text.gopher',
    tree: 'content',
  },
  {
    name: 'Gopher+ request (TAB +) on a menu',
    request: raw('/moon\t+\r\n'),
    fixture: 'moon.menu.gopher',
    tree: 'content',
  },
  {
    name: 'raw NUL in the selector',
    request: raw('/about.txt\0.png\r\n'),
    fixture: 'nul.error.gopher',
    tree: 'content',
  },
  {
    name: 'encoded LF alone',
    request: raw('/moon%0a\r\n'),
    fixture: 'crlf-encoded.error.gopher',
    tree: 'content',
  },
  {
    name: 'encoded slash hides ..',
    request: raw('/moon%2f..%2f..%2fetc%2fpasswd\r\n'),
    fixture: 'dotdot.error.gopher',
    tree: 'content',
  },
  {
    name: 'exactly 255 bytes is not too long',
    request: raw(`/${'b'.repeat(254)}\r\n`),
    fixture: 'not-found.error.gopher',
    tree: 'content',
  },
  {
    name: '256 bytes is too long',
    request: raw(`/${'c'.repeat(255)}\r\n`),
    fixture: 'too-long.error.gopher',
    tree: 'content',
  },
  {
    name: 'line over 1024 bytes',
    request: raw(`/${'a'.repeat(1100)}\r\n`),
    fixture: 'line-too-long.error.gopher',
    tree: 'content',
  },
  {
    name: 'symlink to /etc/passwd',
    request: raw('/archive/passwd\r\n'),
    fixture: 'not-found.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'through a symlinked dir to /etc',
    request: raw('/etc/passwd\r\n'),
    fixture: 'not-found.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'relative symlink climbing out',
    request: raw('/archive/escape/passwd\r\n'),
    fixture: 'not-found.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'symlink to a file outside',
    request: raw('/moon/secret.txt\r\n'),
    fixture: 'not-found.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'symlinked dir itself',
    request: raw('/etc\r\n'),
    fixture: 'not-found.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'symlink pointing inside is not served either',
    request: raw('/moon-link/phases.txt\r\n'),
    fixture: 'not-found.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'file changed after indexing',
    request: raw('/about.txt\r\n'),
    fixture: 'stale.error.gopher',
    tree: 'symlinks',
  },
  {
    name: 'listing leaves symlinks out',
    request: raw('/archive\r\n'),
    fixture: 'archive.menu.gopher',
    tree: 'symlinks',
  },
];

/**
 * Writes gophermoon's content index, ROOT/.index, at build time.
 *
 * Plain Lua cannot list a directory or tell a symlink from a file, so the server trusts this
 * index for both: it only opens paths listed here. The walk uses lstat and never follows a
 * symlink, so every listed path is reachable through real directories inside the root; symlinks,
 * devices, sockets, hidden names (".index" itself included) and names that cannot appear in a
 * Gopher selector are skipped and reported.
 *
 * Format, one line per entry, sorted by path bytes:  TYPE TAB PATH TAB SIZE TAB TITLE
 * TYPE is the RFC 1436 item type ("1" for a directory), SIZE is "-" for a directory, TITLE is
 * what type-7 search matches and shows (empty for gophermaps, which are not searchable).
 *
 * Usage: npx tsx examples/gophermoon/make-index.ts [CONTENT_DIR] [--check]
 */
import { lstat, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const INDEX_NAME = '.index';
const HEADER = '# gophermoon index v1: TYPE TAB PATH TAB SIZE TAB TITLE; written by make-index.ts, do not edit\n';
const TITLE_MAX = 70;

const TYPE_BY_EXT: Record<string, string> = {
  txt: '0', text: '0', md: '0', lua: '0', conf: '0', csv: '0', json: '0', ini: '0', log: '0',
  gif: 'g',
  png: 'I', jpg: 'I', jpeg: 'I', bmp: 'I', webp: 'I',
  html: 'h', htm: 'h',
};

export interface IndexEntry {
  type: string;
  /** "/a/b", relative to the content root. */
  path: string;
  size: number | undefined;
  title: string;
}

export interface ContentIndex {
  entries: IndexEntry[];
  skipped: { path: string; reason: string }[];
  text: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isText(bytes: Buffer): boolean {
  if (bytes.includes(0)) return false;
  try {
    utf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** Item type of a regular file: by extension, else (no extension) text if it looks like UTF-8 text. */
export function itemType(name: string, bytes: Buffer): string {
  const dot = name.lastIndexOf('.');
  if (name === 'gophermap' || dot <= 0) return isText(bytes) ? '0' : '9';
  return TYPE_BY_EXT[name.slice(dot + 1).toLowerCase()] ?? '9';
}

/** Why a name cannot be served (it would be unreachable or corrupt a menu line), or undefined. */
function unservableName(name: string): string | undefined {
  if (name.startsWith('.')) return 'hidden name';
  // Control characters would break menu lines; "%" would be percent-decoded by the server.
  if ([...name].some((ch) => isControl(ch) || ch === '%')) return 'control character or "%" in name';
  return undefined;
}

function isControl(ch: string): boolean {
  const c = ch.codePointAt(0)!;
  return c < 0x20 || c === 0x7f;
}

function cleanTitle(s: string): string {
  // A run of control characters (a TAB, a stray CR) becomes one space.
  let flat = '';
  let inRun = false;
  for (const ch of s) {
    if (!isControl(ch)) flat += ch;
    else if (!inRun) flat += ' ';
    inRun = isControl(ch);
  }
  return [...flat.trim()].slice(0, TITLE_MAX).join('').trimEnd();
}

function firstLine(bytes: Buffer): string {
  const line = bytes.toString('utf8').split('\n').find((l) => l.trim() !== '');
  return line === undefined ? '' : cleanTitle(line);
}

function joinSelector(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/**
 * Display strings of local items in a gophermap, keyed by the canonical path they select,
 * resolved exactly as gophermoon.lua resolves them (relative to the menu's directory).
 */
function gophermapTitles(dir: string, text: string): Map<string, string> {
  const titles = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const tab = line.indexOf('\t');
    if (tab <= 1) continue;
    const display = line.slice(1, tab);
    const [selector = '', host = ''] = line.slice(tab + 1).split('\t');
    if (host !== '' || selector.startsWith('URL:')) continue;
    const abs = selector.startsWith('/') ? selector : joinSelector(dir, selector);
    const canonical = '/' + abs.split('/').filter((s) => s !== '').join('/');
    if (!titles.has(canonical) && display.trim() !== '') titles.set(canonical, cleanTitle(display));
  }
  return titles;
}

function byBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export async function buildIndex(root: string): Promise<ContentIndex> {
  const rootStat = await lstat(root);
  if (!rootStat.isDirectory()) throw new Error(`content root ${root} is not a directory`);
  const entries: IndexEntry[] = [];
  const skipped: { path: string; reason: string }[] = [];
  const firstLines = new Map<string, string>();
  const menuTitles = new Map<string, string>();

  async function walk(dir: string): Promise<void> {
    const names = (await readdir(path.join(root, dir), { encoding: 'buffer' })).sort(Buffer.compare);
    for (const raw of names) {
      let name: string;
      try {
        name = utf8.decode(raw);
      } catch {
        skipped.push({ path: joinSelector(dir, raw.toString('latin1')), reason: 'name is not UTF-8' });
        continue;
      }
      const rel = joinSelector(dir, name);
      if (rel === `/${INDEX_NAME}`) continue;
      const why = unservableName(name);
      if (why) {
        skipped.push({ path: rel, reason: why });
        continue;
      }
      const abs = path.join(root, rel);
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        skipped.push({ path: rel, reason: 'symlink (never followed)' });
      } else if (st.isDirectory()) {
        entries.push({ type: '1', path: rel, size: undefined, title: '' });
        await walk(rel);
      } else if (st.isFile()) {
        const bytes = await readFile(abs);
        const type = itemType(name, bytes);
        entries.push({ type, path: rel, size: bytes.length, title: '' });
        if (name === 'gophermap') {
          for (const [p, t] of gophermapTitles(dir, bytes.toString('utf8'))) if (!menuTitles.has(p)) menuTitles.set(p, t);
        } else if (type === '0') {
          firstLines.set(rel, firstLine(bytes));
        }
      } else {
        skipped.push({ path: rel, reason: 'not a regular file or directory' });
      }
    }
  }
  await walk('/');

  entries.sort((a, b) => byBytes(a.path, b.path));
  for (const e of entries) {
    if (path.posix.basename(e.path) === 'gophermap') continue;
    e.title = menuTitles.get(e.path) || firstLines.get(e.path) || path.posix.basename(e.path);
  }
  const text = HEADER + entries.map((e) => `${e.type}\t${e.path}\t${e.size ?? '-'}\t${e.title}\n`).join('');
  return { entries, skipped, text };
}

async function main(argv: string[]): Promise<number> {
  const check = argv.includes('--check');
  const dirs = argv.filter((a) => a !== '--check');
  const root = path.resolve(dirs[0] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'content'));
  const index = await buildIndex(root);
  for (const s of index.skipped) process.stderr.write(`make-index: skipped ${s.path}: ${s.reason}\n`);
  const file = path.join(root, INDEX_NAME);
  if (check) {
    const current = await readFile(file, 'utf8').catch(() => '');
    if (current !== index.text) {
      process.stderr.write(`make-index: ${file} is stale; regenerate it with: npx tsx ${path.relative(process.cwd(), fileURLToPath(import.meta.url))} ${root}\n`);
      return 1;
    }
    return 0;
  }
  await writeFile(file, index.text);
  process.stderr.write(`make-index: wrote ${index.entries.length} entries to ${file}\n`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`make-index: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}

/**
 * The README's tested examples: a fenced block preceded by `<!-- snippet: NAME -->` (blank lines
 * between them allowed). Tests build each one, so the README cannot drift from what lhc accepts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

export interface Snippet {
  name: string;
  /** The fence's info string, e.g. `yaml`. */
  lang: string;
  body: string;
  /** 1-based line of the marker in the README. */
  line: number;
}

const MARKER = /^<!--\s*snippet:\s*([\w.-]+)\s*-->\s*$/;

/** Every marked block; a marker without a fenced block right after it is an error. */
export function parseSnippets(markdown: string, file = 'README.md'): Map<string, Snippet> {
  const lines = markdown.split('\n');
  const out = new Map<string, Snippet>();
  lines.forEach((line, i) => {
    const name = MARKER.exec(line)?.[1];
    if (!name) return;
    let j = i + 1;
    while (j < lines.length && lines[j]!.trim() === '') j++;
    const fence = /^(```+|~~~+)\s*([\w-]*)\s*$/.exec(lines[j] ?? '');
    if (!fence)
      throw new Error(`${file}:${i + 1}: snippet ${name} is not followed by a fenced block`);
    const end = lines.findIndex((l, k) => k > j && l.trim() === fence[1]);
    if (end < 0) throw new Error(`${file}:${j + 1}: snippet ${name}: the fence is never closed`);
    if (out.has(name)) throw new Error(`${file}:${i + 1}: snippet ${name} appears twice`);
    out.set(name, {
      name,
      lang: fence[2]!,
      body: `${lines.slice(j + 1, end).join('\n')}\n`,
      line: i + 1,
    });
  });
  return out;
}

export function readmeSnippets(repo: string): Map<string, Snippet> {
  const file = path.join(repo, 'README.md');
  return parseSnippets(readFileSync(file, 'utf8'), file);
}

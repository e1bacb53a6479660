/**
 * The job summary as a reader sees it: the markdown src/action/summary.ts writes, rendered the way
 * GitHub renders the subset it uses (raw HTML blocks, nothing else), in a page styled like GitHub's
 * job summary card, then laid out and photographed by headless Chromium.
 *
 * The renderer is deliberately strict: GitHub passes an HTML block through only while CommonMark's
 * HTML-block rules hold (a `<pre>` block runs to `</pre>`, most other tags to the next blank line).
 * Text that would fall out of a block and be read as markdown, an unbalanced tag or a tag GitHub's
 * sanitizer drops is an error here, so a summary that would render broken on GitHub fails the test.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/tools/exec.js';

/** CommonMark HTML block type 6 start tags that summary.ts may use (the rest of the list is unused). */
const BLOCK_TAGS = new Set([
  'details',
  'summary',
  'table',
  'thead',
  'tbody',
  'tr',
  'th',
  'td',
  'h1',
  'h2',
  'h3',
  'h4',
  'h5',
  'h6',
  'p',
  'div',
  'ul',
  'ol',
  'li',
  'hr',
]);

/** Tags GitHub's sanitizer keeps (the part of its allow list a summary would use). */
const ALLOWED_TAGS = new Set([...BLOCK_TAGS, 'pre', 'code', 'a', 'b', 'i', 'strong', 'em', 'br']);
const VOID_TAGS = new Set(['br', 'hr']);

/** Splits markdown into HTML blocks by CommonMark's rules; throws on anything else. */
export function htmlBlocks(markdown: string): string[] {
  const lines = markdown.split('\n');
  const blocks: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === '') {
      i++;
      continue;
    }
    const start = i;
    if (/^<pre(\s|>|$)/i.test(line)) {
      // Type 1: runs to the line that closes it, blank lines included.
      while (i < lines.length && !/<\/pre>/i.test(lines[i]!)) i++;
      if (i === lines.length)
        throw new Error(`summary markdown line ${start + 1}: <pre> is never closed`);
      i++;
    } else {
      const tag = /^<\/?([a-z][a-z0-9]*)(\s|\/?>|$)/i.exec(line)?.[1]?.toLowerCase();
      if (!tag || !BLOCK_TAGS.has(tag))
        throw new Error(
          `summary markdown line ${start + 1} is not inside an HTML block, so GitHub would render it as markdown: ${JSON.stringify(line.slice(0, 80))}`,
        );
      // Type 6: runs to the next blank line.
      while (i < lines.length && lines[i]!.trim() !== '') i++;
    }
    blocks.push(lines.slice(start, i).join('\n'));
  }
  return blocks;
}

/** Throws unless every tag is one GitHub keeps, `a` carries only href, and tags nest properly. */
export function checkTags(html: string): void {
  const stack: string[] = [];
  for (const m of html.matchAll(/<(\/?)([a-z][a-z0-9]*)([^>]*)>/gi)) {
    const [, close, rawName, attrs] = m;
    const name = rawName!.toLowerCase();
    if (!ALLOWED_TAGS.has(name)) throw new Error(`GitHub's sanitizer drops <${name}>`);
    const attrNames = [...attrs!.matchAll(/([a-z-]+)=/gi)].map((a) => a[1]!.toLowerCase());
    const allowed = name === 'a' ? ['href'] : [];
    const dropped = attrNames.filter((a) => !allowed.includes(a));
    if (dropped.length > 0) throw new Error(`GitHub drops ${dropped.join(', ')} on <${name}>`);
    if (VOID_TAGS.has(name)) continue;
    if (!close) stack.push(name);
    else if (stack.pop() !== name) throw new Error(`</${name}> closes the wrong tag`);
  }
  if (stack.length > 0) throw new Error(`unclosed tags: ${stack.join(', ')}`);
}

// Primer's markdown-body rules for what the summary uses, at GitHub's job summary sizes.
const STYLE = `
body { margin: 0; padding: 16px; background: #f6f8fa; color: #1f2328;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
.run { display: flex; gap: 24px; align-items: flex-start; }
.jobs { width: 256px; flex: none; font-size: 14px; padding: 8px 16px; }
.card { flex: 1; min-width: 0; background: #fff; border: 1px solid #d1d9e0; border-radius: 6px; }
.card > header { padding: 16px; font-size: 14px; font-weight: 600; border-bottom: 1px solid #d1d9e0; }
.markdown-body { padding: 16px 24px; font-size: 14px; line-height: 1.5; word-wrap: break-word; }
.markdown-body > :first-child { margin-top: 0 !important; }
.markdown-body > :last-child { margin-bottom: 0 !important; }
.markdown-body h2, .markdown-body h3 { margin-top: 24px; margin-bottom: 16px; font-weight: 600; line-height: 1.25; }
.markdown-body h2 { font-size: 1.5em; padding-bottom: .3em; border-bottom: 1px solid #d1d9e0b3; }
.markdown-body h3 { font-size: 1.25em; }
.markdown-body p, .markdown-body table, .markdown-body pre, .markdown-body details { margin-top: 0; margin-bottom: 16px; }
.markdown-body table { border-spacing: 0; border-collapse: collapse; display: block; width: max-content; max-width: 100%; overflow: auto; }
.markdown-body th, .markdown-body td { padding: 6px 13px; border: 1px solid #d1d9e0; }
.markdown-body th { font-weight: 600; }
.markdown-body tr { background: #fff; border-top: 1px solid #d1d9e0b3; }
.markdown-body tr:nth-child(2n) { background: #f6f8fa; }
.markdown-body code, .markdown-body pre { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace; }
.markdown-body code { padding: .2em .4em; margin: 0; font-size: 85%; white-space: break-spaces; background: #818b981f; border-radius: 6px; }
.markdown-body pre { padding: 16px; overflow: auto; font-size: 85%; line-height: 1.45; background: #f6f8fa; border-radius: 6px; }
.markdown-body pre code { padding: 0; background: transparent; }
.markdown-body summary { cursor: pointer; display: list-item; }
.markdown-body a { color: #0969da; text-decoration: none; }
`;

/**
 * Writes what the page measured into the DOM, where --dump-dom can read it: the page height and,
 * for each top-level block of the summary, its tag, top edge and text.
 */
const MEASURE = `
const blocks = [...document.querySelector('.markdown-body').children].map((e) => ({
  tag: e.tagName.toLowerCase(),
  top: Math.round(e.getBoundingClientRect().top),
  text: e.textContent.replace(/\\s+/g, ' ').trim().slice(0, 4000),
}));
const height = Math.ceil(document.documentElement.getBoundingClientRect().height);
document.body.setAttribute('data-layout', encodeURIComponent(JSON.stringify({ height, blocks })));
`;

/** A page showing the summary the way a job summary card on a run's page does. */
export function summaryPage(markdown: string, job: string): string {
  const body = htmlBlocks(markdown).join('\n');
  checkTags(body);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${job} summary</title><style>${STYLE}</style></head>
<body><div class="run"><nav class="jobs">Summary<br>Jobs<br>· ${job}</nav>
<section class="card"><header>${job} summary</header>
<article class="markdown-body">
${body}
</article></section></div>
<script>${MEASURE}</script></body></html>
`;
}

export interface PageLayout {
  /** Height of the whole page in CSS pixels at the given width. */
  height: number;
  blocks: { tag: string; top: number; text: string }[];
}

export const SCREEN = { width: 1280, height: 1080 };

function chromiumArgv(userDataDir: string, extra: string[]): string[] {
  return [
    'chromium',
    '--headless',
    // Tests run as root, where Chromium refuses its sandbox.
    '--no-sandbox',
    '--disable-gpu',
    '--hide-scrollbars',
    '--force-device-scale-factor=1',
    `--user-data-dir=${userDataDir}`,
    ...extra,
  ];
}

/**
 * Lays the page out at the screen's width (reading back what MEASURE wrote), then screenshots the
 * whole page to `png`.
 */
export async function screenshotPage(html: string, png: string): Promise<PageLayout> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-chromium-'));
  try {
    const page = path.join(dir, 'summary.html');
    await writeFile(page, html);
    const url = `file://${page}`;
    // A short window, so the page's height is its content's, not the window's.
    const dom = await run(
      chromiumArgv(path.join(dir, 'profile'), [
        `--window-size=${SCREEN.width},200`,
        '--dump-dom',
        url,
      ]),
      { timeoutMs: 120_000 },
    );
    const m = /data-layout="([^"]*)"/.exec(dom.stdout);
    if (!m) throw new Error(`chromium --dump-dom did not run the measuring script:\n${dom.stdout}`);
    const layout = JSON.parse(decodeURIComponent(m[1]!)) as PageLayout;
    await run(
      chromiumArgv(path.join(dir, 'profile'), [
        `--window-size=${SCREEN.width},${layout.height}`,
        `--screenshot=${png}`,
        url,
      ]),
      { timeoutMs: 120_000 },
    );
    await readFile(png); // Chromium exits 0 even when it wrote nothing.
    return layout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

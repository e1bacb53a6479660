/**
 * The gophermoon fixtures are hand-written from RFC 1436; this keeps them honest: every menu is a
 * well-formed menu, every text is correctly dot-stuffed and decodes to the content file it
 * stands for, binaries are the content bytes, and every local menu item points at something the
 * content index really has, with the item type the index gives it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import type { GopherProbe } from '../../src/config/schema.js';
import {
  decodeText,
  errorProblems,
  EXTRA_REQUESTS,
  fixtureKind,
  GOPHERMOON_CONFIG,
  GOPHERMOON_CONTENT,
  GOPHERMOON_FIXTURES,
  parseMenu,
  sourceLines,
} from '../support/gopher.js';

const fixtures = readdirSync(GOPHERMOON_FIXTURES)
  .filter((f) => !f.startsWith('.'))
  .sort()
  .map((f) => path.join(GOPHERMOON_FIXTURES, f));
const ofKind = (k: string) => fixtures.filter((f) => fixtureKind(f) === k);
const read = (f: string) => readFileSync(f);
const crlf = (...lines: string[]) => Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1');

/** TYPE and PATH of each committed index line, keyed by PATH. */
function indexTypes(): Map<string, string> {
  const m = new Map<string, string>([['/', '1']]);
  for (const line of readFileSync(path.join(GOPHERMOON_CONTENT, '.index'), 'utf8').split('\n')) {
    const [type, p] = line.split('\t');
    if (type && p && !line.startsWith('#')) m.set(p, type);
  }
  return m;
}

function canonical(selector: string): string {
  return (
    '/' +
    selector
      .split('/')
      .filter((s) => s !== '')
      .join('/')
  );
}

let config: LhcConfig;
let probes: GopherProbe[];
beforeAll(async () => {
  config = await loadConfig(GOPHERMOON_CONFIG);
  probes = config.probes.filter((p): p is GopherProbe => p.type === 'gopher');
});

describe('gophermoon fixtures', () => {
  it('every fixture has a kind and is used by a probe of lhc.yml or an extra request, and every request has a fixture', () => {
    expect(fixtures.length).toBeGreaterThan(10);
    for (const f of fixtures) expect(fixtureKind(f), path.basename(f)).toBeDefined();
    const extras = EXTRA_REQUESTS.map((r) => path.join(GOPHERMOON_FIXTURES, r.fixture));
    const used = new Set([...probes.map((p) => p.fixture), ...extras]);
    for (const f of fixtures)
      expect(used.has(f), `${path.basename(f)} is not used by any probe`).toBe(true);
    for (const p of probes) expect(fixtures, `probe ${p.name}`).toContain(p.fixture);
    for (const f of extras) expect(fixtures).toContain(f);
    expect(probes.length).toBeGreaterThanOrEqual(15);
  });

  it.each(ofKind('menu').map((f) => [path.basename(f), f]))(
    '%s is a well-formed RFC 1436 menu',
    (_n, f) => {
      const { items, problems } = parseMenu(read(f));
      expect(problems).toEqual([]);
      expect(items.length).toBeGreaterThan(0);
    },
  );

  it.each(ofKind('error').map((f) => [path.basename(f), f]))(
    '%s is a type-3 error menu',
    (_n, f) => {
      expect(errorProblems(read(f))).toEqual([]);
    },
  );

  it('local menu items select what the content index has, with the index item type', () => {
    const types = indexTypes();
    for (const f of ofKind('menu')) {
      for (const it of parseMenu(read(f)).items) {
        if (it.type === 'i' || it.host !== 'localhost') continue;
        expect(it.port, `${path.basename(f)}: ${it.display}`).toBe(70);
        if (it.type === '7') {
          expect(it.selector).toBe('/search');
          continue;
        }
        expect(
          types.get(canonical(it.selector)),
          `${path.basename(f)}: ${it.display} -> ${it.selector}`,
        ).toBe(it.type);
      }
    }
  });

  it('text fixtures are dot-stuffed CRLF text ending in "." that decodes to the content file', () => {
    const texts = ofKind('text');
    expect(texts.length).toBeGreaterThan(0);
    let dotLines = 0;
    for (const f of texts) {
      const probe = probes.find((p) => p.fixture === f)!;
      const { lines, problems } = decodeText(read(f));
      expect(problems, path.basename(f)).toEqual([]);
      const source = sourceLines(read(path.join(GOPHERMOON_CONTENT, canonical(probe.selector))));
      expect(lines, path.basename(f)).toEqual(source);
      dotLines += source.filter((l) => l.startsWith('.')).length;
    }
    // The dot-stuffing rule must actually be exercised, including a lone "." line.
    expect(dotLines).toBeGreaterThan(5);
  });

  it('binary fixtures are the content bytes, verbatim (no terminator)', () => {
    const bins = ofKind('binary');
    expect(bins.length).toBeGreaterThan(0);
    for (const f of bins) {
      const probe = probes.find((p) => p.fixture === f)!;
      expect(
        read(f).equals(read(path.join(GOPHERMOON_CONTENT, canonical(probe.selector)))),
        path.basename(f),
      ).toBe(true);
    }
  });
});

describe('the RFC 1436 checkers catch broken responses', () => {
  const ok = (s: string) => `${s}\tsel\tlocalhost\t70`;
  it('accepts a good menu', () => {
    expect(parseMenu(crlf(ok('0A'), 'iinfo\t\terror.host\t1', '.')).problems).toEqual([]);
  });
  it.each([
    ['bare LF line ends', Buffer.from(`${ok('0A')}\n.\n`)],
    ['a missing "." line', crlf(ok('0A'))],
    ['three fields', crlf('0A\tsel\tlocalhost', '.')],
    ['five fields', crlf(`${ok('0A')}\t+`, '.')],
    ['a non-numeric port', crlf('0A\tsel\tlocalhost\tseventy', '.')],
    ['an unknown type', crlf(ok('QA'), '.')],
    ['an empty host', crlf('0A\tsel\t\t70', '.')],
    ['a "." in the middle', crlf(ok('0A'), '.', ok('0B'), '.')],
  ])('rejects a menu with %s', (_n, bytes) => {
    expect(parseMenu(bytes).problems.length).toBeGreaterThan(0);
  });
  it('rejects an error menu with a non-3 line', () => {
    expect(errorProblems(crlf('3oops\t\terror.host\t1', '.'))).toEqual([]);
    expect(errorProblems(crlf('ioops\t\terror.host\t1', '.')).length).toBeGreaterThan(0);
  });
  it('rejects text that is not dot-stuffed or not terminated', () => {
    expect(decodeText(crlf('..a', '.')).problems).toEqual([]);
    expect(decodeText(crlf('.a', '.')).problems.length).toBeGreaterThan(0);
    expect(decodeText(crlf('.', 'b', '.')).problems.length).toBeGreaterThan(0);
    expect(decodeText(crlf('a')).problems.length).toBeGreaterThan(0);
  });
});

/**
 * Globs for `keep`/`drop` paths (node:path.matchesGlob is still experimental in Node 20).
 * Patterns are absolute paths inside the root: `*` and `?` stay within one component, `**`
 * spans components, `[abc]`/`[!abc]` are character classes and `{a,b}` alternatives.
 * A pattern that matches a directory covers everything below it (`keep: [/gopher]`).
 */
import { ConfigError } from '../core/errors.js';

function escapeRe(c: string): string {
  return /[\\^$.*+?()[\]{}|/]/.test(c) ? `\\${c}` : c;
}

export function globToRegExp(pattern: string): RegExp {
  if (!pattern.startsWith('/')) {
    throw new ConfigError(
      `keep/drop pattern '${pattern}' must be an absolute path inside the image (start with "/")`,
    );
  }
  let re = '';
  let braces = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        // `/**/` matches zero or more whole components; a trailing `**` matches anything.
        const slashAfter = pattern[i + 2] === '/';
        re += slashAfter ? '(?:.*/)?' : '.*';
        i += slashAfter ? 2 : 1;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) throw new ConfigError(`keep/drop pattern '${pattern}': unclosed '['`);
      let body = pattern.slice(i + 1, end);
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else if (c === '{') {
      braces++;
      re += '(?:';
    } else if (c === '}' && braces > 0) {
      braces--;
      re += ')';
    } else if (c === ',' && braces > 0) re += '|';
    else re += escapeRe(c);
  }
  if (braces > 0) throw new ConfigError(`keep/drop pattern '${pattern}': unclosed '{'`);
  // Trailing slashes are allowed (`/gopher/`); a match on a directory covers its subtree.
  re = re.replace(/(\\\/)+$/, '');
  return new RegExp(`^${re}(?:/.*)?$`);
}

/** A compiled set of patterns. */
export function globMatcher(patterns: readonly string[]): (p: string) => boolean {
  const res = patterns.map(globToRegExp);
  return (p) => res.some((r) => r.test(p));
}

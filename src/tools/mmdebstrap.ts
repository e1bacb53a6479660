/**
 * mmdebstrap command lines as data, and the apt sources they use.
 * Default sources are the host's own apt mirror (deb822 .sources files), so a build uses the
 * mirror the machine is already configured for (a local mirror, a snapshot, a proxy) instead of a
 * hard-coded one; when the host is not a Debian machine for that suite, mmdebstrap picks its default.
 */

export interface MmdebstrapOptions {
  /** Debian architecture name (arm64, amd64). */
  arch: string;
  suite: string;
  variant: 'minbase' | 'essential' | 'apt';
  packages: readonly string[];
  /** Output tarball path (uncompressed tar). */
  output: string;
  /** One-line apt sources (`deb [opts] URI SUITE COMPONENTS`); empty: mmdebstrap's default mirror. */
  mirrors: readonly string[];
}

export const DEBIAN_ARCH: Record<string, string> = { aarch64: 'arm64', x86_64: 'amd64' };

export function mmdebstrapArgv(o: MmdebstrapOptions): string[] {
  const argv = [
    'mmdebstrap',
    `--arch=${o.arch}`,
    `--variant=${o.variant}`,
    '--format=tar',
    '--quiet',
  ];
  const pkgs = [...new Set(o.packages)].sort();
  if (pkgs.length > 0) argv.push(`--include=${pkgs.join(',')}`);
  argv.push(o.suite, o.output, ...o.mirrors);
  return argv;
}

interface Deb822Stanza {
  [field: string]: string;
}

/** Parses deb822 text (apt .sources): stanzas separated by blank lines, comments dropped. */
export function parseDeb822(text: string): Deb822Stanza[] {
  const stanzas: Deb822Stanza[] = [];
  let cur: Deb822Stanza = {};
  let last: string | undefined;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    if (raw.trim() === '') {
      if (Object.keys(cur).length > 0) stanzas.push(cur);
      cur = {};
      last = undefined;
      continue;
    }
    if (/^\s/.test(raw) && last) {
      cur[last] += `\n${raw.trim()}`;
      continue;
    }
    const m = /^([\w-]+):\s*(.*)$/.exec(raw);
    if (!m) continue;
    last = m[1]!.toLowerCase();
    cur[last] = m[2]!.trim();
  }
  if (Object.keys(cur).length > 0) stanzas.push(cur);
  return stanzas;
}

/**
 * One-line sources for `suite` built from the host's deb822 sources: every `deb` stanza whose
 * suites include `suite` (or `suite-updates`/`suite-security`) contributes its URIs with those
 * suites. Empty when the host has no source for this suite.
 */
export function hostMirrorLines(deb822Text: string, suite: string): string[] {
  const lines: string[] = [];
  for (const s of parseDeb822(deb822Text)) {
    if (!(s.types ?? '').split(/\s+/).includes('deb')) continue;
    if ((s.enabled ?? 'yes').toLowerCase() === 'no') continue;
    const suites = (s.suites ?? '')
      .split(/\s+/)
      .filter((x) => x === suite || x.startsWith(`${suite}-`));
    if (suites.length === 0) continue;
    const opts =
      s['signed-by'] && !s['signed-by'].includes('\n') ? ` [signed-by=${s['signed-by']}]` : '';
    for (const uri of (s.uris ?? '').split(/\s+/).filter(Boolean)) {
      for (const x of suites) lines.push(`deb${opts} ${uri} ${x} ${s.components ?? 'main'}`);
    }
  }
  return lines;
}

/**
 * `systemd-analyze security --offline=true`: systemd's exposure score (0 = fully sandboxed,
 * 10 = not at all) of a unit file, read from the file itself without loading it into a running
 * manager. `--offline` needs systemd 250 or newer (Debian 12 has 252).
 */
import { run } from './exec.js';

export interface ExposureScore {
  /** The unit as systemd-analyze names it (a template file is scored as its `@i` instance). */
  unit: string;
  /** 0.0 (SAFE) to 10.0 (UNSAFE). */
  score: number;
  /** systemd's word for the score: SAFE, OK, MEDIUM, EXPOSED, UNSAFE. */
  level: string;
}

export function securityArgv(unitFile: string): string[] {
  return ['systemd-analyze', 'security', '--offline=true', '--no-pager', unitFile];
}

/** The "Overall exposure level for UNIT: SCORE LEVEL" line of systemd-analyze security. */
export function parseExposure(text: string): ExposureScore | undefined {
  const m = /Overall exposure level for (\S+): (\d+(?:\.\d+)?) ([A-Z]+)/.exec(text);
  return m ? { unit: m[1]!, score: Number(m[2]), level: m[3]! } : undefined;
}

/** The systemd version systemd-analyze belongs to ("systemd 252 (252.39-1~deb12u2)" -> "252.39-1~deb12u2"). */
export function parseSystemdVersion(text: string): string | undefined {
  const m = /^systemd (\d+)(?: \(([^)]+)\))?/m.exec(text);
  return m ? (m[2] ?? m[1]) : undefined;
}

export async function systemdVersion(): Promise<string | undefined> {
  const r = await run(['systemd-analyze', '--version'], { reject: false, timeoutMs: 30_000 });
  return r.exitCode === 0 ? parseSystemdVersion(r.stdout) : undefined;
}

/** The exposure score of one unit file (absolute path; the file's own directory is not searched). */
export async function exposureScore(unitFile: string): Promise<ExposureScore> {
  const r = await run(securityArgv(unitFile), {
    timeoutMs: 60_000,
    env: { SYSTEMD_COLORS: '0', LC_ALL: 'C' },
  });
  const s = parseExposure(r.stdout);
  if (!s)
    throw new Error(`systemd-analyze security printed no overall exposure level for ${unitFile}`);
  return s;
}

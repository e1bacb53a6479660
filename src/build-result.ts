/** What a whole build returns: the shells (CLI, action) report it, the tests assert on it. */
import type { RecordedFixture } from './stages/record-fixtures.js';
import type { ExposureReport } from './deploy/exposure.js';

export interface HardeningCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ProbeOutcome {
  name: string;
  ok: boolean;
  /** Readable unified diff (CR, TAB, non-printables made visible) when !ok. */
  diff?: string;
  bytes: number;
}

export interface VerifyReport {
  ok: boolean;
  probes: ProbeOutcome[];
  hardening: HardeningCheck[];
  load?: {
    requests: number;
    concurrency: number;
    failures: number;
    p50ms: number;
    p95ms: number;
    p99ms: number;
  };
}

/** The report plus what the CLI prints beyond the shared VerifyReport shape. */
export interface VerifyOutcome extends VerifyReport {
  load?: NonNullable<VerifyReport['load']> & { firstFailure?: string; wallMs: number };
  /** The real-client check (curl) of the first probe; also among `probes`. */
  curl?: ProbeOutcome;
  /** Where the service was reached, e.g. 127.0.0.1:40123 or unix:/tmp/.../service.sock. */
  endpoint?: string;
  /** The first probe's answer from the booted image, byte for byte (e.g. for the demo to print). */
  sample?: { probe: string; body: Buffer };
  /** Last lines of the container's stderr (nspawn and the payload), when something failed. */
  serviceLog?: string;
}

export interface BuildResult {
  name: string;
  outDir: string;
  image: string;
  imageSha256: string;
  imageBytes: number;
  dataTemplate: string;
  dataTemplateSha256: string;
  manifest: string;
  /** SHA256SUMS over the outputs; absent when the build failed, so a failed image cannot pass a check. */
  sha256sums?: string;
  /** `<name>.build-failed.txt` in the output dir, when the build failed (what failed, with diffs). */
  failureReport?: string;
  /** Directory with the board's deploy bundle (units, fstab, OCI config). */
  bundleDir: string;
  traceReport: string;
  /** systemd-analyze security's exposure score of each service unit (also <name>.exposure.json). */
  exposure?: ExposureReport;
  /** Bytes of the assembled root before pruning, and of the pruned root. */
  bytesBefore: number;
  bytesAfter: number;
  filesKept: number;
  /** Text of the manifest diff against the lock, when a lock was given and differs (or was updated). */
  manifestDiff?: string;
  /** The manifest lock given, and whether this build rewrote it (update requested and changed). */
  manifestLock?: { path: string; updated: boolean };
  verify?: VerifyReport;
  /** With --update-fixtures: every probe fixture and whether this build wrote it. */
  fixtures?: RecordedFixture[];
  /** Seconds per stage, in pipeline order. */
  timings: { stage: string; seconds: number }[];
}

/** Why verify failed, one line a failing probe or hardening check (with its diff); '' when ok. */
export function verifyFailures(verify: VerifyReport): string {
  return [
    ...verify.probes
      .filter((p) => !p.ok)
      .map((p) => `probe ${p.name}${p.diff ? `\n${p.diff}` : ''}`),
    ...verify.hardening.filter((h) => !h.ok).map((h) => `hardening ${h.name}: ${h.detail}`),
    ...(verify.load && verify.load.failures > 0
      ? [`load: ${verify.load.failures} of ${verify.load.requests} requests failed`]
      : []),
  ].join('\n');
}

/** A lock was given, the manifest differs from it and the lock was not rewritten. */
export function manifestLockFailed(r: Pick<BuildResult, 'manifestDiff' | 'manifestLock'>): boolean {
  return r.manifestDiff !== undefined && r.manifestLock !== undefined && !r.manifestLock.updated;
}

/** True unless the manifest lock or verify failed. */
export function buildOk(r: Pick<BuildResult, 'manifestDiff' | 'manifestLock' | 'verify'>): boolean {
  return !manifestLockFailed(r) && (r.verify ? r.verify.ok : true);
}

/**
 * Everything that failed, lock first, with its diff; '' when the build passed. `updateHint` is
 * how this shell's user rewrites the lock (`--update-manifest`, the `update-manifest` input).
 */
export function buildFailures(
  r: Pick<BuildResult, 'manifestDiff' | 'manifestLock' | 'verify'>,
  updateHint: string,
): string {
  const parts: string[] = [];
  if (manifestLockFailed(r))
    parts.push(
      `the built image differs from the manifest lock ${r.manifestLock!.path}:\n${r.manifestDiff!.trimEnd()}\n` +
        `if the change is intended, rebuild with ${updateHint} and commit the lock`,
    );
  if (r.verify && !r.verify.ok) parts.push(`verify failed:\n${verifyFailures(r.verify)}`);
  return parts.join('\n\n');
}

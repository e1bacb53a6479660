/** Sending the probes and judging the answers against the fixtures, byte for byte. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ProbeOutcome } from '../build-result.js';
import type { GopherProbe, HttpProbe, Probe } from '../config/schema.js';
import { RECORD_FIXTURES_HINT } from '../config/check-files.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { run } from '../tools/exec.js';
import {
  askProbe,
  describeEndpoint,
  gopherUrl,
  type Endpoint,
  type ProbeResponse,
} from '../harness/client.js';
import type { Running } from '../harness/service.js';
import { visibleDiff } from '../harness/diff.js';

export async function readFixtures(probes: Probe[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const p of probes) {
    if (!p.fixture) continue;
    try {
      out.set(p.name, await readFile(p.fixture));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UserError(
        `probe ${p.name}: cannot read fixture ${p.fixture}: ${code ?? String(e)}` +
          (code === 'ENOENT' ? `; ${RECORD_FIXTURES_HINT}` : ''),
      );
    }
  }
  return out;
}

/** Checks one answer; undefined when right, else a readable reason (a visible diff for bodies). */
export function judge(
  probe: Probe,
  expected: Buffer | undefined,
  got: ProbeResponse,
  via: string,
): string | undefined {
  const problems: string[] = [];
  if (probe.type === 'http' && got.status !== probe.status)
    problems.push(`HTTP status ${got.status}, expected ${probe.status}`);
  if (expected) {
    const diff = visibleDiff(expected, got.body, {
      expected: `fixture ${probe.fixture}`,
      actual: `response (${via})`,
    });
    if (diff) problems.push(diff);
  }
  return problems.length ? problems.join('\n') : undefined;
}

export async function probeOnce(
  probe: Probe,
  expected: Buffer | undefined,
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ outcome: ProbeOutcome; body?: Buffer; response?: ProbeResponse }> {
  try {
    const got = await askProbe(probe, { endpoint }, { timeoutMs, signal });
    const problem = judge(probe, expected, got, describeEndpoint(endpoint));
    return {
      outcome: {
        name: probe.name,
        ok: problem === undefined,
        diff: problem,
        bytes: got.body.length,
      },
      body: got.body,
      response: got,
    };
  } catch (e) {
    signal?.throwIfAborted();
    return {
      outcome: {
        name: probe.name,
        ok: false,
        diff: `no answer: ${(e as Error).message}`,
        bytes: 0,
      },
    };
  }
}

/** The first probe a real client (curl) can fetch: gopher or http; raw tcp has no URL. */
export function curlable(probes: Probe[]): GopherProbe | HttpProbe | undefined {
  return probes.find((p): p is GopherProbe | HttpProbe => p.type !== 'tcp');
}

/** A probe once more through a real client (curl), the way a user would fetch it. */
export async function curlProbe(
  probe: GopherProbe | HttpProbe,
  expected: Buffer | undefined,
  svc: Running,
  workDir: string,
  opts: { logger: Logger; signal?: AbortSignal },
  timeoutMs: number,
): Promise<ProbeOutcome> {
  const { host, port } = svc.clientTarget;
  const name = `${probe.name} (curl)`;
  const seconds = String(Math.ceil(timeoutMs / 1000));
  const bodyFile = path.join(workDir, 'curl-body');
  const url =
    probe.type === 'gopher'
      ? gopherUrl(host, port, probe.selector)
      : `http://${host}:${port}${probe.path}`;
  const curl = [
    'curl',
    '-sS',
    '--max-time',
    seconds,
    '-o',
    bodyFile,
    ...(probe.type === 'http' ? ['-w', '%{http_code}'] : []),
    url,
  ];
  const { argv, privileged } = svc.clientArgv(curl);
  const r = await run(argv, {
    privileged,
    logger: opts.logger,
    reject: false,
    signal: opts.signal,
    timeoutMs: timeoutMs + 5_000,
  });
  if (r.exitCode !== 0)
    return {
      name,
      ok: false,
      diff: `${r.command} failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
      bytes: 0,
    };
  const body = await readFile(bodyFile);
  const status = probe.type === 'http' ? Number(r.stdout.trim()) : undefined;
  const problem = judge(probe, expected, { status, body }, 'curl');
  return { name, ok: problem === undefined, diff: problem, bytes: body.length };
}

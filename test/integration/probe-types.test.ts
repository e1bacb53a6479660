/**
 * http probes on an inetd service and tcp probes on inetd and listening services (issue 14),
 * built end to end on the Alpine-shaped aarch64 root: traced (the inetd run writes each request on
 * the container's stdin and parses the HTTP answer from its stdout), pruned, self-checked,
 * packed and verified over real sockets. The service is test/support/probe-service.sh under
 * busybox sh (see test/support/probe-service.ts).
 */
import { writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { withScratchContext } from '../../src/core/stage.js';
import { verifyImage } from '../../src/stages/verify.js';
import { run } from '../../src/tools/exec.js';
import {
  buildProbeService,
  INDEX,
  INETD_SERVICE,
  PING_ECHO_ANSWER,
  PING_ECHO_SEND,
  probeServiceProject,
} from '../support/probe-service.js';
import { requireTool } from '../support/require-tool.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await run(['rm', '-rf', '--one-file-system', d], { privileged: true });
});

describe('an inetd HTTP service with http and tcp probes', () => {
  let tmp: string;
  let r: BuildResult;

  beforeAll(async () => {
    await requireTool('systemd-nspawn');
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-probes-inetd-'));
    dirs.push(tmp);
    const file = await probeServiceProject(tmp, {
      service: INETD_SERVICE,
      probes: `  - {name: index, type: http, path: /index.txt, fixture: fixtures/index.txt}
  - {name: missing, type: http, path: /nope.txt, status: 404, fixture: fixtures/404.txt}
  - {name: ping-echo, type: tcp, send: "${PING_ECHO_SEND}", fixture: fixtures/ping-echo.txt}`,
    });
    r = await buildProbeService(tmp, file);
  }, 1_200_000);

  it('traces, self-checks and verifies every probe, curl included', () => {
    expect(r.verify?.probes.filter((p) => !p.ok)).toEqual([]);
    expect(r.verify!.probes.map((p) => p.name)).toEqual([
      'index',
      'missing',
      'ping-echo',
      'index (curl)',
    ]);
    expect(r.verify!.probes.find((p) => p.name === 'ping-echo')!.bytes).toBe(
      PING_ECHO_ANSWER.length,
    );
    expect(r.verify!.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(r.verify!.ok).toBe(true);
  });

  it('fails verify, with a visible diff, when the pruned image answers otherwise', async () => {
    writeFileSync(path.join(tmp, 'fixtures/ping-echo.txt'), '+PONG\r\nhello there\r\n');
    writeFileSync(path.join(tmp, 'fixtures/index.txt'), 'something else\n');
    const config = await loadConfig(path.join(tmp, 'lhc.yml'));
    const outcome = await withScratchContext({ logger: memoryLogger() }, (ctx) =>
      verifyImage(ctx, { config, image: r.image, dataTemplate: r.dataTemplate }),
    );
    expect(outcome.ok).toBe(false);
    const failed = Object.fromEntries(
      outcome.probes.filter((p) => !p.ok).map((p) => [p.name, p.diff]),
    );
    expect(Object.keys(failed).sort()).toEqual(['index', 'index (curl)', 'ping-echo']);
    expect(failed['ping-echo']).toContain('-ERR unknown command\\r');
    expect(failed['index']).toContain('+index of the probe service');
  }, 300_000);
});

describe('a listening service with tcp probes (busybox nc -ll)', () => {
  let r: BuildResult;

  beforeAll(async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-probes-listen-'));
    dirs.push(tmp);
    const file = await probeServiceProject(tmp, {
      service:
        '  command: [/bin/busybox, nc, -ll, -p, "6379", -e, /bin/sh, /srv/serve.sh]\n  listen: 6379',
      probes: `  - {name: ping-echo, type: tcp, send: "${PING_ECHO_SEND}", fixture: fixtures/ping-echo.txt}
  - {name: kept-open, type: tcp, send: "PING\\r\\n", half-close: false, idle-timeout: 1, fixture: fixtures/pong.txt}
  - {name: index, type: http, path: /index.txt, fixture: fixtures/index.txt}`,
    });
    r = await buildProbeService(tmp, file);
  }, 1_200_000);

  it('ends a half-closed exchange at the close and an open one at the idle limit', () => {
    expect(r.verify?.probes.filter((p) => !p.ok)).toEqual([]);
    expect(r.verify!.probes.map((p) => [p.name, p.bytes])).toEqual([
      ['ping-echo', PING_ECHO_ANSWER.length],
      ['kept-open', '+PONG\r\n'.length],
      ['index', INDEX.length],
      ['index (curl)', INDEX.length],
    ]);
    expect(r.verify!.ok).toBe(true);
  });
});

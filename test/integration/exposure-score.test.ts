/**
 * The exposure scores of the generated service units, from real `systemd-analyze security
 * --offline=true` on the unit files writeDeployBundle() writes: the systemd runtime's units
 * (inetd and listen) must score 2.0 ("OK") or lower; the nspawn runtime's unit scores far above,
 * which shows the threshold can fail. No root needed; systemd-analyze must be 250 or newer.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ACCEPT_PATH } from '../../src/accept/accept-elf.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/config/schema.js';
import { memoryLogger } from '../../src/core/logger.js';
import { writeDeployBundle, type ServiceSpec } from '../../src/deploy/bundle.js';
import { EXPOSURE_GOAL, scoreUnits } from '../../src/deploy/exposure.js';
import { run } from '../../src/tools/exec.js';
import { requireTool } from '../support/require-tool.js';

let tmp: string;

beforeAll(async () => {
  await requireTool('systemd-analyze', 'systemd');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-exposure-'));
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const gophermoon: ServiceSpec = {
  command: ['/bin/lua', '/bin/gophermoon'],
  env: { GOPHER_ROOT: '/gopher' },
  inetd: true,
  timeout: 60,
};
const nginx: ServiceSpec = {
  command: ['/usr/sbin/nginx', '-e', '/data/error.log', '-g', 'daemon off;'],
  listen: 80,
  timeout: 120,
};

async function scores(name: string, service: ServiceSpec, runtime: Runtime) {
  const outDir = path.join(tmp, `${name}-${runtime}`);
  const bundle = await writeDeployBundle({
    name,
    outDir,
    service,
    imageFile: `${name}.squashfs`,
    dataTemplateFile: `${name}-data.tar.gz`,
    runtime,
  });
  const units = [bundle.units.service, ...(bundle.units.proxy ? [bundle.units.proxy] : [])];
  const logger = memoryLogger();
  const report = await scoreUnits(
    outDir,
    units.map((u) => `deploy/${u}`),
    runtime,
    logger,
  );
  expect(report, JSON.stringify(logger)).toBeDefined();
  return report!;
}

describe('systemd-analyze security --offline=true on the generated units', () => {
  it('runs here (systemd 250 or newer)', async () => {
    const v = await run(['systemd-analyze', '--version']);
    expect(Number(/^systemd (\d+)/.exec(v.stdout)?.[1])).toBeGreaterThanOrEqual(250);
  });

  it(`scores the systemd runtime's inetd service ${EXPOSURE_GOAL} or lower`, async () => {
    const r = await scores('gophermoon', gophermoon, 'systemd');
    expect(r.units.map((u) => u.unit)).toEqual(['gophermoon.service']);
    const [u] = r.units;
    expect(u!.score, `${u!.unit}: ${u!.score} ${u!.level}`).toBeLessThanOrEqual(EXPOSURE_GOAL);
    expect(['SAFE', 'OK']).toContain(u!.level);
    console.log(`exposure, runtime systemd, inetd: ${u!.unit} ${u!.score} ${u!.level}`);
  });

  it(`scores the systemd runtime's listening service ${EXPOSURE_GOAL} or lower`, async () => {
    const r = await scores('nginx', nginx, 'systemd');
    expect(r.units.map((u) => u.unit)).toEqual(['nginx.service', 'nginx-proxy.service']);
    for (const u of r.units) {
      expect(u.score, `${u.unit}: ${u.score} ${u.level}`).toBeLessThanOrEqual(EXPOSURE_GOAL);
      console.log(`exposure, runtime systemd, listen: ${u.unit} ${u.score} ${u.level}`);
    }
  });

  it('the systemd runtime units pass systemd-analyze verify without a warning', async () => {
    for (const [name, service] of [
      ['gophermoon', gophermoon],
      ['nginx', nginx],
    ] as const) {
      const dir = path.join(tmp, `${name}-systemd`, 'deploy');
      await scores(name, service, 'systemd');
      const units = (await readdir(dir)).filter((f) => /\.(service|socket|mount)$/.test(f));
      const r = await run(['systemd-analyze', 'verify', ...units.map((u) => `./${u}`)], {
        cwd: dir,
        reject: false,
      });
      // verify looks for ExecStart= on the host, not under RootDirectory=: the payload lives in
      // the image, so a "not executable" line for exactly that command is expected (and only it):
      // an inetd service's is lhc-accept, which starts the service's command per connection.
      const program = service.inetd ? ACCEPT_PATH : service.command[0];
      const own = `: Command ${program} is not executable: No such file or directory`;
      const lines = (r.stdout + r.stderr).split('\n').filter((l) => l.trim() && !l.endsWith(own));
      expect([name, lines]).toEqual([name, []]);
    }
  });

  it("scores the nspawn runtime far above: systemd-analyze does not see nspawn's confinement", async () => {
    const r = await scores('gophermoon', gophermoon, 'nspawn');
    const [u] = r.units;
    expect(u!.score).toBeGreaterThan(EXPOSURE_GOAL);
    console.log(`exposure, runtime nspawn, inetd: ${u!.unit} ${u!.score} ${u!.level}`);
  });
});

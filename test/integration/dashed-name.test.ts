/**
 * A service whose name has a "-" builds end to end (issue 14): the gophermoon example renamed
 * `gopher-moon` is traced, pruned, packed, verified and bundled; `sha256sum -c` accepts the
 * SHA256SUMS that lists its `\x2d`-escaped mount units, and those unit names are what
 * systemd-escape gives for the board paths.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { build } from '../../src/pipeline.js';
import { run } from '../../src/tools/exec.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { copyGophermoonCheckout } from '../support/gopher.js';
import { requireTool } from '../support/require-tool.js';

const NAME = 'gopher-moon';

describe(`a dashed service name (${NAME}) end to end`, () => {
  let tmp: string;
  let r: BuildResult;

  beforeAll(async () => {
    await requireTool('sha256sum');
    await requireTool('systemd-escape');
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-dashed-'));
    const configFile = copyGophermoonCheckout(tmp);
    const yaml = readFileSync(configFile, 'utf8');
    expect(yaml).toMatch(/^name: gophermoon$/m);
    writeFileSync(configFile, yaml.replace(/^name: gophermoon$/m, `name: ${NAME}`));
    const { cacheDir, store } = await seededBuildCache();
    r = await build(await loadConfig(configFile), {
      outDir: path.join(tmp, 'out'),
      logger: memoryLogger(),
      store,
      cacheDir,
      env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
    });
  }, 1_800_000);

  afterAll(async () => {
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  it('verifies: every probe and hardening check passed', () => {
    expect(r.name).toBe(NAME);
    expect(r.verify?.ok).toBe(true);
    expect(r.verify!.probes.filter((p) => !p.ok)).toEqual([]);
    expect(r.verify!.hardening.filter((h) => !h.ok)).toEqual([]);
  });

  it('writes SHA256SUMS that sha256sum -c accepts, deploy units included', async () => {
    const sums = readFileSync(r.sha256sums!, 'utf8');
    expect(sums).toContain('x2dmoon-data.mount\n');
    const check = await run(['sha256sum', '-c', 'SHA256SUMS'], {
      cwd: path.dirname(r.sha256sums!),
      reject: false,
    });
    expect(check.stderr).toBe('');
    expect(check.exitCode).toBe(0);
    const listed = sums.trimEnd().split('\n').length;
    expect(check.stdout.trimEnd().split('\n')).toHaveLength(listed);
    expect(check.stdout).not.toMatch(/FAILED/);
  });

  it('names the mount units as systemd-escape --path does, Where= matching', async () => {
    const units = readdirSync(r.bundleDir).filter((f) => f.endsWith('.mount'));
    expect(units).toHaveLength(2);
    for (const where of [`/var/lib/lhc/${NAME}/root`, `/var/lib/lhc/${NAME}/data`]) {
      const escaped = (await run(['systemd-escape', '--path', '--', where])).stdout.trim();
      const unit = `${escaped}.mount`;
      expect(units).toContain(unit);
      expect(readFileSync(path.join(r.bundleDir, unit), 'utf8')).toMatch(
        new RegExp(`^Where=${where}$`, 'm'),
      );
    }
  });
});

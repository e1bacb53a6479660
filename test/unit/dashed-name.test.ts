/**
 * A service name with "-" (issue 14): its mount units are named with `\x2d`, so SHA256SUMS must
 * escape the way GNU sha256sum does, and the deploy README's shell commands must pass such names
 * through unchanged. Checked against the real coreutils and systemd-escape binaries.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  boardPaths,
  writeDeployBundle,
  type DeployBundleOptions,
} from '../../src/deploy/bundle.js';
import { systemdEscapePath } from '../../src/deploy/systemd.js';
import { writeSha256Sums } from '../../src/stages/outputs.js';
import { sha256sumsLine } from '../../src/stages/sha256sums-line.js';
import { run } from '../../src/tools/exec.js';
import { requireTool } from '../support/require-tool.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lhc-dashed-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('SHA256SUMS with names sha256sum has to escape', () => {
  const dir = path.join(tmp, 'sums');
  const names = [
    'deploy/var-lib-lhc-my\\x2dservice-data.mount',
    'deploy/my-service@.service',
    'two\\\\backslashes',
    'new\nline',
    'carriage\rreturn',
    'plain.squashfs',
  ];
  mkdirSync(path.join(dir, 'deploy'), { recursive: true });
  for (const [i, n] of names.entries()) writeFileSync(path.join(dir, n), `content ${i}\n`);

  it('is byte for byte what GNU sha256sum prints for the same files', async () => {
    await requireTool('sha256sum');
    const out = await writeSha256Sums(dir, names);
    const sorted = [...names].sort();
    const gnu = await run(['sha256sum', '--', ...sorted], { cwd: dir });
    expect(readFileSync(out, 'utf8')).toBe(gnu.stdout);
    expect(readFileSync(out, 'utf8')).toContain(
      '  deploy/var-lib-lhc-my\\\\x2dservice-data.mount\n',
    );
  });

  it('is accepted by sha256sum -c, and a changed file is caught', async () => {
    await requireTool('sha256sum');
    await writeSha256Sums(dir, names);
    const ok = await run(['sha256sum', '-c', 'SHA256SUMS'], { cwd: dir, reject: false });
    expect(ok.stderr).toBe('');
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout.split('\n').filter((l) => l.endsWith(': OK'))).toHaveLength(names.length);
    writeFileSync(path.join(dir, 'deploy/var-lib-lhc-my\\x2dservice-data.mount'), 'changed\n');
    const bad = await run(['sha256sum', '-c', 'SHA256SUMS'], { cwd: dir, reject: false });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stdout).toContain('x2dservice-data.mount: FAILED');
  });

  it('leaves ordinary names alone', () => {
    expect(sha256sumsLine('ab', 'x.squashfs')).toBe('ab  x.squashfs');
    expect(sha256sumsLine('ab', 'a\\b\nc')).toBe('\\ab  a\\\\b\\nc');
  });
});

describe('unit names for a dashed service', () => {
  it('are what systemd-escape --path prints', async () => {
    await requireTool('systemd-escape');
    const paths = [
      '/var/lib/lhc/gopher-moon/root',
      '/var/lib/lhc/gopher-moon/data/',
      '/var/lib/lhc/a-b-c/data',
      '/srv/.hidden/a b',
      '/.x/é',
      '//double//slash/',
      '/',
    ];
    for (const p of paths) {
      const expected = (await run(['systemd-escape', '--path', '--', p])).stdout.trim();
      expect(systemdEscapePath(p), p).toBe(expected);
    }
  });
});

describe("the deploy README's shell commands with a dashed name", () => {
  const opts: DeployBundleOptions = {
    name: 'my-service',
    outDir: path.join(tmp, 'out'),
    imageFile: 'my-service.squashfs',
    dataTemplateFile: 'my-service-data.tar.gz',
    service: { command: ['/bin/lua', '/bin/server'], inetd: true },
  };

  /** Runs one README line with `cmd` replaced by a function that prints its arguments. */
  async function argsOf(line: string, cmd: string): Promise<string[]> {
    const script = `${cmd}() { printf '%s\\n' "$@"; }\n${line}`;
    const r = await run(['sh', '-c', script], { cwd: opts.outDir });
    return r.stdout.split('\n').filter((l) => l !== '');
  }

  it('install and enable the units the bundle wrote, under their exact names', async () => {
    const bundle = await writeDeployBundle(opts);
    const readme = readFileSync(path.join(bundle.dir, 'README.md'), 'utf8').split('\n');
    const p = boardPaths(opts);
    expect(bundle.units.dataMount).toBe(`${systemdEscapePath(p.dataMount)}.mount`);
    expect(bundle.units.dataMount).toContain('\\x2d');

    const install = readme.find((l) => l.startsWith('install -m 0644 ') && l.includes('deploy/'))!;
    const installed = (await argsOf(install, 'install')).slice(2, -1);
    expect(installed.sort()).toEqual(
      [bundle.units.rootMount, bundle.units.dataMount, bundle.units.socket, bundle.units.service]
        .map((u) => `deploy/${u}`)
        .sort(),
    );
    for (const f of installed) expect(bundle.files).toContain(f);

    const enable = readme.find((l) => l.startsWith('systemctl enable --now '))!;
    expect((await argsOf(enable, 'systemctl')).slice(2)).toEqual([
      bundle.units.rootMount,
      bundle.units.dataMount,
      bundle.units.socket,
    ]);
  });
});

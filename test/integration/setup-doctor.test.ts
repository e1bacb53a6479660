/**
 * `lhc setup` and `lhc doctor` on this real host (as root): setup brings the host to what doctor
 * requires, and a second setup changes nothing at all.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/tools/exec.js';

const repo = path.resolve(import.meta.dirname, '../..');

function lhc(...args: string[]) {
  return run([process.execPath, '--import', 'tsx', 'src/cli-entry.ts', ...args], {
    cwd: repo,
    reject: false,
    timeoutMs: 30 * 60_000,
  });
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** Everything setup may touch, as comparable text. */
async function hostState(): Promise<Record<string, string>> {
  const state: Record<string, string> = {};
  const sourceFiles = ['/etc/apt/sources.list'];
  for (const name of (await readdir('/etc/apt/sources.list.d')).sort())
    sourceFiles.push(`/etc/apt/sources.list.d/${name}`);
  for (const f of sourceFiles) state[f] = await sha256(f).catch(() => 'absent');
  state.foreignArchs = (await run(['dpkg', '--print-foreign-architectures'])).stdout;
  state.packages = (
    await run(['dpkg-query', '-W', '-f=${binary:Package} ${Version} ${db:Status-Status}\n'])
  ).stdout;
  state.binfmtStatus = await readFile('/proc/sys/fs/binfmt_misc/status', 'utf8').catch(
    () => 'not mounted',
  );
  state.qemuAarch64 = await readFile('/proc/sys/fs/binfmt_misc/qemu-aarch64', 'utf8').catch(
    () => 'absent',
  );
  return state;
}

describe('lhc setup and lhc doctor on this host', () => {
  it('setup, then doctor exits 0', async () => {
    expect(process.getuid?.(), 'this test needs root (CI runs as root)').toBe(0);
    const setup = await lhc('setup');
    expect(setup.stderr + setup.stdout).not.toMatch(/^error/m);
    expect(setup.exitCode).toBe(0);
    const doctor = await lhc('doctor');
    expect(doctor.stdout).not.toMatch(/^FAIL/m);
    expect(doctor.stdout).toMatch(/^ok +qemu-aarch64 binfmt \(F flag\) +enabled, flags \S*F/m);
    expect(doctor.stdout).toMatch(/^ok +musl aarch64 \(musl-gcc\.specs\)/m);
    expect(doctor.exitCode).toBe(0);
  });

  it('a second setup changes nothing', async () => {
    const before = await hostState();
    const again = await lhc('setup');
    expect(again.exitCode).toBe(0);
    expect(again.stdout.trim()).toBe('setup: nothing to do, everything is already present');
    expect(again.stderr).toMatch(/^present: qemu-aarch64 registered \(flags \S*F\S*\)$/m);
    expect(again.stderr).toMatch(/^present: packages: .*musl-dev:arm64/m);
    expect(await hostState()).toEqual(before);
  });

  // The fresh-machine failure of issue 11: mmdebstrap without its Recommends arch-test.
  it('without arch-test doctor fails naming it and its package; setup installs it', async () => {
    await run(['dpkg', '-r', 'arch-test'], { reject: false, timeoutMs: 5 * 60_000 });
    const before = await lhc('doctor');
    expect(before.stdout).toMatch(/^FAIL +arch-test +not found/m);
    expect(before.stdout).toMatch(/fix: apt-get install arch-test/);
    expect(before.exitCode).toBe(1);
    // A config that needs no Debian root is not held up by it.
    const scratch = await lhc('doctor', 'examples/gophermoon/lhc.yml');
    expect(scratch.stdout).not.toMatch(/arch-test/);
    expect(scratch.exitCode).toBe(0);
    const nginx = await lhc('doctor', 'examples/nginx/lhc.yml');
    expect(nginx.stdout).toMatch(/^ +debian-root: base\.type: debian$/m);
    expect(nginx.exitCode).toBe(1);

    const setup = await lhc('setup');
    expect(setup.exitCode).toBe(0);
    expect(setup.stderr + setup.stdout).toMatch(/install .*arch-test/);
    const after = await lhc('doctor');
    expect(after.stdout).toMatch(/^ok +arch-test /m);
    expect(after.exitCode).toBe(0);
  });
});

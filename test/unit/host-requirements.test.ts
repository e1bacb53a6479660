/**
 * The host requirements table is the only truth about what lhc runs: the exec wrapper refuses a
 * program without a row, so a new tool added without one fails the first test that runs it.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  assertKnownProgram,
  hostProgram,
  packageFor,
  setupPackages,
  toolRequirements,
} from '../../src/host/requirements.js';
import { run, start } from '../../src/tools/exec.js';

const repo = path.resolve(import.meta.dirname, '../..');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('host requirements table', () => {
  it('the exec wrapper refuses a program that has no row, naming the table', async () => {
    await expect(run(['lhc-no-such-tool', '--version'])).rejects.toThrow(
      /'lhc-no-such-tool', which has no row in the host requirements table/,
    );
    expect(() => start(['/usr/bin/lhc-no-such-tool'])).toThrow(/no row/);
  });

  it('paths lhc made itself need no row; system paths are looked up by name', () => {
    expect(hostProgram('/tmp/lhc-xyz/lua')).toBeUndefined();
    expect(hostProgram('./lua')).toBeUndefined();
    expect(hostProgram('/usr/sbin/losetup')).toBe('losetup');
    expect(() => assertKnownProgram('/usr/bin/mksquashfs')).not.toThrow();
    expect(() => assertKnownProgram('/usr/bin/lhc-no-such-tool')).toThrow(/no row/);
  });

  it('arch-test is required with mmdebstrap and installed by setup', () => {
    expect(packageFor('arch-test')).toBe('arch-test');
    const row = toolRequirements('x86_64').find((t) => t.tool === 'arch-test');
    expect(row?.pkg).toBe('arch-test');
    expect(row?.optional).toBeFalsy();
    expect(setupPackages('x86_64')).toContain('arch-test');
    expect(setupPackages('aarch64')).not.toContain('qemu-user-static');
  });

  it('chromium (the summary screenshot test) is a test tool that setup installs', () => {
    const row = toolRequirements('x86_64').find((t) => t.tool === 'chromium');
    expect(row).toMatchObject({ pkg: 'chromium', features: ['tests'], optional: true });
    expect(setupPackages('x86_64')).toContain('chromium');
    expect(setupPackages('aarch64')).toContain('chromium');
    // Without an emoji font the screenshot shows the summary's ✅/❌ as empty boxes.
    expect(setupPackages('x86_64')).toContain('fonts-noto-color-emoji');
  });

  it('each tool has exactly one row', () => {
    for (const arch of ['x86_64', 'aarch64']) {
      const tools = toolRequirements(arch).map((t) => t.tool);
      expect(tools.filter((t, i) => tools.indexOf(t) !== i)).toEqual([]);
    }
  });

  // A second net under the wrapper's check: literal argv[0]s handed to run()/start() in src/.
  it('every literal program run()/start() is given in src/ has a row', async () => {
    const missing: string[] = [];
    for (const file of await sources(path.join(repo, 'src'))) {
      const text = await readFile(file, 'utf8');
      for (const m of text.matchAll(/\b(?:run|start)\(\s*\[\s*'([^']+)'/g)) {
        const tool = hostProgram(m[1]!);
        if (tool !== undefined && packageFor(tool) === undefined)
          missing.push(`${path.relative(repo, file)}: ${tool}`);
      }
    }
    expect(missing).toEqual([]);
  });
});

describe('long steps show progress', () => {
  it('a loud command logs a heartbeat with the elapsed time while it runs', async () => {
    const { memoryLogger } = await import('../../src/core/logger.js');
    const log = memoryLogger();
    await run(['sleep', '1.3'], { loud: true, logger: log, heartbeatMs: 400 });
    const beats = log.lines.filter((l) => /sleep 1\.3: still running \(\d+ s\)$/.test(l));
    expect(beats.length).toBeGreaterThanOrEqual(2);
    expect(log.lines[0]).toMatch(/\$ sleep 1\.3$/);
    const quiet = memoryLogger();
    await run(['sleep', '0.5'], { logger: quiet, heartbeatMs: 100 });
    expect(quiet.lines.some((l) => l.includes('still running'))).toBe(false);
  });
});

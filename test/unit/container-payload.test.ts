/**
 * findPayloads() against a real process tree shaped like nspawn's start-up with -U: a process
 * named systemd-nspawn whose helper "(sd-mkuserns)" has been killed but not yet reaped (nspawn
 * was not scheduled in between; here it is stopped). Such a zombie has no exe link, which is
 * what once made it pass for the payload.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../src/core/wait.js';
import {
  descendants,
  exePath,
  findPayloads,
  parseNsPidDepth,
  pidNamespaceDepth,
  processTable,
} from '../../src/harness/proc.js';

describe('parseNsPidDepth', () => {
  it('counts the ids on the NSpid line', () => {
    expect(parseNsPidDepth('Name:\tbusybox\nNSpid:\t19125\t1\nNSpgid:\t19125\t1\n')).toBe(2);
    expect(parseNsPidDepth('Name:\tnode\nNSpid:\t4242\n')).toBe(1);
    expect(parseNsPidDepth('Name:\tnode\nNSpid:\t1\t2\t3\n')).toBe(3);
  });

  it('is undefined without an NSpid line (kernels before 4.1)', () => {
    expect(parseNsPidDepth('Name:\tnode\nPid:\t4242\n')).toBeUndefined();
    expect(parseNsPidDepth('Name:\tnode\nNSpid:\t\n')).toBeUndefined();
  });

  it('reads this process: the same depth as its parent', () => {
    const own = pidNamespaceDepth(process.pid);
    expect(own).toBeGreaterThanOrEqual(1);
    expect(pidNamespaceDepth(process.ppid)).toBe(own);
  });
});

const state = (pid: number): string | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
};

describe('findPayloads', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lhc-payload-'));
  let nspawn: ChildProcess | undefined;
  afterAll(() => {
    if (nspawn && nspawn.exitCode === null && nspawn.signalCode === null) nspawn.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('does not take an nspawn helper that was killed but not reaped for the payload', async () => {
    // A script's comm is its file name, so these two carry nspawn's and its helper's names.
    const fake = path.join(dir, 'systemd-nspawn');
    const helper = path.join(dir, '(sd-mkuserns)');
    writeFileSync(helper, '#!/bin/sh\nsleep 0.3\n');
    writeFileSync(fake, '#!/bin/sh\n"$(dirname "$0")/(sd-mkuserns)" &\nkill -STOP $$\n');
    chmodSync(helper, 0o755);
    chmodSync(fake, 0o755);
    nspawn = spawn(fake, [], { stdio: 'ignore' });
    const pid = nspawn.pid!;

    const zombie = await waitFor(() => {
      const h = descendants(pid).find((p) => p.comm === '(sd-mkuserns)');
      return h && state(h.pid) === 'Z' && state(pid) === 'T' ? h : undefined;
    }, 10_000);
    expect(zombie, 'the stopped fake nspawn should hold an unreaped (sd-mkuserns)').toBeDefined();
    // What made it look like an exec'd payload: no exe link to compare with nspawn's.
    expect(exePath(zombie!.pid)).toBeUndefined();
    expect(pidNamespaceDepth(zombie!.pid)).toBe(pidNamespaceDepth(pid));

    expect(findPayloads(pid)).toEqual([]);

    // The same helper in a table read before nspawn's outer child exited and took it along: the
    // table still says that child is its parent, but /proc has neither any more.
    const stale = processTable();
    const exited = new Promise((r) => nspawn!.once('exit', r));
    nspawn.kill('SIGKILL');
    await exited;
    const reaped = await waitFor(
      () => (state(zombie!.pid) === undefined ? true : undefined),
      10_000,
    );
    expect(reaped, 'the orphaned helper should have been reaped').toBe(true);
    expect(stale.get(zombie!.pid)?.ppid).toBe(pid);
    expect(findPayloads(pid, stale)).toEqual([]);
  });
});

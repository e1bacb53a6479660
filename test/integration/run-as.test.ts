/**
 * lhc-run-as for real: the code bytes kept in run-as-elf.ts are what the .S sources assemble to,
 * and each helper (x86_64 natively, aarch64 through binfmt_misc) drops to its baked-in ids and
 * execs the command with the environment it was given, or fails with exit code 127 and a message.
 * Runs as root (setgroups needs CAP_SETGID), like every integration test.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembledHex } from '../support/assemble.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RUN_AS_CODE, runAsElf } from '../../src/service-user/run-as-elf.js';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/service-user');
const IDS = { name: 'prober', uid: 4321, gid: 4322, groups: [4322, 4323], home: '/home/prober' };

describe('lhc-run-as', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-run-as-'));
  });
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it.each(['aarch64', 'x86_64'] as const)(
    'keeps the bytes that run-as.%s.S assembles to',
    (arch) => {
      expect(assembledHex(arch, path.join(SRC, `run-as.${arch}.S`), tmp)).toBe(RUN_AS_CODE[arch]);
    },
  );

  it.each(['x86_64', 'aarch64'] as const)(
    'the %s helper drops to its ids and execs the command',
    (arch) => {
      if (process.getuid?.() !== 0) throw new Error('this test needs root (setgroups, setuid)');
      const helper = path.join(tmp, `run-as-${arch}`);
      writeFileSync(helper, runAsElf(arch, IDS));
      chmodSync(helper, 0o755);
      // `id` is a host binary: the aarch64 helper (run by QEMU through binfmt) execs it natively.
      const id = (flag: string) =>
        execFileSync(helper, ['/usr/bin/id', flag], { env: { KEEP: 'me' } })
          .toString()
          .trim();
      expect(id('-u')).toBe(String(IDS.uid));
      expect(id('-g')).toBe(String(IDS.gid));
      expect(id('-G').split(' ').map(Number).sort()).toEqual([...IDS.groups].sort());
      expect(execFileSync(helper, ['/usr/bin/env'], { env: { KEEP: 'me' } }).toString()).toBe(
        'KEEP=me\n',
      );
      const missing = spawnSync(helper, ['/nonexistent/program']);
      expect(missing.status).toBe(127);
      expect(missing.stderr.toString()).toBe('lhc-run-as: cannot execute the service command\n');
      const none = spawnSync(helper, []);
      expect(none.status).toBe(127);
    },
  );
});

/**
 * The hardening checks on /proc text recorded from a real payload (systemd 252, nspawn with the
 * board's flags, squashfs loop-mounted read-only, tmpfs data), and on the same text with one
 * protection removed: every check must be able to go red.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  checkCapabilities,
  checkDataMount,
  checkDevMount,
  checkNetwork,
  checkNoInterpreters,
  checkNoNewPrivs,
  checkRlimits,
  checkRootReadOnly,
  checkScratchMount,
  checkUidMap,
  entrypointInterpreters,
  parseFindListing,
  parseMountInfo,
  resolveInImage,
  type ImageEntry,
} from '../../src/verify/hardening.js';

const MOUNTINFO = `104 82 7:0 / / ro,relatime,idmapped shared:1 - squashfs /dev/loop0 ro,errors=continue
105 104 0:41 / /tmp rw,nosuid,nodev shared:2 - tmpfs tmpfs rw,size=2468412k,nr_inodes=409600,uid=1753546752,gid=1753546752
107 104 0:43 / /dev rw,nosuid shared:4 - tmpfs tmpfs rw,size=4096k,nr_inodes=65536,mode=755,uid=1753546752,gid=1753546752
116 104 0:40 / /data rw,nosuid,nodev,noexec,relatime shared:13 - tmpfs tmpfs rw,mode=755
45 104 0:48 / /proc rw,nosuid,nodev,noexec,relatime shared:14 - proc proc rw
`;
const STATUS_HARDENED = 'Name:\tqemu-aarch64-static\nCapBnd:\t00000000fdccafff\nNoNewPrivs:\t1\n';
const UID_MAP_USERNS = '         0 1753546752      65536\n';
const NET_DEV_LO = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
`;

describe('mount checks', () => {
  it('parses mountinfo including octal escapes', () => {
    const m = parseMountInfo(
      '36 35 98:0 / /mnt\\040with\\040space rw,noexec - ext3 /dev/root rw\n',
    );
    expect(m[0]).toMatchObject({
      mountPoint: '/mnt with space',
      options: ['rw', 'noexec'],
      fsType: 'ext3',
    });
  });

  it('a read-only root and a noexec,nosuid,nodev data mount pass', () => {
    expect(checkRootReadOnly(MOUNTINFO)).toMatchObject({
      ok: true,
      detail: expect.stringContaining('squashfs /dev/loop0'),
    });
    expect(checkDataMount(MOUNTINFO, '/data').ok).toBe(true);
  });

  it('a writable root fails (nspawn without --read-only)', () => {
    const rw = MOUNTINFO.replace('/ / ro,relatime', '/ / rw,relatime');
    expect(checkRootReadOnly(rw).ok).toBe(false);
  });

  it('the topmost mount at / counts, not one hidden under it', () => {
    const stacked = `${MOUNTINFO}200 104 0:99 / / rw,relatime - overlay overlay rw\n`;
    expect(checkRootReadOnly(stacked).ok).toBe(false);
  });

  it('a data mount without noexec fails and says what is missing; no data mount fails', () => {
    const exec = MOUNTINFO.replace(
      '/data rw,nosuid,nodev,noexec,relatime',
      '/data rw,nosuid,nodev,relatime',
    );
    expect(checkDataMount(exec, '/data')).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/^missing noexec:/),
    });
    expect(checkDataMount(MOUNTINFO, '/srv')).toMatchObject({
      ok: false,
      detail: 'nothing is mounted at /srv',
    });
  });
});

/**
 * /tmp, /run and /dev/shm as recorded in a payload's mountinfo on systemd 252: nspawn's own
 * writable, exec-able tmpfs mounts, with the board's noexec ones (SCRATCH_MOUNTS) stacked on top.
 */
const NSPAWN_SCRATCH = `113 105 0:40 / /tmp rw,nosuid,nodev shared:2 - tmpfs tmpfs rw,size=2468356k,nr_inodes=409600,uid=201588736,gid=201588736
114 109 0:43 / /dev/shm rw,nosuid,nodev shared:6 - tmpfs tmpfs rw,size=2468356k,nr_inodes=409600,uid=201588736,gid=201588736
115 105 0:44 / /run rw,nosuid,nodev shared:9 - tmpfs tmpfs rw,size=4936712k,nr_inodes=819200,mode=755,uid=201588736,gid=201588736
`;
const BOARD_SCRATCH = `${NSPAWN_SCRATCH}116 113 0:49 / /tmp rw,nosuid,nodev,noexec shared:3 - tmpfs tmpfs rw,uid=201588736,gid=201588736
117 114 0:46 / /dev/shm rw,nosuid,nodev,noexec shared:7 - tmpfs tmpfs rw,uid=201588736,gid=201588736
119 115 0:47 / /run rw,nosuid,nodev,noexec shared:15 - tmpfs tmpfs rw,mode=755,uid=201588736,gid=201588736
120 119 0:48 / /run/host ro,nosuid,nodev,noexec shared:16 - tmpfs tmpfs rw,mode=755,uid=201588736,gid=201588736
`;

describe('scratch mount checks (/tmp, /run, /dev/shm)', () => {
  it("the noexec mounts stacked on top of nspawn's pass", () => {
    for (const p of ['/tmp', '/run', '/dev/shm'])
      expect(checkScratchMount(BOARD_SCRATCH, p)).toMatchObject({
        ok: true,
        name: `${p} absent or noexec,nosuid,nodev`,
        detail: expect.stringContaining('noexec'),
      });
  });

  it("nspawn's own exec-able tmpfs mounts fail and say noexec is missing", () => {
    for (const p of ['/tmp', '/run', '/dev/shm'])
      expect(checkScratchMount(NSPAWN_SCRATCH, p)).toMatchObject({
        ok: false,
        detail: expect.stringMatching(/^missing noexec: tmpfs/),
      });
  });

  it('a path that is not a mount of its own passes (it is the read-only root)', () => {
    expect(checkScratchMount(MOUNTINFO, '/run')).toMatchObject({ ok: true });
  });

  it('a scratch mount missing nosuid or nodev fails', () => {
    const suid = BOARD_SCRATCH.replace('/tmp rw,nosuid,nodev,noexec', '/tmp rw,nodev,noexec');
    expect(checkScratchMount(suid, '/tmp')).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/^missing nosuid:/),
    });
  });
});

describe('process status checks', () => {
  it('NoNewPrivs 1 passes, 0 fails', () => {
    expect(checkNoNewPrivs(STATUS_HARDENED).ok).toBe(true);
    expect(checkNoNewPrivs(STATUS_HARDENED.replace('NoNewPrivs:\t1', 'NoNewPrivs:\t0')).ok).toBe(
      false,
    );
  });

  it('reads CAP_NET_ADMIN (bit 12) and CAP_SYS_ADMIN (bit 21) from CapBnd', () => {
    expect(checkCapabilities(STATUS_HARDENED).ok).toBe(true);
    // fdecafff: what nspawn 252 leaves with only --drop-capability=CAP_NET_ADMIN (bit 21 still set).
    expect(checkCapabilities(STATUS_HARDENED.replace('fdccafff', 'fdecafff'))).toMatchObject({
      ok: false,
      detail: expect.stringContaining('still has CAP_SYS_ADMIN'),
    });
    // A full bounding set (no capability dropped).
    expect(
      checkCapabilities(STATUS_HARDENED.replace('00000000fdccafff', '000001ffffffffff')).detail,
    ).toContain('CAP_NET_ADMIN, CAP_SYS_ADMIN');
  });

  it('uid 0 mapped to a host range passes; the identity map (no -U) fails', () => {
    expect(checkUidMap(UID_MAP_USERNS)).toMatchObject({
      ok: true,
      detail: 'uid 0 → host uid 1753546752 (65536 ids)',
    });
    expect(checkUidMap('         0          0 4294967295\n').ok).toBe(false);
  });

  it('only lo passes; any other interface fails', () => {
    expect(checkNetwork(NET_DEV_LO)).toMatchObject({ ok: true, detail: 'interfaces: lo' });
    const withEth = `${NET_DEV_LO}  eth0:    1234      10    0    0    0     0          0         0     5678      12    0    0    0     0       0          0\n`;
    expect(checkNetwork(withEth)).toMatchObject({ ok: false, detail: 'interfaces: lo, eth0' });
  });
});

describe('interpreters in the image', () => {
  const file = (p: string, executable = true): ImageEntry => ({
    path: p,
    kind: 'file',
    executable,
  });
  const link = (p: string, target: string): ImageEntry => ({
    path: p,
    kind: 'symlink',
    executable: false,
    target,
  });
  const dir = (p: string): ImageEntry => ({ path: p, kind: 'dir', executable: false });

  it('allows the service interpreter and links to it', () => {
    const entries = [
      dir('/bin'),
      file('/bin/lua'),
      file('/bin/gophermoon', false),
      dir('/usr'),
      dir('/usr/bin'),
      link('/usr/bin/lua5.4', '../../bin/lua'),
    ];
    expect(checkNoInterpreters(entries, '/bin/lua').ok).toBe(true);
  });

  it('flags a shell, busybox applets and another interpreter', () => {
    const entries = [
      dir('/bin'),
      file('/bin/lua'),
      file('/bin/busybox'),
      link('/bin/sh', '/bin/busybox'),
      file('/usr/bin/python3.11'),
    ];
    expect(checkNoInterpreters(entries, '/bin/lua')).toMatchObject({
      ok: false,
      detail: 'found /bin/busybox, /bin/sh -> /bin/busybox, /usr/bin/python3.11',
    });
  });

  it("allows a script service's #! interpreter (BusyBox sh, python3), not other interpreters", () => {
    const entries = [
      dir('/bin'),
      file('/bin/busybox'),
      link('/bin/sh', '/bin/busybox'),
      file('/usr/bin/moon-gopher'),
      file('/usr/bin/python3.11'),
      link('/usr/bin/python3', 'python3.11'),
      file('/usr/bin/perl'),
    ];
    expect(checkNoInterpreters(entries, '/usr/bin/moon-gopher')).toMatchObject({
      ok: false,
      detail:
        'found /bin/busybox, /bin/sh -> /bin/busybox, /usr/bin/python3.11, /usr/bin/python3 -> python3.11, /usr/bin/perl',
    });
    expect(checkNoInterpreters(entries, '/usr/bin/moon-gopher', ['/bin/sh'])).toMatchObject({
      ok: false,
      detail: 'found /usr/bin/python3.11, /usr/bin/python3 -> python3.11, /usr/bin/perl',
    });
    expect(checkNoInterpreters(entries, '/usr/sbin/pygopherd', ['/usr/bin/python3']).detail).toBe(
      'found /bin/busybox, /bin/sh -> /bin/busybox, /usr/bin/perl',
    );
  });

  it("reads the entrypoint's #! chain inside the image root, not on the host", () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'lhc-interp-'));
    try {
      mkdirSync(path.join(root, 'bin'));
      mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
      writeFileSync(path.join(root, 'bin/busybox'), '\x7fELF');
      symlinkSync('/bin/busybox', path.join(root, 'bin/sh'));
      writeFileSync(path.join(root, 'usr/bin/svc'), '#!/bin/sh -e\necho hi\n');
      writeFileSync(path.join(root, 'usr/bin/elf'), '\x7fELF');
      expect(entrypointInterpreters(root, '/usr/bin/svc')).toEqual(['/bin/sh']);
      expect(entrypointInterpreters(root, '/usr/bin/elf')).toEqual([]);
      expect(entrypointInterpreters(root, '/usr/bin/missing')).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('ignores non-executable files and directories named like interpreters', () => {
    const entries = [
      dir('/usr/share/perl5'),
      dir('/usr/lib/python3'),
      file('/usr/share/doc/sh', false),
      file('/bin/lua'),
    ];
    expect(checkNoInterpreters(entries, '/bin/lua').ok).toBe(true);
  });

  it('parses the NUL-separated find listing, names with spaces and newlines included', () => {
    const listing = Buffer.from(
      'd\x00755\x00bin\x00\x00f\x00755\x00bin/lua\x00\x00l\x00777\x00bin/sh\x00busybox\x00f\x00644\x00a\nb c\x00\x00',
    );
    expect(parseFindListing(listing)).toEqual([
      { path: '/a\nb c', kind: 'file', executable: false },
      { path: '/bin', kind: 'dir', executable: false },
      { path: '/bin/lua', kind: 'file', executable: true },
      { path: '/bin/sh', kind: 'symlink', executable: false, target: 'busybox' },
    ]);
  });

  it('resolves symlinks inside the image, never above its root', () => {
    const byPath = new Map(
      [link('/a', '../../../../b'), link('/usr/bin/x', '/a')].map((e) => [e.path, e]),
    );
    expect(resolveInImage(byPath, '/usr/bin/x')).toBe('/b');
  });
});

/** /proc/PID/limits of a payload started with the default --rlimit flags (rows cut to those read). */
const LIMITS_TEXT = `Limit                     Soft Limit           Hard Limit           Units
Max processes             64                   64                   processes
Max open files            1024                 1024                 files
`;

describe('rlimit check', () => {
  it('passes at the configured open-files and process limits', () => {
    expect(checkRlimits(LIMITS_TEXT, { nofile: 1024, tasks: 64 })).toMatchObject({
      ok: true,
      name: 'open files ≤ 1024, processes ≤ 64',
      detail: 'open files 1024/1024, processes 64/64 (soft/hard)',
    });
  });

  it('fails when a hard limit is above the configured one, unlimited, or missing', () => {
    const high = LIMITS_TEXT.replace(/1024 {17}files/, '524288               files');
    expect(checkRlimits(high, { nofile: 1024, tasks: 64 }).ok).toBe(false);
    const unlimited = LIMITS_TEXT.replace(/64 {19}processes/, 'unlimited            processes');
    expect(checkRlimits(unlimited, { nofile: 1024, tasks: 64 })).toMatchObject({
      ok: false,
      detail: 'open files 1024/1024, processes 64/Infinity (soft/hard)',
    });
    expect(checkRlimits('Limit Soft Hard\n', { nofile: 1024, tasks: 64 }).ok).toBe(false);
  });
});

describe('/dev check', () => {
  // Recorded from the gophermoon image under the board's nspawn flags (systemd 252).
  const DEV =
    '658 654 0:93 / /dev rw,nosuid shared:235 - tmpfs tmpfs rw,size=4096k,nr_inodes=65536,mode=755\n';

  it("nspawn's /dev (nosuid, 4 MiB) passes and says it is writable and exec-allowed", () => {
    expect(checkDevMount(MOUNTINFO)).toMatchObject({
      ok: true,
      name: '/dev nosuid, noexec or capped at 4 MiB',
      detail: expect.stringMatching(/^writable by the container root and exec allowed/),
    });
    expect(checkDevMount(DEV).ok).toBe(true);
  });

  it('fails without nosuid, or when a writable exec-able /dev is larger', () => {
    expect(checkDevMount(DEV.replace('rw,nosuid', 'rw'))).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/^missing nosuid/),
    });
    expect(checkDevMount(DEV.replace('size=4096k', 'size=2468412k'))).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/not size-capped/),
    });
    expect(checkDevMount(DEV.replace('size=4096k,', '')).ok).toBe(false);
  });

  it('passes a noexec or read-only /dev whatever its size', () => {
    const big = DEV.replace('size=4096k', 'size=1g');
    expect(checkDevMount(big.replace('rw,nosuid', 'rw,nosuid,noexec')).ok).toBe(true);
    expect(checkDevMount(big.replace('rw,nosuid', 'ro,nosuid')).ok).toBe(true);
  });
});

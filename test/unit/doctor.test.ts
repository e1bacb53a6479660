import { describe, expect, it } from 'vitest';
import {
  doctorExitCode,
  formatChecks,
  parseBinfmtEntry,
  runChecks,
} from '../../src/host/doctor.js';
import {
  MUSL_SPECS,
  MUSL_SPECS_X86_64,
  QEMU_BINFMT_CONF,
  toolRequirements,
} from '../../src/host/requirements.js';
import { featuresFor } from '../../src/host/config-needs.js';
import { parseConfig } from '../../src/config/load.js';
import { QEMU_CONF, QEMU_ENTRY_POF, fakeProbe, type FakeHost } from '../support/fake-host.js';

const ALL_TOOLS_X86 = toolRequirements('x86_64').map((t) => t.tool);

/** A host where everything lhc needs is in place. */
function readyHost(over: Partial<FakeHost> = {}): FakeHost {
  return {
    arch: 'x86_64',
    root: true,
    tools: ALL_TOOLS_X86,
    files: {
      '/proc/sys/fs/binfmt_misc/status': 'enabled\n',
      '/proc/sys/fs/binfmt_misc/qemu-aarch64': QEMU_ENTRY_POF,
      [QEMU_BINFMT_CONF]: QEMU_CONF,
      [MUSL_SPECS]: '%rename cpp_options old_cpp_options\n',
      [MUSL_SPECS_X86_64]: '%rename cpp_options old_cpp_options\n',
    },
    ...over,
  };
}

function withoutFile(h: FakeHost, file: string): FakeHost {
  const files = { ...h.files };
  delete files[file];
  return { ...h, files };
}

async function check(h: FakeHost, name: string) {
  const checks = await runChecks(fakeProbe(h));
  const c = checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check named ${name}: ${checks.map((x) => x.name).join(', ')}`);
  return { c, exit: doctorExitCode(checks) };
}

describe('doctor', () => {
  it('a ready host passes every check and exits 0', async () => {
    const checks = await runChecks(fakeProbe(readyHost()));
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(doctorExitCode(checks)).toBe(0);
    expect(formatChecks(checks).split('\n').at(-1)).toBe('host is ready');
  });

  it('not root and no passwordless sudo fails', async () => {
    const { c, exit } = await check(
      readyHost({ root: false, sudo: false }),
      'root or passwordless sudo',
    );
    expect(c.ok).toBe(false);
    expect(c.fix).toMatch(/passwordless sudo/);
    expect(exit).toBe(1);
  });

  it('not root but sudo -n works passes', async () => {
    const { c } = await check(readyHost({ root: false, sudo: true }), 'root or passwordless sudo');
    expect(c).toMatchObject({ ok: true, detail: 'sudo -n works' });
  });

  it('binfmt_misc not mounted: the fix is the mount command', async () => {
    const h = withoutFile(
      withoutFile(readyHost(), '/proc/sys/fs/binfmt_misc/status'),
      '/proc/sys/fs/binfmt_misc/qemu-aarch64',
    );
    const { c, exit } = await check(h, 'binfmt_misc mounted');
    expect(c.ok).toBe(false);
    expect(c.fix).toBe(
      'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc (or run: lhc setup)',
    );
    expect(exit).toBe(1);
  });

  it('qemu-aarch64 not registered: register from the conf, or install qemu-user-static', async () => {
    const unregistered = withoutFile(readyHost(), '/proc/sys/fs/binfmt_misc/qemu-aarch64');
    const { c } = await check(unregistered, 'qemu-aarch64 binfmt (F flag)');
    expect(c.ok).toBe(false);
    expect(c.fix).toBe(
      'cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register (or run: lhc setup)',
    );
    const noQemu = await check(
      withoutFile(unregistered, QEMU_BINFMT_CONF),
      'qemu-aarch64 binfmt (F flag)',
    );
    expect(noQemu.c.fix).toBe('apt-get install qemu-user-static (or run: lhc setup)');
  });

  it('qemu-aarch64 registered without the F flag fails', async () => {
    const h = readyHost();
    h.files!['/proc/sys/fs/binfmt_misc/qemu-aarch64'] = QEMU_ENTRY_POF.replace(
      'flags: POF',
      'flags: OC',
    );
    const { c, exit } = await check(h, 'qemu-aarch64 binfmt (F flag)');
    expect(c.ok).toBe(false);
    expect(c.detail).toBe('registered with flags "OC", without F (fix-binary)');
    expect(exit).toBe(1);
  });

  it('a disabled registration fails', async () => {
    const h = readyHost();
    h.files!['/proc/sys/fs/binfmt_misc/qemu-aarch64'] = QEMU_ENTRY_POF.replace(
      'enabled',
      'disabled',
    );
    const { c } = await check(h, 'qemu-aarch64 binfmt (F flag)');
    expect(c).toMatchObject({ ok: false, fix: 'echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64' });
  });

  it('on an aarch64 host QEMU is not checked and the native compiler is', async () => {
    const tools = toolRequirements('aarch64').map((t) => t.tool);
    const h: FakeHost = { arch: 'aarch64', root: true, tools, files: { [MUSL_SPECS]: '' } };
    const checks = await runChecks(fakeProbe(h));
    expect(checks.find((c) => c.name === 'binfmt_misc mounted')).toBeUndefined();
    expect(checks.find((c) => c.name === 'qemu-aarch64 binfmt (F flag)')).toMatchObject({
      ok: true,
      detail: 'native aarch64 host: QEMU not needed',
    });
    const gcc = toolRequirements('aarch64').find((t) => t.tool === 'aarch64-linux-gnu-gcc');
    expect(gcc?.pkg).toBe('gcc');
    expect(tools).not.toContain('x86_64-linux-gnu-gcc');
    expect(checks.find((c) => c.name === 'musl x86_64 (musl-gcc.specs)')).toBeUndefined();
    expect(doctorExitCode(checks)).toBe(0);
  });

  it.each([
    ['systemd-nspawn', 'systemd-container'],
    ['mksquashfs', 'squashfs-tools'],
    ['aarch64-linux-gnu-gcc', 'gcc-aarch64-linux-gnu'],
    ['curl', 'curl'],
    ['mmdebstrap', 'mmdebstrap'],
    ['systemd-socket-activate', 'systemd'],
    ['nsenter', 'util-linux'],
    ['unsquashfs', 'squashfs-tools'],
    ['arch-test', 'arch-test'],
  ])('missing %s is required and names package %s', async (tool, pkg) => {
    const h = readyHost({ tools: ALL_TOOLS_X86.filter((t) => t !== tool) });
    const { c, exit } = await check(h, tool);
    expect(c).toMatchObject({
      ok: false,
      optional: false,
      fix: `apt-get install ${pkg} (or run: lhc setup)`,
    });
    expect(exit).toBe(1);
  });

  it('missing x86_64 musl is only a warning (only arch: x86_64 configs need it)', async () => {
    const checks = await runChecks(fakeProbe(withoutFile(readyHost(), MUSL_SPECS_X86_64)));
    expect(checks.find((c) => c.name === 'musl x86_64 (musl-gcc.specs)')).toMatchObject({
      ok: false,
      optional: true,
      fix: 'apt-get install musl-dev (or run: lhc setup)',
    });
    expect(doctorExitCode(checks)).toBe(0);
  });

  it('missing runc is only a warning', async () => {
    const checks = await runChecks(
      fakeProbe(readyHost({ tools: ALL_TOOLS_X86.filter((t) => t !== 'runc') })),
    );
    expect(checks.find((c) => c.name === 'runc')).toMatchObject({ ok: false, optional: true });
    expect(doctorExitCode(checks)).toBe(0);
    expect(formatChecks(checks)).toMatch(/^warn {2}runc/m);
  });

  it('missing musl specs names the arm64 foreign architecture and musl-dev:arm64', async () => {
    const { c } = await check(
      withoutFile(readyHost(), MUSL_SPECS),
      'musl aarch64 (musl-gcc.specs)',
    );
    expect(c.fix).toBe(
      'dpkg --add-architecture arm64 && apt-get update && apt-get install musl-dev:arm64 (or run: lhc setup)',
    );
  });

  it('the table shows each failure with its fix and a count', async () => {
    const h = readyHost({ tools: ALL_TOOLS_X86.filter((t) => t !== 'curl' && t !== 'mksquashfs') });
    const text = formatChecks(await runChecks(fakeProbe(h)));
    expect(text).toMatch(/^FAIL {2}curl +not found/m);
    expect(text).toMatch(/^ +fix: apt-get install curl \(or run: lhc setup\)$/m);
    expect(text.split('\n').at(-1)).toBe(
      '2 required checks failed: run the fixes above, or: lhc setup',
    );
  });

  it('parseBinfmtEntry reads the kernel format', () => {
    expect(parseBinfmtEntry(QEMU_ENTRY_POF)).toEqual({
      enabled: true,
      flags: 'POF',
      interpreter: '/usr/libexec/qemu-binfmt/aarch64-binfmt-P',
    });
  });
});

describe('doctor CONFIG: only what the config needs', () => {
  const config = (extra: string) =>
    parseConfig(
      `name: t\nepoch: 1\nservice: {command: [/bin/x], inetd: true}\n` +
        `probes: [{name: a, type: gopher, fixture: a.txt}]\n${extra}`,
    );

  it('a scratch base without Lua needs no cross compiler, no mmdebstrap, no arch-test', async () => {
    const needs = featuresFor(config(''), 'x86_64');
    expect([...needs.features].sort()).toEqual(
      ['core', 'emulation', 'inetd', 'privilege', 'system'].sort(),
    );
    const bare = ALL_TOOLS_X86.filter(
      (t) => !['mmdebstrap', 'arch-test', 'aarch64-linux-gnu-gcc', 'make'].includes(t),
    );
    const host = withoutFile(readyHost({ tools: bare }), MUSL_SPECS);
    const checks = await runChecks(fakeProbe(host), needs.features);
    expect(checks.map((c) => c.name)).not.toContain('mmdebstrap');
    expect(checks.map((c) => c.name)).not.toContain('musl aarch64 (musl-gcc.specs)');
    expect(doctorExitCode(checks)).toBe(0);
    // The same host fails the full check.
    expect(doctorExitCode(await runChecks(fakeProbe(host)))).toBe(1);
  });

  it('a Debian base needs mmdebstrap and arch-test, and says which field asks for them', async () => {
    const needs = featuresFor(config('base: {type: debian}'), 'x86_64');
    expect(needs.reasons.get('debian-root')).toBe('base.type: debian');
    const host = readyHost({ tools: ALL_TOOLS_X86.filter((t) => t !== 'arch-test') });
    const checks = await runChecks(fakeProbe(host), needs.features);
    expect(checks.find((c) => c.name === 'arch-test')).toMatchObject({
      ok: false,
      fix: 'apt-get install arch-test (or run: lhc setup)',
    });
    expect(doctorExitCode(checks)).toBe(1);
  });

  it('cross Lua needs the cross compiler and musl; in-root Lua needs mmdebstrap instead', () => {
    const cross = featuresFor(
      config(`lua: {version: "5.4.4", sha256: "${'a'.repeat(64)}"}`),
      'x86_64',
    );
    expect(cross.features.has('cross-lua')).toBe(true);
    expect(cross.features.has('download')).toBe(true);
    expect(cross.features.has('debian-root')).toBe(false);
    const inRoot = featuresFor(
      config(`lua: {version: "5.4.4", sha256: "${'a'.repeat(64)}", strategy: in-root}`),
      'x86_64',
    );
    expect(inRoot.features.has('cross-lua')).toBe(false);
    expect(inRoot.features.has('debian-root')).toBe(true);
  });

  it('on an aarch64 host an aarch64 config needs strace, not QEMU', () => {
    const needs = featuresFor(config(''), 'aarch64');
    expect(needs.features.has('emulation')).toBe(false);
    expect(needs.features.has('native-trace')).toBe(true);
  });
});

import { describe, expect, it } from 'vitest';
import { memoryLogger } from '../../src/core/logger.js';
import { UserError } from '../../src/core/errors.js';
import {
  UBUNTU_PORTS,
  binfmtRule,
  debSrcFile,
  hasDebSrc,
  packageState,
  parseOsRelease,
  pinDeb822Arch,
  pinListArch,
  planBinfmt,
  planPackages,
  setupHost,
  type PackageState,
} from '../../src/host/setup.js';
import { QEMU_BINFMT_CONF, setupPackages } from '../../src/host/requirements.js';
import { installedFrom } from '../../src/host/probe.js';
import { QEMU_CONF, QEMU_ENTRY_POF, fakeProbe } from '../support/fake-host.js';

const DEBIAN_SOURCES = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

const UBUNTU_LIST = `# classic sources.list
deb http://mirror.example/ubuntu/ jammy main restricted
# deb-src http://mirror.example/ubuntu/ jammy main restricted
deb [arch=amd64] http://mirror.example/ubuntu/ jammy-updates main universe
`;

const X86 = setupPackages('x86_64');

function state(over: Partial<PackageState> = {}): PackageState {
  return {
    arch: 'x86_64',
    foreignArchs: ['arm64'],
    installed: new Set(X86),
    sources: [{ file: '/etc/apt/sources.list.d/debian.sources', text: DEBIAN_SOURCES }],
    ...over,
  };
}

describe('deb-src sources', () => {
  it('clones every deb stanza of debian.sources as deb-src, keeping the other fields', () => {
    const f = debSrcFile(state().sources)!;
    expect(f.file).toBe('/etc/apt/sources.list.d/lhc-deb-src.sources');
    expect(f.text).toBe(DEBIAN_SOURCES.replaceAll('Types: deb\n', 'Types: deb-src\n'));
    expect(hasDebSrc([...state().sources, { file: f.file, text: f.text }])).toBe(true);
  });

  it('clones the deb lines of a classic sources.list into a .list file', () => {
    const f = debSrcFile([{ file: '/etc/apt/sources.list', text: UBUNTU_LIST }])!;
    expect(f.file).toBe('/etc/apt/sources.list.d/lhc-deb-src.list');
    expect(f.text).toBe(
      'deb-src http://mirror.example/ubuntu/ jammy main restricted\n' +
        'deb-src [arch=amd64] http://mirror.example/ubuntu/ jammy-updates main universe\n',
    );
  });

  it('ignores third-party sources and commented or disabled deb-src entries', () => {
    const thirdParty = {
      file: '/etc/apt/sources.list.d/vendor.sources',
      text: 'Types: deb\nURIs: https://vendor.example/apt\nSuites: stable\nComponents: main\n',
    };
    expect(debSrcFile([thirdParty])).toBeUndefined();
    expect(hasDebSrc([{ file: '/etc/apt/sources.list', text: UBUNTU_LIST }])).toBe(false);
    expect(
      hasDebSrc([
        { file: '/x/y.sources', text: 'Types: deb deb-src\nEnabled: no\nURIs: http://h/\n' },
      ]),
    ).toBe(false);
    expect(
      hasDebSrc([{ file: '/x/y.sources', text: 'Types: deb deb-src\nURIs: http://h/\n' }]),
    ).toBe(true);
  });
});

describe('planPackages', () => {
  it('a complete host needs no step and reports what is present', () => {
    const plan = planPackages(
      state({
        sources: [
          ...state().sources,
          {
            file: '/etc/apt/sources.list.d/lhc-deb-src.sources',
            text: 'Types: deb-src\nURIs: http://h/\n',
          },
        ],
      }),
    );
    expect(plan.steps).toEqual([]);
    expect(plan.present).toEqual([
      'dpkg foreign architecture arm64',
      'deb-src apt sources',
      `packages: ${X86.join(' ')}`,
    ]);
  });

  it('a fresh Debian host: add arm64, write deb-src, update, install only the missing packages', () => {
    const missing = ['musl-dev:arm64', 'qemu-user-static', 'squashfs-tools'];
    const plan = planPackages(
      state({ foreignArchs: [], installed: new Set(X86.filter((p) => !missing.includes(p))) }),
    );
    expect(plan.steps.map((s) => s.argv)).toEqual([
      ['dpkg', '--add-architecture', 'arm64'],
      ['tee', '/etc/apt/sources.list.d/lhc-deb-src.sources'],
      [
        'env',
        'DEBIAN_FRONTEND=noninteractive',
        'apt-get',
        '-o',
        'DPkg::Lock::Timeout=600',
        'update',
      ],
      [
        'env',
        'DEBIAN_FRONTEND=noninteractive',
        'apt-get',
        '-o',
        'DPkg::Lock::Timeout=600',
        'install',
        '-y',
        '--no-install-recommends',
        ...missing,
      ],
    ]);
    expect(plan.steps[1]!.input).toContain('Types: deb-src\n');
  });

  it('writing deb-src alone still refreshes the package lists', () => {
    const plan = planPackages(state());
    expect(plan.steps.map((s) => s.argv.at(-1))).toEqual([
      '/etc/apt/sources.list.d/lhc-deb-src.sources',
      'update',
    ]);
  });

  it('installs the native toolchain on aarch64 and adds no foreign architecture', () => {
    const plan = planPackages({
      arch: 'aarch64',
      foreignArchs: [],
      installed: new Set(),
      sources: [],
    });
    const install = plan.steps.find((s) => s.argv.includes('install'))!;
    expect(install.argv).toContain('musl-dev');
    expect(install.argv).toContain('gcc');
    expect(install.argv).not.toContain('qemu-user-static');
    expect(install.argv).not.toContain('gcc-aarch64-linux-gnu');
    expect(plan.steps.some((s) => s.argv.includes('--add-architecture'))).toBe(false);
    expect(plan.warnings).toHaveLength(1);
  });
});

describe('planBinfmt', () => {
  it('registered with F: nothing to do', () => {
    const plan = planBinfmt({
      arch: 'x86_64',
      mounted: true,
      entry: QEMU_ENTRY_POF,
      conf: QEMU_CONF,
    });
    expect(plan.steps).toEqual([]);
    expect(plan.present).toEqual([
      'binfmt_misc mounted on /proc/sys/fs/binfmt_misc',
      'qemu-aarch64 registered (flags POF)',
    ]);
  });

  it('not mounted: mount first (what to register is only known afterwards)', () => {
    const plan = planBinfmt({ arch: 'x86_64', mounted: false, conf: QEMU_CONF });
    expect(plan.steps.map((s) => s.argv)).toEqual([
      ['mount', '-t', 'binfmt_misc', 'binfmt_misc', '/proc/sys/fs/binfmt_misc'],
    ]);
  });

  it('not registered: writes the conf rule to register', () => {
    const plan = planBinfmt({ arch: 'x86_64', mounted: true, conf: `# comment\n\n${QEMU_CONF}` });
    expect(plan.steps).toEqual([
      {
        what: `register qemu-aarch64 from ${QEMU_BINFMT_CONF}`,
        argv: ['tee', '/proc/sys/fs/binfmt_misc/register'],
        input: QEMU_CONF,
      },
    ]);
  });

  it('registered without F: unregisters, then registers with F added', () => {
    const entry = QEMU_ENTRY_POF.replace('flags: POF', 'flags: OC');
    const plan = planBinfmt({
      arch: 'x86_64',
      mounted: true,
      entry,
      conf: QEMU_CONF.replace(':OPF', ':OC'),
    });
    expect(plan.steps.map((s) => [s.argv[1], s.input])).toEqual([
      ['/proc/sys/fs/binfmt_misc/qemu-aarch64', '-1\n'],
      ['/proc/sys/fs/binfmt_misc/register', QEMU_CONF.replace(':OPF', ':OCF')],
    ]);
  });

  it('no qemu-user-static conf is a user error naming the package', () => {
    expect(() => planBinfmt({ arch: 'x86_64', mounted: true })).toThrow(UserError);
    expect(() => planBinfmt({ arch: 'x86_64', mounted: true })).toThrow(/qemu-user-static/);
  });

  it('aarch64 hosts need no binfmt', () => {
    expect(planBinfmt({ arch: 'aarch64', mounted: false }).steps).toEqual([]);
  });

  it('binfmtRule skips comments', () => {
    expect(binfmtRule('# a\n; b\n\n:x:M::ab::/q:F\n')).toBe(':x:M::ab::/q:F');
  });
});

describe('setupHost on a fake host', () => {
  it('reads apt sources through the probe and changes nothing on a ready host', async () => {
    const probe = fakeProbe({
      foreignArchs: ['arm64'],
      packages: X86,
      files: {
        '/etc/apt/sources.list.d/debian.sources': DEBIAN_SOURCES,
        '/etc/apt/sources.list.d/lhc-deb-src.sources': DEBIAN_SOURCES.replaceAll(
          'Types: deb\n',
          'Types: deb-src\n',
        ),
        '/proc/sys/fs/binfmt_misc/status': 'enabled\n',
        '/proc/sys/fs/binfmt_misc/qemu-aarch64': QEMU_ENTRY_POF,
        [QEMU_BINFMT_CONF]: QEMU_CONF,
      },
    });
    expect((await packageState(probe)).sources.map((s) => s.file)).toEqual([
      '/etc/apt/sources.list.d/debian.sources',
      '/etc/apt/sources.list.d/lhc-deb-src.sources',
    ]);
    const log = memoryLogger();
    const report = await setupHost(probe, log);
    expect(report.changed).toEqual([]);
    expect(report.present).toHaveLength(5);
  });

  it('refuses to change anything without root or sudo, naming what it would do', async () => {
    const probe = fakeProbe({ root: false, sudo: false, foreignArchs: [], packages: X86 });
    await expect(setupHost(probe, memoryLogger())).rejects.toThrow(
      'lhc setup needs root or passwordless sudo to: add dpkg foreign architecture arm64; update apt package lists',
    );
  });
});

const UBUNTU_SOURCES = `## Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources
Types: deb
URIs: http://mirror.example/ubuntu/
Suites: noble noble-updates noble-backports
Components: main universe restricted multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/ubuntu/
Suites: noble-security
Components: main universe restricted multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
`;

describe('Ubuntu amd64 hosts get arm64 from the ports archive', () => {
  const noble = (
    sources = [{ file: '/etc/apt/sources.list.d/ubuntu.sources', text: UBUNTU_SOURCES }],
  ) =>
    state({
      os: { id: 'ubuntu', codename: 'noble' },
      foreignArchs: [],
      sources,
      portsMirror: 'http://ports.example/ubuntu-ports',
    });

  it('reads ID and VERSION_CODENAME from os-release', () => {
    expect(parseOsRelease('NAME="Ubuntu"\nID=ubuntu\nVERSION_CODENAME=noble\n')).toEqual({
      id: 'ubuntu',
      codename: 'noble',
    });
    expect(parseOsRelease('ID="debian"\nVERSION_CODENAME=bookworm\n')).toEqual({
      id: 'debian',
      codename: 'bookworm',
    });
  });

  it('pins ubuntu.sources to amd64, adds the ports archive, clones deb-src, then updates', () => {
    const plan = planPackages(noble());
    expect(plan.steps.map((s) => s.what)).toEqual([
      'add dpkg foreign architecture arm64',
      'pin /etc/apt/sources.list.d/ubuntu.sources to amd64',
      `add the Ubuntu arm64 ports archive to ${UBUNTU_PORTS}`,
      'write deb-src sources to /etc/apt/sources.list.d/lhc-deb-src.sources',
      'update apt package lists',
    ]);
    const pinned = plan.steps[1]!.input!;
    expect(pinned.match(/^Types: deb\nArchitectures: amd64$/gm)).toHaveLength(2);
    expect(pinned.replaceAll('Architectures: amd64\n', '')).toBe(UBUNTU_SOURCES);
    expect(plan.steps[2]!.input).toBe(
      'Types: deb\nURIs: http://ports.example/ubuntu-ports\nSuites: noble noble-updates noble-security\n' +
        'Components: main universe\nArchitectures: arm64\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n',
    );
  });

  it('a second run after the first changes nothing', () => {
    const first = planPackages(noble());
    const written = first.steps
      .filter((s) => s.argv[0] === 'tee')
      .map((s) => ({ file: s.argv[1]!, text: s.input! }));
    const after = new Map([['/etc/apt/sources.list.d/ubuntu.sources', UBUNTU_SOURCES]]);
    for (const w of written) after.set(w.file, w.text);
    const second = planPackages({
      ...noble([...after].map(([file, text]) => ({ file, text }))),
      foreignArchs: ['arm64'],
    });
    expect(second.steps).toEqual([]);
    expect(second.present).toContain(`arm64 ports sources (${UBUNTU_PORTS})`);
  });

  it('pins classic sources.list deb lines, keeping existing options', () => {
    expect(
      pinListArch(
        'deb http://a/ubuntu jammy main\n# deb http://b x y\ndeb [signed-by=/k.gpg] http://a/ubuntu jammy-updates main\ndeb [arch=amd64] http://c x y\ndeb-src http://a/ubuntu jammy main',
        'amd64',
      ),
    ).toBe(
      'deb [arch=amd64] http://a/ubuntu jammy main\n# deb http://b x y\ndeb [arch=amd64 signed-by=/k.gpg] http://a/ubuntu jammy-updates main\ndeb [arch=amd64] http://c x y\ndeb-src http://a/ubuntu jammy main',
    );
    expect(pinDeb822Arch('Types: deb\nArchitectures: amd64 i386\nURIs: http://x/\n', 'amd64')).toBe(
      'Types: deb\nArchitectures: amd64 i386\nURIs: http://x/\n',
    );
  });

  it('without a ports mirror an Ubuntu amd64 host gets a clear error', () => {
    expect(() => planPackages({ ...noble(), portsMirror: undefined })).toThrow(
      /LHC_UBUNTU_PORTS_MIRROR/,
    );
  });

  it('Debian hosts are left as they are', () => {
    const plan = planPackages(state({ os: { id: 'debian', codename: 'bookworm' } }));
    expect(plan.steps.some((s) => s.what.includes('ports') || s.what.startsWith('pin '))).toBe(
      false,
    );
  });
});

describe('installedFrom reads dpkg-query output', () => {
  const listing = [
    'curl|amd64|installed',
    'mmdebstrap|all|installed',
    'musl-dev|arm64|installed',
    'runc|amd64|config-files',
    '',
  ].join('\n');

  it('a plain name means the native architecture or all; name:arch means that architecture', () => {
    const wanted = ['curl', 'mmdebstrap', 'musl-dev', 'musl-dev:arm64', 'runc', 'make'];
    expect([...installedFrom(listing, wanted, 'amd64')].sort()).toEqual([
      'curl',
      'mmdebstrap',
      'musl-dev:arm64',
    ]);
    expect([...installedFrom(listing, ['musl-dev'], 'arm64')]).toEqual(['musl-dev']);
  });
});

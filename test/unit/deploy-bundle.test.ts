import { describe, expect, it } from 'vitest';
import { boardPaths, type DeployBundleOptions } from '../../src/deploy/bundle.js';
import { ociConfig } from '../../src/deploy/oci.js';
import {
  renderFstab,
  renderServiceUnit,
  renderSocketUnit,
  serviceUnitName,
  systemdEscapePath,
  systemdExecLine,
  systemdQuoteWord,
  warmInstances,
} from '../../src/deploy/systemd.js';
import { ACCEPT_PATH } from '../../src/accept/accept-elf.js';
import { DEFAULT_WARM_CONTAINERS } from '../../src/config/schema.js';
import { RUN_AS_PATH } from '../../src/service-user/run-as-elf.js';
import {
  BASE_FLAGS,
  HARDENING_FLAGS,
  SERVICE_UID_POOL,
  USERNS_FLAGS,
  serviceUidBase,
  serviceUsernsFlags,
} from '../../src/tools/nspawn.js';

const opts: DeployBundleOptions = {
  name: 'gophermoon',
  outDir: '/out',
  imageFile: 'gophermoon.squashfs',
  dataTemplateFile: 'gophermoon-data.tar.gz',
  service: {
    command: ['/bin/lua', '/bin/gophermoon'],
    env: { GOPHER_PORT: '70', GOPHER_ROOT: '/gopher' },
    inetd: true,
    timeout: 60,
  },
};
/** The nspawn runtime without warm containers: a container started per connection (Accept=yes). */
const cold: DeployBundleOptions = { ...opts, warmContainers: 0 };

/** The ExecStart= value as words, undoing systemdQuoteWord's quoting (systemd.service(5) rules). */
function execWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.matchAll(re)) {
    const raw =
      m[1] !== undefined
        ? m[1].replace(/\\(x[0-9a-f]{2}|.)/g, (_, c: string) => {
            if (c.startsWith('x') && c.length === 3)
              return String.fromCharCode(parseInt(c.slice(1), 16));
            return ({ n: '\n', t: '\t', r: '\r' } as Record<string, string>)[c] ?? c;
          })
        : m[2]!;
    words.push(raw.replace(/%%/g, '%').replace(/\$\$/g, '$'));
  }
  return words;
}

describe('systemdEscapePath', () => {
  it('matches systemd-escape --path, escaping "-" and a leading dot', () => {
    expect(systemdEscapePath('/var/lib/lhc/gophermoon/root')).toBe('var-lib-lhc-gophermoon-root');
    expect(systemdEscapePath('/var/lib/lhc/gopher-moon/data/')).toBe(
      'var-lib-lhc-gopher\\x2dmoon-data',
    );
    // Expected values as printed by systemd-escape --path (systemd 252).
    expect(systemdEscapePath('/srv/.hidden/a b')).toBe('srv-.hidden-a\\x20b');
    expect(systemdEscapePath('/.x/é')).toBe('\\x2ex-\\xc3\\xa9');
    expect(systemdEscapePath('/')).toBe('-');
  });
});

describe('ExecStart quoting', () => {
  it('doubles % and $ and quotes blanks, quotes and backslashes so the words parse back unchanged', () => {
    const argv = [
      '/usr/bin/systemd-nspawn',
      '--setenv=A=100%',
      '--setenv=B=$HOME',
      'two words',
      'q"uote',
      'back\\slash',
      'tab\there',
      '',
    ];
    const line = systemdExecLine(argv);
    expect(line).not.toMatch(/(^|[^%])%[^%]/);
    expect(line).toContain('--setenv=A=100%%');
    expect(line).toContain('--setenv=B=$$HOME');
    expect(execWords(line)).toEqual(argv);
  });

  it('leaves plain words alone', () => {
    expect(systemdQuoteWord('--bind=/var/lib/lhc/x/data:/data')).toBe(
      '--bind=/var/lib/lhc/x/data:/data',
    );
  });

  it('refuses a relative program', () => {
    expect(() => systemdExecLine(['systemd-nspawn'])).toThrow(/absolute program path/);
  });
});

describe('units', () => {
  const p = boardPaths(opts);

  it('socket: listens on 70 for an inetd service, one service instance per connection', () => {
    const text = renderSocketUnit(cold);
    expect(text).toMatch(/^ListenStream=70$/m);
    expect(text).toMatch(/^Accept=yes$/m);
    expect(
      renderSocketUnit({ ...opts, service: { ...opts.service, inetd: false, listen: 8080 } }),
    ).toMatch(/^ListenStream=8080\nAccept=no$/m);
  });

  it('service: socket on stdin/stdout, stderr to the journal, and exactly the nspawn hardening flags verify uses', () => {
    const text = renderServiceUnit(cold, p);
    expect(text).toMatch(/^StandardInput=socket$/m);
    expect(text).toMatch(/^StandardOutput=socket$/m);
    expect(text).toMatch(/^StandardError=journal$/m);
    const exec = execWords(/^ExecStart=(.*)$/m.exec(text)![1]!);
    expect(exec[0]).toBe('/usr/bin/systemd-nspawn');
    for (const f of [...BASE_FLAGS, ...HARDENING_FLAGS, '--read-only']) expect(exec).toContain(f);
    // The service's own fixed uid range, not a picked one (see serviceUsernsFlags).
    for (const f of serviceUsernsFlags('gophermoon')) expect(exec).toContain(f);
    expect(exec).not.toContain(USERNS_FLAGS[0]);
    expect(exec).toContain('--hostname=gophermoon');
    expect(exec).toContain(`--directory=${p.rootMount}`);
    expect(exec).toContain(`--bind=${p.dataMount}:/data:idmap`);
    expect(exec.slice(exec.indexOf('--') + 1)).toEqual(['/bin/lua', '/bin/gophermoon']);
    const mounts = [p.rootMount, p.dataMount].map((m) => `${systemdEscapePath(m)}.mount`).join(' ');
    expect(text).toContain(`\nWants=${mounts}\nAfter=${mounts}\n`);
  });

  it('service: each connection its own machine name (the invocation id), no image lock', () => {
    const text = renderServiceUnit(opts, p);
    const line = /^ExecStart=(.*)$/m.exec(text)![1]!;
    // Written for systemd to expand: `${INVOCATION_ID}` is 32 hex digits per connection.
    expect(line.split(' ')).toContain('--machine=lhc-gophermoon-${INVOCATION_ID}');
    expect(`lhc-${'x'.repeat(26)}-${'0'.repeat(32)}`.length).toBeLessThanOrEqual(63);
    expect(text).toMatch(/^Environment=SYSTEMD_NSPAWN_LOCK=0$/m);
    // A listening service runs one container: no per-connection name.
    const listen = renderServiceUnit(
      { ...opts, service: { ...opts.service, inetd: false, listen: 8080 } },
      p,
    );
    expect(listen).not.toContain('--machine=');
    expect(listen).toMatch(/^Environment=SYSTEMD_NSPAWN_LOCK=0$/m);
    const long = renderServiceUnit({ ...opts, name: `a${'b'.repeat(80)}` }, p);
    const word = /--machine=(\S+)/.exec(long)![1]!;
    expect(word.replace('${INVOCATION_ID}', '0'.repeat(32)).length).toBeLessThanOrEqual(63);
  });

  it('service: a fixed uid range per service, outside the range nspawn -U picks from', () => {
    const bases = new Set<number>();
    for (const name of ['gophermoon', 'nginx', 'a', 'gopher-moon', 'x'.repeat(60)]) {
      const base = serviceUidBase(name);
      expect(serviceUidBase(name)).toBe(base);
      expect(base % 65536).toBe(0);
      // nspawn 252 picks from 0x00080000-0x6FFF0000; 0x7FFE0000 up is systemd's foreign range.
      expect(base).toBeGreaterThanOrEqual(0x7000_0000);
      expect(base + SERVICE_UID_POOL.size).toBeLessThanOrEqual(0x7ffe_0000);
      expect(serviceUsernsFlags(name)).toEqual([
        `--private-users=${base}:65536`,
        '--private-users-ownership=map',
      ]);
      bases.add(base);
    }
    expect(bases.size).toBe(5);
  });

  it('service: the default limits (256M, 64 tasks, 100 % cpu, 1024 files) as unit cgroup limits and nspawn rlimits', () => {
    const text = renderServiceUnit(opts, p);
    for (const line of [
      'MemoryMax=268435456',
      'MemorySwapMax=0',
      'TasksMax=64',
      'CPUQuota=100%',
      'LimitNOFILE=1024',
    ])
      expect(text).toMatch(new RegExp(`^${line}$`, 'm'));
    const exec = execWords(/^ExecStart=(.*)$/m.exec(text)![1]!);
    expect(exec.slice(0, exec.indexOf('--'))).toEqual(
      expect.arrayContaining(['--rlimit=RLIMIT_NOFILE=1024', '--rlimit=RLIMIT_NPROC=64']),
    );
  });

  it('service: success-exit-status becomes SuccessExitStatus= of the per-connection unit', () => {
    expect(renderServiceUnit(cold, p)).not.toContain('SuccessExitStatus=');
    const text = renderServiceUnit(
      { ...cold, service: { ...cold.service, 'success-exit-status': [1, 3, 1] } },
      p,
    );
    expect(text).toMatch(/^SuccessExitStatus=1 3$/m);
    // A warm container's lhc-accept exits 0 whatever the connection's process returned.
    expect(
      renderServiceUnit(
        { ...opts, service: { ...opts.service, 'success-exit-status': [1, 3, 1] } },
        p,
      ),
    ).not.toContain('SuccessExitStatus=');
  });

  it('warm containers (the default): the socket pulls in N instances that share it, each serving one connection', () => {
    const socket = renderSocketUnit({ ...opts, warmContainers: 3 });
    const names = [
      'gophermoon@warm1.service',
      'gophermoon@warm2.service',
      'gophermoon@warm3.service',
    ];
    expect(socket).toMatch(/^Accept=no$/m);
    expect(socket).toContain(`\nWants=${names.join(' ')}\n`);
    expect(socket).toMatch(/^Service=gophermoon@warm1.service$/m);
    expect(socket).not.toMatch(/MaxConnections/);
    expect(warmInstances(opts)).toHaveLength(DEFAULT_WARM_CONTAINERS);
    expect(serviceUnitName(opts)).toBe('gophermoon@.service');

    const text = renderServiceUnit(opts, p);
    expect(text).toMatch(/^Sockets=gophermoon.socket$/m);
    expect(text).toMatch(/^Requires=gophermoon.socket$/m);
    expect(text).toMatch(/^Restart=on-success$/m);
    expect(text).toMatch(/^StartLimitIntervalSec=0$/m);
    expect(text).toMatch(/^KillMode=mixed$/m);
    expect(text).not.toMatch(/^StandardInput=socket$/m);
    // The container per connection is bounded by service.timeout through lhc-accept's alarm.
    expect(text).not.toMatch(/^RuntimeMaxSec=/m);
    const exec = execWords(/^ExecStart=(.*)$/m.exec(text)![1]!);
    for (const f of [...BASE_FLAGS, ...HARDENING_FLAGS, '--read-only']) expect(exec).toContain(f);
    for (const f of serviceUsernsFlags('gophermoon')) expect(exec).toContain(f);
    // A stop kills the container (nspawn's default); install.sh has lhc-accept drain on upgrade.
    expect(exec.some((w) => w.startsWith('--kill-signal'))).toBe(false);
    expect(exec).toContain('--machine=lhc-gophermoon-${INVOCATION_ID}');
    expect(exec.slice(exec.indexOf('--') + 1)).toEqual([
      ACCEPT_PATH,
      '60',
      '0',
      '/bin/lua',
      '/bin/gophermoon',
    ]);
    // lhc-accept runs first: lhc-run-as (service.user) drops to the user in the connection's process.
    const runAs = { uid: 100, gid: 101, groups: [101], name: 'gopher', home: '/' };
    const asUser = execWords(
      /^ExecStart=(.*)$/m.exec(renderServiceUnit({ ...opts, runAs }, p))![1]!,
    );
    expect(asUser.slice(asUser.indexOf('--') + 1, asUser.indexOf('--') + 5)).toEqual([
      ACCEPT_PATH,
      '60',
      '0',
      RUN_AS_PATH,
    ]);
  });

  it('warm containers: 0 or a listening service keep one unit per connection or one service', () => {
    expect(warmInstances(cold)).toEqual([]);
    expect(serviceUnitName(cold)).toBe('gophermoon@.service');
    const listen = { ...opts, service: { ...opts.service, inetd: false, listen: 8080 } };
    expect(warmInstances(listen)).toEqual([]);
    expect(serviceUnitName(listen)).toBe('gophermoon.service');
    expect(renderSocketUnit(listen)).not.toContain('Wants=');
    expect(warmInstances({ ...opts, runtime: 'systemd' })).toEqual([]);
  });

  it("service: a config's own limits replace the defaults", () => {
    const limits = { memory: 64 * 1024 ** 2, tasks: 20, cpu: 50, nofile: 300 };
    const text = renderServiceUnit({ ...opts, service: { ...opts.service, limits } }, p);
    expect(text).toMatch(/^MemoryMax=67108864$/m);
    expect(text).toMatch(/^TasksMax=20$/m);
    expect(text).toMatch(/^CPUQuota=50%$/m);
    expect(text).toMatch(/^LimitNOFILE=300$/m);
    expect(text).toContain('--rlimit=RLIMIT_NPROC=20');
    expect(text).not.toContain('MemoryMax=268435456');
  });

  it('fstab: loop read-only image and a noexec,nosuid,nodev data mount', () => {
    const lines = renderFstab(opts, p)
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(lines).toEqual([
      '/var/lib/lhc/gophermoon/gophermoon.squashfs /var/lib/lhc/gophermoon/root squashfs loop,ro,nodev 0 0',
      '/var/lib/lhc/gophermoon/gophermoon-data.ext4 /var/lib/lhc/gophermoon/data ext4 loop,noexec,nosuid,nodev 0 2',
    ]);
    const dev = boardPaths({ ...opts, dataSource: '/dev/mmcblk0p3' });
    expect(renderFstab(opts, dev)).toContain(
      '/dev/mmcblk0p3 /var/lib/lhc/gophermoon/data ext4 noexec,nosuid,nodev 0 2',
    );
  });
});

describe('OCI config', () => {
  const p = boardPaths(opts);
  const c = ociConfig(opts, p, { uid: 0, gid: 0 }) as {
    process: {
      args: string[];
      env: string[];
      terminal: boolean;
      noNewPrivileges: boolean;
      capabilities: Record<string, string[]>;
    };
    root: { path: string; readonly: boolean };
    mounts: { destination: string; source: string; options: string[] }[];
    linux: { namespaces: { type: string; path?: string }[] };
  };

  it('carries the default service.limits as resources and rlimits', () => {
    const full = c as unknown as {
      process: { rlimits: { type: string; hard: number; soft: number }[] };
      linux: { resources: Record<string, unknown> };
    };
    expect(full.process.rlimits).toEqual([
      { type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 },
      { type: 'RLIMIT_NPROC', hard: 64, soft: 64 },
    ]);
    expect(full.linux.resources).toMatchObject({
      memory: { limit: 256 * 1024 ** 2 },
      pids: { limit: 64 },
      cpu: { quota: 100_000, period: 100_000 },
    });
  });

  it('has the same guarantees as the nspawn unit', () => {
    expect(c.process.args).toEqual(['/bin/lua', '/bin/gophermoon']);
    expect(c.process.env).toEqual(
      expect.arrayContaining(['GOPHER_PORT=70', 'GOPHER_ROOT=/gopher']),
    );
    expect(c.process.terminal).toBe(false);
    expect(c.process.noNewPrivileges).toBe(true);
    for (const set of Object.values(c.process.capabilities)) {
      expect(set).not.toContain('CAP_NET_ADMIN');
      expect(set).not.toContain('CAP_SYS_ADMIN');
    }
    expect(c.root).toEqual({ path: p.rootMount, readonly: true });
    const net = c.linux.namespaces.find((n) => n.type === 'network');
    expect(net).toEqual({ type: 'network' });
    const data = c.mounts.find((m) => m.destination === '/data')!;
    expect(data.source).toBe(p.dataMount);
    expect(data.options).toEqual(expect.arrayContaining(['noexec', 'nosuid', 'nodev']));
  });
});

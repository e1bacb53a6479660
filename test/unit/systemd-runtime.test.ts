/**
 * deploy.runtime: systemd: the sandboxed service unit's text, the bundle and install.sh around
 * it, the board's way of finding its payload, and the hardening row that replaces the uid-map
 * one. The exposure score itself comes from real systemd-analyze in
 * test/integration/exposure-score.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { inServiceCgroup } from '../../src/board/service-procs.js';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { DEFAULT_WARM_CONTAINERS } from '../../src/config/schema.js';
import { boardPaths, type DeployBundleOptions } from '../../src/deploy/bundle.js';
import { renderInstallScript } from '../../src/deploy/install-script.js';
import { renderReadme } from '../../src/deploy/readme.js';
import { renderServiceUnit, renderSocketUnit, serviceUnitName } from '../../src/deploy/systemd.js';
import { ACCEPT_MAX_CONNECTIONS, ACCEPT_PATH, acceptArgv } from '../../src/accept/accept-elf.js';
import { renderSysusers, sysusersFiles } from '../../src/deploy/systemd-runtime.js';
import { parseExposure, parseSystemdVersion } from '../../src/tools/systemd-analyze.js';
import { mountPoints } from '../../src/tools/nspawn.js';
import { run } from '../../src/tools/exec.js';
import { checkNotHostRoot } from '../../src/verify/hardening.js';

const inetd: DeployBundleOptions = {
  name: 'gophermoon',
  outDir: '/out',
  imageFile: 'gophermoon.squashfs',
  dataTemplateFile: 'gophermoon-data.tar.gz',
  runtime: 'systemd',
  service: {
    command: ['/bin/lua', '/bin/gophermoon'],
    env: { GOPHER_ROOT: '/gopher', GOPHER_PORT: '70' },
    inetd: true,
    timeout: 60,
    limits: { memory: 128 * 1024 ** 2, tasks: 32, cpu: 50, nofile: 256 },
  },
};
const listen: DeployBundleOptions = {
  ...inetd,
  name: 'nginx',
  imageFile: 'nginx.squashfs',
  dataTemplateFile: 'nginx-data.tar.gz',
  service: { command: ['/usr/sbin/nginx', '-g', 'daemon off;'], listen: 80, timeout: 120 },
};

/** `Key=value` lines of a unit's [Service] section, in order (repeated keys kept). */
function serviceLines(unit: string): [string, string][] {
  const body = unit.slice(unit.indexOf('[Service]\n') + 10).split('\n[')[0]!;
  return body
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]);
}

function values(unit: string, key: string): string[] {
  return serviceLines(unit)
    .filter(([k]) => k === key)
    .map(([, v]) => v);
}

describe('the systemd runtime service unit', () => {
  const p = boardPaths(inetd);
  const unit = renderServiceUnit(inetd, p);

  it('runs the payload itself on the mounted image, with no nspawn', () => {
    // One sandbox: lhc-accept starts the command per connection, SIGALRM after service.timeout.
    expect(values(unit, 'ExecStart')).toEqual([
      `/usr/lib/lhc/lhc-accept 60 ${ACCEPT_MAX_CONNECTIONS} /bin/lua /bin/gophermoon`,
    ]);
    expect(unit).not.toContain('nspawn');
    expect(values(unit, 'RootDirectory')).toEqual([p.rootMount]);
    expect(values(unit, 'BindPaths')).toEqual([`${p.dataMount}:/data`]);
    expect(values(unit, 'BindReadOnlyPaths')).toEqual([]);
    expect(values(unit, 'Environment')).toEqual(['GOPHER_PORT=70 GOPHER_ROOT=/gopher']);
    expect(values(unit, 'User')).toEqual(['lhc-gophermoon']);
    expect(values(unit, 'DynamicUser')).toEqual([]);
    expect(values(unit, 'StandardInput')).toEqual([]);
    expect(values(unit, 'StandardOutput')).toEqual([]);
    expect(values(unit, 'StandardError')).toEqual(['journal']);
    expect(values(unit, 'Delegate')).toEqual([]);
    // Stopping ends the loop only: connections in flight finish.
    expect(values(unit, 'KillMode')).toEqual(['mixed']);
    expect(values(unit, 'TimeoutStopSec')).toEqual(['65']);
  });

  it('is one service on a socket without Accept=, not a template per connection', () => {
    expect(serviceUnitName(inetd)).toBe('gophermoon.service');
    expect(serviceUnitName({ ...inetd, runtime: 'nspawn' })).toBe('gophermoon@.service');
    expect(serviceUnitName(listen)).toBe('nginx.service');
    const socket = renderSocketUnit(inetd);
    expect(socket).toMatch(/^Accept=no$/m);
    expect(socket).not.toMatch(/^MaxConnections/m);
    expect(renderSocketUnit({ ...inetd, runtime: 'nspawn', warmContainers: 0 })).toMatch(
      /^Accept=yes$/m,
    );
    expect(values(unit, 'CollectMode')).toEqual([]);
    expect(acceptArgv(['/bin/x'], 2.5)).toEqual([ACCEPT_PATH, '3', '32', '/bin/x']);
    expect(acceptArgv(['/bin/x'], undefined)).toEqual([ACCEPT_PATH, '0', '32', '/bin/x']);
  });

  it('carries the strict sandbox, each setting once', () => {
    const want: Record<string, string> = {
      PrivateNetwork: 'yes',
      PrivateUsers: 'yes',
      PrivateDevices: 'yes',
      PrivateIPC: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      ProtectProc: 'invisible',
      NoNewPrivileges: 'yes',
      CapabilityBoundingSet: '',
      AmbientCapabilities: '',
      RestrictAddressFamilies: 'none',
      SystemCallArchitectures: 'native',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectKernelLogs: 'yes',
      ProtectControlGroups: 'yes',
      ProtectClock: 'yes',
      ProtectHostname: 'yes',
      LockPersonality: 'yes',
      RestrictNamespaces: 'yes',
      RestrictSUIDSGID: 'yes',
      MemoryDenyWriteExecute: 'yes',
      UMask: '0077',
    };
    for (const [k, v] of Object.entries(want)) expect([k, values(unit, k)]).toEqual([k, [v]]);
    expect(values(unit, 'SystemCallFilter')).toEqual([
      '@system-service',
      '~@privileged @resources',
    ]);
  });

  it('mounts /tmp, /var/tmp, /run and /dev/shm itself, noexec,nosuid,nodev (not PrivateTmp=)', () => {
    expect(values(unit, 'PrivateTmp')).toEqual([]);
    const [tmpfs] = values(unit, 'TemporaryFileSystem');
    const mounts = tmpfs!.split(' ').map((m) => m.split(':'));
    expect(mounts.map(([path]) => path)).toEqual(['/tmp', '/var/tmp', '/run', '/dev/shm']);
    for (const [, opts] of mounts)
      expect(opts!.split(',')).toEqual(expect.arrayContaining(['noexec', 'nosuid', 'nodev']));
  });

  it('takes its limits from service.limits, per connection for an inetd service', () => {
    const n = ACCEPT_MAX_CONNECTIONS;
    expect(values(unit, 'MemoryMax')).toEqual([String(128 * 1024 ** 2 * n)]);
    expect(values(unit, 'TasksMax')).toEqual([String(32 * n)]);
    expect(values(unit, 'CPUQuota')).toEqual([`${50 * n}%`]);
    expect(values(unit, 'LimitNOFILE')).toEqual(['256']);
    expect(values(unit, 'LimitNPROC')).toEqual([String(32 * n)]);
    // The loop runs for long; each connection's process gets the timeout as an alarm instead.
    expect(values(unit, 'RuntimeMaxSec')).toEqual([]);
    const daemon = renderServiceUnit(
      { ...listen, service: { ...listen.service, limits: inetd.service.limits } },
      boardPaths(listen),
    );
    expect(values(daemon, 'MemoryMax')).toEqual([String(128 * 1024 ** 2)]);
    expect(values(daemon, 'TasksMax')).toEqual(['32']);
  });

  it('for a listen service: Internet sockets, the port made bindable, an [Install] section', () => {
    const u = renderServiceUnit(listen, boardPaths(listen));
    expect(values(u, 'RestrictAddressFamilies')).toEqual(['AF_UNIX AF_INET AF_INET6']);
    expect(values(u, 'PrivateNetwork')).toEqual(['yes']);
    expect(values(u, 'ExecStartPre')[0]).toMatch(/^\+\/bin\/sh -c .*ip_unprivileged_port_start/);
    // The image has no shell: that ExecStartPre= runs the board's, only ExecStart= the image.
    expect(values(u, 'RootDirectoryStartOnly')).toEqual(['yes']);
    expect(values(unit, 'RootDirectoryStartOnly')).toEqual([]);
    expect(values(unit, 'ExecStartPre')).toEqual([]);
    expect(values(u, 'StandardInput')).toEqual([]);
    expect(u).toContain('\n[Install]\nWantedBy=multi-user.target\n');
    expect(renderSocketUnit(listen)).toContain('Service=nginx-proxy.service');
  });

  it('leaves the nspawn runtime (the default) as it was', () => {
    const nspawn = renderServiceUnit({ ...inetd, runtime: undefined }, p);
    expect(values(nspawn, 'ExecStart')[0]).toMatch(/^\/usr\/bin\/systemd-nspawn /);
    expect(renderServiceUnit({ ...inetd, runtime: 'nspawn' }, p)).toBe(nspawn);
    expect(values(nspawn, 'RootDirectory')).toEqual([]);
  });

  it('explains itself in the bundle README, the nspawn one explains its 9.6', () => {
    expect(renderReadme(inetd, p)).toContain('Runtime: systemd');
    expect(renderReadme(inetd, p)).toContain('lhc-gophermoon');
    const nspawn = renderReadme({ ...inetd, runtime: 'nspawn' }, p);
    expect(nspawn).toContain('invisible to systemd-analyze');
    // Only a proxied daemon runs a command outside its sandbox, and its README says why.
    expect(renderReadme(inetd, p)).not.toContain('RootDirectoryStartOnly');
    expect(renderReadme(listen, boardPaths(listen))).toContain('RootDirectoryStartOnly=yes');
  });
});

describe('the systemd runtime around the unit', () => {
  it('declares its user for systemd-sysusers', () => {
    expect(renderSysusers('gophermoon')).toMatch(
      /^u lhc-gophermoon - "lhc gophermoon" \/nonexistent \/usr\/sbin\/nologin$/m,
    );
    expect(sysusersFiles('gophermoon')).toEqual({
      bundle: 'gophermoon.sysusers.conf',
      installed: 'lhc-gophermoon.conf',
    });
  });

  it('install.sh needs no nspawn but systemd-sysusers, and a release covers its units', async () => {
    const base = {
      name: 'gophermoon',
      boardDir: '/var/lib/lhc/gophermoon',
      imageFile: 'gophermoon.squashfs',
      dataTemplateFile: 'gophermoon-data.tar.gz',
      dataSource: '/var/lib/lhc/gophermoon/gophermoon-data.ext4',
      dataIsLoopFile: true,
      dataMount: '/var/lib/lhc/gophermoon/data',
      units: {
        socket: 'gophermoon.socket',
        service: 'gophermoon@.service',
        rootMount: 'a.mount',
        dataMount: 'b.mount',
        extra: [],
      },
      programs: [],
    };
    const sandboxed = renderInstallScript({
      ...base,
      nspawnPath: '',
      sysusers: sysusersFiles('gophermoon'),
    });
    expect(sandboxed).toContain("NSPAWN=''");
    expect(sandboxed).toContain("SYSUSERS_FILE='gophermoon.sysusers.conf'");
    expect(sandboxed).toContain('systemd-sysusers "/etc/sysusers.d/$SYSUSERS_NAME"');
    expect(sandboxed).toMatch(/release_id\(\) \{\n.*for u in \$UNIT_FILES \$SYSUSERS_FILE/);
    expect(sandboxed).toMatch(/own_data\(\) \{\n.*\n.*\n.*-user 0 -exec chown -h "\$u:\$u"/);
    const parsed = await run(['sh', '-n'], { input: sandboxed, reject: false });
    expect([parsed.exitCode, parsed.stderr]).toEqual([0, '']);
    const nspawn = renderInstallScript({ ...base, nspawnPath: '/usr/bin/systemd-nspawn' });
    expect(nspawn).toContain("NSPAWN='/usr/bin/systemd-nspawn'");
    expect(nspawn).toContain("SYSUSERS_FILE=''");
  });

  it('gives systemd-runtime images /var/tmp as a mount point, nspawn ones stay as they were', () => {
    expect(mountPoints('/data')).toEqual([
      '/usr',
      '/proc',
      '/sys',
      '/dev',
      '/run',
      '/tmp',
      '/data',
    ]);
    expect(mountPoints('/data', 'systemd')).toEqual([
      '/usr',
      '/proc',
      '/sys',
      '/dev',
      '/run',
      '/tmp',
      '/var/tmp',
      '/data',
    ]);
  });
});

describe('deploy.runtime in lhc.yml', () => {
  const config = (extra: string) =>
    `name: x\nservice:\n  command: [/bin/x]\n  inetd: true\nprobes:\n  - {name: a, type: gopher, fixture: f}\n${extra}`;
  it('defaults to nspawn and takes systemd', () => {
    expect(parseConfig(config('')).deploy).toEqual({
      runtime: 'nspawn',
      'warm-containers': DEFAULT_WARM_CONTAINERS,
    });
    expect(parseConfig(config('deploy:\n  runtime: systemd\n')).deploy).toEqual({
      runtime: 'systemd',
      'warm-containers': DEFAULT_WARM_CONTAINERS,
    });
    expect(parseConfig(config('deploy:\n  warm-containers: 0\n')).deploy).toEqual({
      runtime: 'nspawn',
      'warm-containers': 0,
    });
  });
  it('refuses warm-containers outside 0..32, naming the field', () => {
    for (const bad of ['-1', '33', '1.5', 'many'])
      expect(() => parseConfig(config(`deploy:\n  warm-containers: ${bad}\n`))).toThrow(
        /^deploy\.warm-containers: /,
      );
  });
  it('refuses another runtime, naming the field', () => {
    let err: unknown;
    try {
      parseConfig(config('deploy:\n  runtime: docker\n'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^deploy\.runtime: .*nspawn.*systemd/);
  });
});

describe('finding the systemd runtime payload on the board', () => {
  it('matches the service and its instances by cgroup, not the proxy or another service', () => {
    const cg = (p: string) => `12:pids:${p}\n1:name=systemd:${p}\n0::${p}\n`;
    const inst =
      '/machine/system.slice/system-gophermoon.slice/gophermoon@3-127.0.0.1:70-127.0.0.1:5.service';
    expect(inServiceCgroup(cg(inst), 'gophermoon')).toBe(true);
    expect(inServiceCgroup(cg('/system.slice/gophermoon.service'), 'gophermoon')).toBe(true);
    expect(inServiceCgroup(cg('/system.slice/nginx.service'), 'nginx')).toBe(true);
    expect(inServiceCgroup(cg('/system.slice/nginx-proxy.service'), 'nginx')).toBe(false);
    expect(inServiceCgroup(cg('/system.slice/gophermoon.socket'), 'gophermoon')).toBe(false);
    expect(inServiceCgroup(cg('/system.slice/xgophermoon.service'), 'gophermoon')).toBe(false);
  });
});

describe('checkNotHostRoot', () => {
  const status = (uid: string, bnd: string, nnp: string) =>
    `Name:\tlua\nUid:\t${uid}\nCapBnd:\t${bnd}\nNoNewPrivs:\t${nnp}\n`;
  it('passes an unprivileged user with no capabilities and NoNewPrivs', () => {
    // As read on the simulated board from a live gophermoon connection (systemd 252).
    expect(checkNotHostRoot(status('996\t996\t996\t996', '0000000000000000', '1')).ok).toBe(true);
  });
  it('fails root, any capability left, or NoNewPrivs off', () => {
    expect(checkNotHostRoot(status('0\t0\t0\t0', '0000000000000000', '1')).ok).toBe(false);
    expect(checkNotHostRoot(status('996\t996\t0\t996', '0000000000000000', '1')).ok).toBe(false);
    expect(checkNotHostRoot(status('996\t996\t996\t996', '0000000000000400', '1')).ok).toBe(false);
    expect(checkNotHostRoot(status('996\t996\t996\t996', '0000000000000000', '0')).ok).toBe(false);
    expect(checkNotHostRoot('Name:\tlua\n').ok).toBe(false);
  });
});

describe('systemd-analyze output', () => {
  it('reads the overall exposure line and the version', () => {
    expect(
      parseExposure('✗ X\n\n→ Overall exposure level for gophermoon@i.service: 9.6 UNSAFE 😨\n'),
    ).toEqual({ unit: 'gophermoon@i.service', score: 9.6, level: 'UNSAFE' });
    expect(parseExposure('nothing here')).toBeUndefined();
    expect(parseSystemdVersion('systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT')).toBe(
      '252.39-1~deb12u2',
    );
  });
});

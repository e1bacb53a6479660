/**
 * The board-facing parts of the deploy bundle: install.sh as text (it must parse as POSIX sh and
 * carry the bundle's names), and the units that let a `listen:` service be reached through
 * systemd-socket-proxyd while its container keeps a private network.
 */
import { describe, expect, it } from 'vitest';
import { renderInstallScript, shQuote } from '../../src/deploy/install-script.js';
import { SOCKET_PROXYD, proxyUnitName, renderProxyUnit } from '../../src/deploy/listen-proxy.js';
import { boardPaths, type DeployBundleOptions } from '../../src/deploy/bundle.js';
import {
  renderServiceUnit,
  renderSocketUnit,
  systemdExecLine,
  unitNspawnArgv,
} from '../../src/deploy/systemd.js';
import { run } from '../../src/tools/exec.js';

const nginx: DeployBundleOptions = {
  name: 'nginx',
  outDir: '/out',
  imageFile: 'nginx.squashfs',
  dataTemplateFile: 'nginx-data.tar.gz',
  service: { command: ['/usr/sbin/nginx', '-g', 'daemon off;'], listen: 80 },
};
const p = boardPaths(nginx);

describe('install.sh', () => {
  const script = renderInstallScript({
    name: "it's",
    boardDir: '/var/lib/lhc/x y',
    imageFile: 'x.squashfs',
    dataTemplateFile: 'x-data.tar.gz',
    dataSource: '/var/lib/lhc/x y/x-data.ext4',
    dataIsLoopFile: true,
    dataMount: '/var/lib/lhc/x y/data',
    units: {
      socket: 'x.socket',
      service: 'x@.service',
      rootMount: 'a.mount',
      dataMount: 'b.mount',
      extra: [],
    },
    nspawnPath: '/usr/bin/systemd-nspawn',
    programs: [],
  });

  it('parses as POSIX sh (dash -n)', async () => {
    const r = await run(['sh', '-n'], { input: script, reject: false });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
  });

  it('quotes every baked-in value, so blanks and quotes stay literal', async () => {
    expect(script).toContain(`BOARD_DIR=${shQuote('/var/lib/lhc/x y')}\n`);
    const r = await run(['sh', '-c', `printf %s ${shQuote("it's $HOME `x`")}`]);
    expect(r.stdout).toBe("it's $HOME `x`");
  });

  it('refuses an unknown command with its usage', async () => {
    const r = await run(['sh', '-s', 'frobnicate'], { input: script, reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/usage: .*install\|upgrade\|rollback\|uninstall/);
  });
});

describe('a listen: service on the board', () => {
  it('the socket hands connections to the proxy, not to the service', () => {
    const socket = renderSocketUnit(nginx);
    expect(socket).toMatch(/^Accept=no$/m);
    expect(socket).toMatch(new RegExp(`^Service=${proxyUnitName('nginx')}$`, 'm'));
  });

  it('the service owns a private network namespace and nspawn shares it', () => {
    const unit = renderServiceUnit(nginx, p);
    expect(unit).toMatch(/^PrivateNetwork=yes$/m);
    const argv = unitNspawnArgv(nginx, p);
    expect(argv).not.toContain('--private-network');
    expect(argv.some((a) => a.startsWith('--drop-capability=CAP_NET_ADMIN'))).toBe(true);
  });

  it('the proxy joins that namespace and forwards to the daemon port there', () => {
    const unit = renderProxyUnit('nginx', 80, systemdExecLine, '');
    expect(unit).toMatch(/^JoinsNamespaceOf=nginx\.service$/m);
    expect(unit).toMatch(/^PrivateNetwork=yes$/m);
    expect(unit).toMatch(/^Requires=nginx\.service$/m);
    expect(unit).toContain(`ExecStart=${SOCKET_PROXYD} 127.0.0.1:80\n`);
  });

  it('socket-activation: the socket starts the service, nspawn keeps its own network, no proxy', () => {
    const direct = { ...nginx, service: { ...nginx.service, 'socket-activation': true } };
    const socket = renderSocketUnit(direct);
    expect(socket).toMatch(/^Accept=no$/m);
    expect(socket).not.toMatch(/^Service=/m);
    const unit = renderServiceUnit(direct, p);
    expect(unit).not.toMatch(/^PrivateNetwork=/m);
    expect(unit).not.toMatch(/^ExecStartPre=/m);
    // Started by its socket only: enabling it at boot would start it without the socket's fd.
    expect(unit).not.toMatch(/^\[Install\]/m);
    expect(unitNspawnArgv(direct, p)).toContain('--private-network');
  });

  it("an inetd service keeps nspawn's own private network", () => {
    const gopher = { ...nginx, service: { command: ['/bin/lua'], inetd: true } };
    expect(unitNspawnArgv(gopher, p)).toContain('--private-network');
    expect(renderServiceUnit(gopher, p)).not.toMatch(/^PrivateNetwork=/m);
  });
});

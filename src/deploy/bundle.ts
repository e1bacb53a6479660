/**
 * The board's deploy bundle (<outDir>/deploy/): systemd units that run the image the way verify
 * ran it, fstab lines as an alternative to the mount units, an OCI runtime config for runc, and
 * install notes. The service's ExecStart is built by nspawnArgv() with the same hardening flags
 * verify checks, so what is tested is what the board runs.
 *
 * Board layout (all under <boardDir>, default /var/lib/lhc/<name>):
 *   <name>.squashfs        the image, loop-mounted read-only at root/
 *   <name>-data.ext4       the data partition (or a real partition), mounted noexec,nosuid,nodev at data/
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { stageOutput, writeExclusive } from '../core/safe-write.js';
import type { Runtime } from '../config/schema.js';
import type { ContainerLimits } from '../tools/nspawn.js';
import type { RunAs } from '../service-user/passwd.js';
import { renderSysusers, sysusersFiles } from './systemd-runtime.js';
import { OCI_USER_NAMESPACE, ociConfig, ociUser } from './oci.js';
import { renderReadme } from './readme.js';
import { renderInstallScript } from './install-script.js';
import {
  PROXY_PROGRAMS,
  PROXY_SANDBOX,
  proxied,
  proxyUnitName,
  renderProxyUnit,
} from './listen-proxy.js';
import {
  HEADER,
  listenPort,
  renderFstab,
  renderMountUnits,
  renderServiceUnit,
  renderSocketUnit,
  serviceUnitName,
  systemdEscapePath,
  systemdExecLine,
} from './systemd.js';

export interface ServiceSpec {
  command: readonly string[];
  env?: Readonly<Record<string, string>>;
  workdir?: string;
  inetd?: boolean;
  listen?: number;
  /** The daemon takes the board's socket itself (LISTEN_FDS): no proxy, see listen-proxy.ts. */
  'socket-activation'?: boolean;
  /** Seconds one connection (or run) may take; becomes RuntimeMaxSec. */
  timeout?: number;
  /** Per-container limits; the units' MemoryMax=, TasksMax=, CPUQuota=, LimitNOFILE=. */
  limits?: ContainerLimits;
  /** inetd: exit codes that end a connection normally (SuccessExitStatus= of the per-connection unit). */
  'success-exit-status'?: readonly number[];
}

export interface DeployBundleOptions {
  name: string;
  /** The bundle goes to <outDir>/deploy. */
  outDir: string;
  service: ServiceSpec;
  /** Where the data partition is mounted in the container; default /data. */
  dataPath?: string;
  /** File names of the packed artifacts (as in outDir). */
  imageFile: string;
  dataTemplateFile: string;
  /** Install directory on the board; default /var/lib/lhc/<name>. */
  boardDir?: string;
  /** What the data mount mounts; default <boardDir>/<name>-data.ext4 (a loop file). A partition works too. */
  dataSource?: string;
  /** systemd-nspawn on the board; ExecStart wants an absolute path. */
  nspawnPath?: string;
  /** service.user's ids (read from the image's lhc-run-as); undefined runs the command as root. */
  runAs?: RunAs;
  /** How the board runs the image (deploy.runtime): nspawn containers (default) or a sandboxed service. */
  runtime?: Runtime;
  /** deploy.warm-containers (nspawn runtime, inetd): containers kept ready for a connection each. */
  warmContainers?: number;
  logger?: Logger;
}

export interface BoardPaths {
  boardDir: string;
  image: string;
  rootMount: string;
  dataSource: string;
  dataMount: string;
  dataIsLoopFile: boolean;
}

export interface DeployBundle {
  dir: string;
  /** Every file written, relative to outDir (e.g. "deploy/gophermoon.socket"), sorted. */
  files: string[];
  paths: BoardPaths;
  units: { socket: string; service: string; rootMount: string; dataMount: string; proxy?: string };
}

export function boardPaths(
  o: Pick<DeployBundleOptions, 'name' | 'boardDir' | 'imageFile' | 'dataSource'>,
): BoardPaths {
  const boardDir = o.boardDir ?? `/var/lib/lhc/${o.name}`;
  if (!path.isAbsolute(boardDir))
    throw new UserError(`board directory must be absolute, got ${boardDir}`);
  const dataSource = o.dataSource ?? `${boardDir}/${o.name}-data.ext4`;
  return {
    boardDir,
    image: `${boardDir}/${o.imageFile}`,
    rootMount: `${boardDir}/root`,
    dataSource,
    dataMount: `${boardDir}/data`,
    dataIsLoopFile: !dataSource.startsWith('/dev/'),
  };
}

export async function writeDeployBundle(o: DeployBundleOptions): Promise<DeployBundle> {
  if (!o.service.command[0]?.startsWith('/'))
    throw new UserError('service.command[0] must be an absolute path in the image');
  const p = boardPaths(o);
  const dir = path.join(o.outDir, 'deploy');
  const { rootMount, dataMount } = renderMountUnits(o, p);
  const units = {
    socket: `${o.name}.socket`,
    service: serviceUnitName(o),
    rootMount: `${systemdEscapePath(p.rootMount)}.mount`,
    dataMount: `${systemdEscapePath(p.dataMount)}.mount`,
    ...(proxied(o.service) ? { proxy: proxyUnitName(o.name) } : {}),
  };
  const sandboxed = o.runtime === 'systemd';
  const sysusers = sysusersFiles(o.name);
  const ids = ociUser(o.runAs);
  const contents: Record<string, string> = {
    [units.socket]: renderSocketUnit(o),
    [units.service]: renderServiceUnit(o, p),
    [units.rootMount]: rootMount,
    [units.dataMount]: dataMount,
    fstab: renderFstab(o, p),
    'oci/config.json':
      JSON.stringify(ociConfig(o, p, ids, { userNamespace: OCI_USER_NAMESPACE }), null, 2) + '\n',
    'README.md': renderReadme(o, p),
  };
  if (sandboxed) contents[sysusers.bundle] = renderSysusers(o.name);
  if (proxied(o.service))
    contents[proxyUnitName(o.name)] = renderProxyUnit(
      o.name,
      listenPort(o.service),
      systemdExecLine,
      HEADER(o.name),
      sandboxed ? PROXY_SANDBOX : '',
    );
  contents['install.sh'] = renderInstallScript({
    name: o.name,
    boardDir: p.boardDir,
    imageFile: o.imageFile,
    dataTemplateFile: o.dataTemplateFile,
    dataSource: p.dataSource,
    dataIsLoopFile: p.dataIsLoopFile,
    dataMount: p.dataMount,
    units: { ...units, extra: proxied(o.service) ? [proxyUnitName(o.name)] : [] },
    // The sandboxed service needs no nspawn on the board, but a user made by systemd-sysusers.
    nspawnPath: sandboxed ? '' : (o.nspawnPath ?? '/usr/bin/systemd-nspawn'),
    sysusers: sandboxed ? sysusers : undefined,
    programs: proxied(o.service) ? PROXY_PROGRAMS : [],
    ...(o.service.timeout !== undefined ? { connectionTimeout: o.service.timeout } : {}),
  });
  // Written whole every time (staged, then renamed over the earlier one): a unit left from an
  // earlier build (another name) must not ship.
  await mkdir(o.outDir, { recursive: true });
  await stageOutput(
    dir,
    async (tmp) => {
      await mkdir(path.join(tmp, 'oci'), { recursive: true, mode: 0o755 });
      for (const [f, text] of Object.entries(contents))
        await writeExclusive(path.join(tmp, f), text, f.endsWith('.sh') ? 0o755 : 0o644);
    },
    o.logger,
  );
  o.logger?.info(
    `deploy bundle: ${dir} (${units.socket}, ${units.service}, mounts, fstab, oci/config.json)`,
  );
  return {
    dir,
    files: Object.keys(contents)
      .map((f) => `deploy/${f}`)
      .sort(),
    paths: p,
    units,
  };
}

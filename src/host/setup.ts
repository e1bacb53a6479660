/**
 * `lhc setup`: installs and registers everything doctor checks, and only what is missing, so a
 * second run changes nothing. Planning is pure (state in, steps out) and tested with fake hosts;
 * applying runs each step through the exec wrapper, privileged (root, or `sudo -n`).
 */
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { formatCommand, run } from '../tools/exec.js';
import type { HostProbe } from './probe.js';
import {
  BINFMT_DIR,
  LHC_DEB_SRC,
  LHC_DEB_SRC_LIST,
  QEMU_BINFMT_CONF,
  isAarch64,
  setupPackages,
} from './requirements.js';

export interface SetupStep {
  /** What the step does, for progress output. */
  what: string;
  argv: string[];
  /** Bytes for the command's stdin (file contents for `tee`). */
  input?: string;
}

export interface Plan {
  steps: SetupStep[];
  /** Things already in place, reported so a second run says so. */
  present: string[];
  warnings: string[];
}

export interface AptSourceFile {
  file: string;
  text: string;
}

export interface PackageState {
  arch: string;
  foreignArchs: string[];
  /** The packages setup wants that are already installed. */
  installed: Set<string>;
  /** /etc/apt/sources.list and every file in /etc/apt/sources.list.d. */
  sources: AptSourceFile[];
  /** ID and VERSION_CODENAME from /etc/os-release. */
  os?: { id: string; codename?: string };
  /** Ubuntu's arm64 ports archive URL ($LHC_UBUNTU_PORTS_MIRROR); only Ubuntu amd64 hosts need it. */
  portsMirror?: string;
}

export interface BinfmtState {
  arch: string;
  mounted: boolean;
  /** Contents of binfmt_misc/qemu-aarch64, when registered. */
  entry?: string;
  /** Contents of /usr/lib/binfmt.d/qemu-aarch64.conf, when qemu-user-static is installed. */
  conf?: string;
}

/**
 * apt-get, waiting up to 10 minutes for the package manager's lock instead of failing: a fresh
 * cloud machine often runs unattended-upgrades at first boot, and two setups may run at once.
 */
const APT_GET = [
  'env',
  'DEBIAN_FRONTEND=noninteractive',
  'apt-get',
  '-o',
  'DPkg::Lock::Timeout=600',
];

/** deb822 stanzas (blank-line separated), each as its lines. */
function stanzas(text: string): string[][] {
  return text
    .split(/\n\s*\n/)
    .map((s) => s.split('\n').filter((l) => l.length > 0))
    .filter((s) => s.some((l) => !l.startsWith('#')));
}

function field(stanza: string[], name: string): string | undefined {
  const re = new RegExp(`^${name}:\\s*(.*)$`, 'i');
  for (const l of stanza) {
    const m = re.exec(l);
    if (m) return m[1]!.trim();
  }
  return undefined;
}

function stanzaEnabled(stanza: string[]): boolean {
  return (field(stanza, 'Enabled') ?? 'yes').toLowerCase() !== 'no';
}

/** True when any enabled apt source already has deb-src entries. */
export function hasDebSrc(sources: readonly AptSourceFile[]): boolean {
  for (const s of sources) {
    if (s.file.endsWith('.sources')) {
      for (const st of stanzas(s.text)) {
        const types = (field(st, 'Types') ?? '').split(/\s+/);
        if (stanzaEnabled(st) && types.includes('deb-src')) return true;
      }
    } else if (s.file.endsWith('.list') && /^\s*deb-src\s/m.test(s.text)) {
      return true;
    }
  }
  return false;
}

/**
 * The deb-src file to add: the distribution's own `deb` entries cloned as `deb-src`. Third-party
 * sources are left alone since most publish no sources and would break `apt-get update`.
 */
export function debSrcFile(
  sources: readonly AptSourceFile[],
): { file: string; text: string } | undefined {
  const deb822 = sources.find((s) => /\/(debian|ubuntu)\.sources$/.test(s.file));
  if (deb822) {
    const out: string[] = [];
    for (const st of stanzas(deb822.text)) {
      const types = (field(st, 'Types') ?? '').split(/\s+/);
      if (!stanzaEnabled(st) || !types.includes('deb')) continue;
      out.push(st.map((l) => (/^Types:/i.test(l) ? 'Types: deb-src' : l)).join('\n'));
    }
    if (out.length > 0) return { file: LHC_DEB_SRC, text: `${out.join('\n\n')}\n` };
  }
  const classic = sources.find((s) => s.file === '/etc/apt/sources.list');
  if (classic) {
    const lines = classic.text
      .split('\n')
      .filter((l) => /^\s*deb\s/.test(l))
      .map((l) => l.replace(/^\s*deb\s/, 'deb-src '));
    if (lines.length > 0) return { file: LHC_DEB_SRC_LIST, text: `${lines.join('\n')}\n` };
  }
  return undefined;
}

export const UBUNTU_PORTS = '/etc/apt/sources.list.d/lhc-ubuntu-ports.sources';

/** ID and VERSION_CODENAME of /etc/os-release. */
export function parseOsRelease(text: string): { id: string; codename?: string } {
  const get = (k: string) => {
    const m = new RegExp(`^${k}=(.*)$`, 'm').exec(text);
    return m ? m[1]!.trim().replace(/^["']|["']$/g, '') : undefined;
  };
  return { id: get('ID') ?? '', codename: get('VERSION_CODENAME') || get('UBUNTU_CODENAME') };
}

/** Adds `Architectures: ARCH` to every deb822 stanza that has Types but no Architectures. */
export function pinDeb822Arch(text: string, arch: string): string {
  return text
    .split(/(\n[ \t]*\n)/)
    .map((chunk) => {
      if (!/^Types:/im.test(chunk) || /^Architectures:/im.test(chunk)) return chunk;
      return chunk.replace(/^(Types:.*)$/im, `$1\nArchitectures: ${arch}`);
    })
    .join('');
}

/** Adds `arch=ARCH` to every classic `deb` line that names no architecture. */
export function pinListArch(text: string, arch: string): string {
  return text
    .split('\n')
    .map((l) => {
      if (!/^\s*deb\s/.test(l) || /\[[^\]]*\barch=/.test(l)) return l;
      const m = /^(\s*deb\s+)\[([^\]]*)\](.*)$/.exec(l);
      if (m) return `${m[1]}[arch=${arch} ${m[2]!.trim()}]${m[3]}`;
      return l.replace(/^(\s*deb\s+)/, `$1[arch=${arch}] `);
    })
    .join('\n');
}

/**
 * Ubuntu serves arm64 from a separate ports archive, and the main archive answers arm64 index
 * requests with 404, which fails `apt-get update`. So on an amd64 Ubuntu host the distribution's
 * entries are pinned to amd64 and the ports archive is added for arm64.
 */
function planUbuntuPorts(
  state: PackageState,
  steps: SetupStep[],
  present: string[],
  warnings: string[],
): boolean {
  if (state.os?.id !== 'ubuntu' || isAarch64(state.arch)) return false;
  const hostArch = state.arch === 'x86_64' ? 'amd64' : state.arch;
  let changed = false;
  for (const s of state.sources) {
    const official =
      s.file === '/etc/apt/sources.list' || s.file === '/etc/apt/sources.list.d/ubuntu.sources';
    if (!official) continue;
    const pinned = s.file.endsWith('.sources')
      ? pinDeb822Arch(s.text, hostArch)
      : pinListArch(s.text, hostArch);
    if (pinned !== s.text) {
      steps.push({ what: `pin ${s.file} to ${hostArch}`, argv: ['tee', s.file], input: pinned });
      changed = true;
    }
  }
  if (state.sources.some((s) => s.file === UBUNTU_PORTS))
    present.push(`arm64 ports sources (${UBUNTU_PORTS})`);
  else if (!state.os.codename)
    warnings.push('no VERSION_CODENAME in /etc/os-release: cannot add the arm64 ports archive');
  else if (!state.portsMirror) {
    // lhc names no package host itself: the runner's owner says which ports mirror to use.
    throw new UserError(
      'this Ubuntu host serves arm64 packages (musl-dev:arm64) from a separate ports archive: ' +
        'set LHC_UBUNTU_PORTS_MIRROR to the URL of your Ubuntu ports mirror and run lhc setup again',
    );
  } else {
    const c = state.os.codename;
    steps.push({
      what: `add the Ubuntu arm64 ports archive to ${UBUNTU_PORTS}`,
      argv: ['tee', UBUNTU_PORTS],
      input:
        `Types: deb\nURIs: ${state.portsMirror}\n` +
        `Suites: ${c} ${c}-updates ${c}-security\nComponents: main universe\nArchitectures: arm64\n` +
        'Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n',
    });
    changed = true;
  }
  return changed;
}

/** Foreign architecture, deb-src entries, apt-get update and install of what is missing. */
export function planPackages(
  state: PackageState,
  wanted: readonly string[] = setupPackages(state.arch),
): Plan {
  const steps: SetupStep[] = [];
  const present: string[] = [];
  const warnings: string[] = [];
  let sourcesChanged = false;

  if (!isAarch64(state.arch)) {
    if (state.foreignArchs.includes('arm64')) present.push('dpkg foreign architecture arm64');
    else {
      steps.push({
        what: 'add dpkg foreign architecture arm64',
        argv: ['dpkg', '--add-architecture', 'arm64'],
      });
      sourcesChanged = true;
    }
  }

  if (planUbuntuPorts(state, steps, present, warnings)) sourcesChanged = true;

  if (hasDebSrc(state.sources)) present.push('deb-src apt sources');
  else {
    const f = debSrcFile(state.sources);
    if (f) {
      steps.push({
        what: `write deb-src sources to ${f.file}`,
        argv: ['tee', f.file],
        input: f.text,
      });
      sourcesChanged = true;
    } else {
      warnings.push(
        'no debian.sources, ubuntu.sources or sources.list to clone deb-src entries from',
      );
    }
  }

  const missing = wanted.filter((p) => !state.installed.has(p));
  if (missing.length === 0) present.push(`packages: ${wanted.join(' ')}`);
  if (sourcesChanged || missing.length > 0) {
    steps.push({ what: 'update apt package lists', argv: [...APT_GET, 'update'] });
  }
  if (missing.length > 0) {
    steps.push({
      what: `install ${missing.join(' ')}`,
      argv: [...APT_GET, 'install', '-y', '--no-install-recommends', ...missing],
    });
  }
  return { steps, present, warnings };
}

/** The rule line of a binfmt.d conf file (comments start with # or ;). */
export function binfmtRule(conf: string): string | undefined {
  return conf
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l.length > 0 && !l.startsWith('#') && !l.startsWith(';'));
}

/** Mount binfmt_misc and register qemu-aarch64 with the F flag, unless already so. */
export function planBinfmt(state: BinfmtState): Plan {
  const steps: SetupStep[] = [];
  const present: string[] = [];
  if (isAarch64(state.arch)) {
    return { steps, present: ['native aarch64 host: no QEMU binfmt needed'], warnings: [] };
  }
  if (!state.mounted) {
    // Registrations outlive the mount, so what to register is only known once it is mounted again.
    return {
      steps: [
        {
          what: `mount binfmt_misc on ${BINFMT_DIR}`,
          argv: ['mount', '-t', 'binfmt_misc', 'binfmt_misc', BINFMT_DIR],
        },
      ],
      present,
      warnings: [],
    };
  }
  present.push(`binfmt_misc mounted on ${BINFMT_DIR}`);
  const entry = state.entry;
  const lines = entry?.split('\n').map((l) => l.trim()) ?? [];
  const enabled = lines[0] === 'enabled';
  const flags =
    lines
      .find((l) => l.startsWith('flags:'))
      ?.slice(6)
      .trim() ?? '';
  if (entry !== undefined && flags.includes('F')) {
    if (enabled) present.push(`qemu-aarch64 registered (flags ${flags})`);
    else
      steps.push({
        what: 'enable qemu-aarch64',
        argv: ['tee', `${BINFMT_DIR}/qemu-aarch64`],
        input: '1\n',
      });
    return { steps, present, warnings: [] };
  }
  const rule = state.conf === undefined ? undefined : binfmtRule(state.conf);
  if (rule === undefined) {
    throw new UserError(
      `cannot register qemu-aarch64: ${QEMU_BINFMT_CONF} is missing; install qemu-user-static`,
    );
  }
  if (entry !== undefined) {
    // Registered without F: the kernel would look for QEMU inside the container's root.
    steps.push({
      what: 'unregister qemu-aarch64 (no F flag)',
      argv: ['tee', `${BINFMT_DIR}/qemu-aarch64`],
      input: '-1\n',
    });
  }
  const withF = rule.replace(/:([A-Z]*)$/, (_m, f: string) => `:${f.includes('F') ? f : `${f}F`}`);
  steps.push({
    what: `register qemu-aarch64 from ${QEMU_BINFMT_CONF}`,
    argv: ['tee', `${BINFMT_DIR}/register`],
    input: `${withF}\n`,
  });
  return { steps, present, warnings: [] };
}

export async function packageState(p: HostProbe): Promise<PackageState> {
  const arch = p.arch();
  const files = ['/etc/apt/sources.list'];
  for (const name of await p.listDir('/etc/apt/sources.list.d')) {
    if (name.endsWith('.list') || name.endsWith('.sources'))
      files.push(`/etc/apt/sources.list.d/${name}`);
  }
  const sources: AptSourceFile[] = [];
  for (const file of files) {
    const text = await p.readFile(file);
    if (text !== undefined) sources.push({ file, text });
  }
  const osRelease = await p.readFile('/etc/os-release');
  return {
    arch,
    os: osRelease === undefined ? undefined : parseOsRelease(osRelease),
    foreignArchs: await p.foreignArchs(),
    installed: await p.installedPackages(setupPackages(arch)),
    sources,
    portsMirror: process.env.LHC_UBUNTU_PORTS_MIRROR || undefined,
  };
}

export async function binfmtState(p: HostProbe): Promise<BinfmtState> {
  const mounted = await p.fileExists(`${BINFMT_DIR}/status`);
  return {
    arch: p.arch(),
    mounted,
    entry: mounted ? await p.readFile(`${BINFMT_DIR}/qemu-aarch64`) : undefined,
    conf: await p.readFile(QEMU_BINFMT_CONF),
  };
}

export interface SetupReport {
  changed: string[];
  present: string[];
}

async function apply(plan: Plan, p: HostProbe, logger: Logger, report: SetupReport): Promise<void> {
  for (const w of plan.warnings) logger.warn(w);
  for (const item of plan.present) {
    logger.info(`present: ${item}`);
    report.present.push(item);
  }
  if (plan.steps.length > 0 && !p.isRoot() && !(await p.sudoOk())) {
    throw new UserError(
      `lhc setup needs root or passwordless sudo to: ${plan.steps.map((s) => s.what).join('; ')}`,
    );
  }
  for (const step of plan.steps) {
    logger.info(`setup: ${step.what}`);
    logger.debug(`$ ${formatCommand(step.argv)}`);
    await run(step.argv, { privileged: true, input: step.input, logger, timeoutMs: 30 * 60_000 });
    report.changed.push(step.what);
  }
}

/** Brings the host to what doctor requires. Idempotent: a second run reports only `present` items. */
export async function setupHost(p: HostProbe, logger: Logger): Promise<SetupReport> {
  const report: SetupReport = { changed: [], present: [] };
  await apply(planPackages(await packageState(p)), p, logger, report);
  // After the packages: qemu-user-static brings the binfmt conf (and may register it itself).
  let binfmt = await binfmtState(p);
  await apply(planBinfmt(binfmt), p, logger, report);
  if (!binfmt.mounted) {
    binfmt = await binfmtState(p);
    if (!binfmt.mounted) throw new UserError(`binfmt_misc is still not mounted on ${BINFMT_DIR}`);
    await apply(planBinfmt(binfmt), p, logger, report);
  }
  return report;
}

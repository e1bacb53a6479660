/**
 * Host checks for `lhc doctor`. Each check says what is wrong and the exact package or command
 * that fixes it; the decisions only ask a HostProbe, so they are tested with a fake host.
 */
import type { HostProbe } from './probe.js';
import {
  BINFMT_DIR,
  MUSL_SPECS,
  MUSL_SPECS_X86_64,
  QEMU_BINFMT_CONF,
  isAarch64,
  toolRequirements,
  type Feature,
} from './requirements.js';

export interface Check {
  name: string;
  ok: boolean;
  /** A failed optional check is a warning: doctor still exits 0. */
  optional: boolean;
  detail: string;
  /** The apt package or command that fixes a failed check. */
  fix?: string;
}

const SETUP_HINT = ' (or run: lhc setup)';

async function privilegeCheck(p: HostProbe): Promise<Check> {
  const name = 'root or passwordless sudo';
  if (p.isRoot()) return { name, ok: true, optional: false, detail: 'running as root' };
  if (await p.sudoOk()) return { name, ok: true, optional: false, detail: 'sudo -n works' };
  return {
    name,
    ok: false,
    optional: false,
    detail: 'not root and `sudo -n true` failed',
    fix: 'run as root, or allow this user passwordless sudo (NOPASSWD in /etc/sudoers.d)',
  };
}

/** Parses /proc/sys/fs/binfmt_misc/<entry>: enabled state and flags. */
export function parseBinfmtEntry(text: string): {
  enabled: boolean;
  flags: string;
  interpreter?: string;
} {
  const lines = text.split('\n').map((l) => l.trim());
  const flags =
    lines
      .find((l) => l.startsWith('flags:'))
      ?.slice('flags:'.length)
      .trim() ?? '';
  const interpreter = lines.find((l) => l.startsWith('interpreter '))?.slice('interpreter '.length);
  return { enabled: lines[0] === 'enabled', flags, interpreter };
}

async function binfmtChecks(p: HostProbe): Promise<Check[]> {
  const mounted = await p.fileExists(`${BINFMT_DIR}/status`);
  const mountCheck: Check = mounted
    ? { name: 'binfmt_misc mounted', ok: true, optional: false, detail: BINFMT_DIR }
    : {
        name: 'binfmt_misc mounted',
        ok: false,
        optional: false,
        detail: `${BINFMT_DIR} is not mounted`,
        fix: `mount -t binfmt_misc binfmt_misc ${BINFMT_DIR}${SETUP_HINT}`,
      };
  const name = 'qemu-aarch64 binfmt (F flag)';
  const confExists = await p.fileExists(QEMU_BINFMT_CONF);
  const register = `cat ${QEMU_BINFMT_CONF} > ${BINFMT_DIR}/register`;
  const entryText = mounted ? await p.readFile(`${BINFMT_DIR}/qemu-aarch64`) : undefined;
  let qemuCheck: Check;
  if (entryText === undefined) {
    qemuCheck = {
      name,
      ok: false,
      optional: false,
      detail: 'qemu-aarch64 is not registered',
      fix: confExists
        ? `${register}${SETUP_HINT}`
        : `apt-get install qemu-user-static${SETUP_HINT}`,
    };
  } else {
    const entry = parseBinfmtEntry(entryText);
    if (!entry.enabled) {
      qemuCheck = {
        name,
        ok: false,
        optional: false,
        detail: 'qemu-aarch64 is registered but disabled',
        fix: `echo 1 > ${BINFMT_DIR}/qemu-aarch64`,
      };
    } else if (!entry.flags.includes('F')) {
      // Without F the interpreter is looked up inside the container's root, which has no QEMU.
      qemuCheck = {
        name,
        ok: false,
        optional: false,
        detail: `registered with flags "${entry.flags}", without F (fix-binary)`,
        fix: `echo -1 > ${BINFMT_DIR}/qemu-aarch64 && ${register}${SETUP_HINT}`,
      };
    } else {
      qemuCheck = { name, ok: true, optional: false, detail: `enabled, flags ${entry.flags}` };
    }
  }
  return [mountCheck, qemuCheck];
}

async function muslCheck(p: HostProbe): Promise<Check> {
  const name = 'musl aarch64 (musl-gcc.specs)';
  if (await p.fileExists(MUSL_SPECS))
    return { name, ok: true, optional: false, detail: MUSL_SPECS };
  const fix = isAarch64(p.arch())
    ? 'apt-get install musl-dev'
    : 'dpkg --add-architecture arm64 && apt-get update && apt-get install musl-dev:arm64';
  return {
    name,
    ok: false,
    optional: false,
    detail: `${MUSL_SPECS} is missing`,
    fix: fix + SETUP_HINT,
  };
}

/**
 * Runs the checks; the order is the order they are printed in. With `only`, just the checks for
 * those features (what one config needs); without, everything lhc can use.
 */
export async function runChecks(p: HostProbe, only?: ReadonlySet<Feature>): Promise<Check[]> {
  const wanted = (f: Feature) => only === undefined || only.has(f);
  const checks: Check[] = [await privilegeCheck(p)];
  const arch = p.arch();
  if (isAarch64(arch)) {
    checks.push({
      name: 'qemu-aarch64 binfmt (F flag)',
      ok: true,
      optional: false,
      detail: 'native aarch64 host: QEMU not needed',
    });
  } else if (wanted('emulation')) {
    checks.push(...(await binfmtChecks(p)));
  }
  for (const req of toolRequirements(arch)) {
    // Every system has these; listing them would only bury the rows that can fail.
    if (req.features.includes('system') || !req.features.some(wanted)) continue;
    const found = await p.which(req.tool);
    checks.push(
      found
        ? { name: req.tool, ok: true, optional: !!req.optional, detail: found }
        : {
            name: req.tool,
            ok: false,
            optional: !!req.optional,
            detail: `not found (${req.why})`,
            fix: `apt-get install ${req.pkg}${SETUP_HINT}`,
          },
    );
  }
  if (!wanted('cross-lua')) return checks;
  // An arch: x86_64 config on an x86_64 host builds Lua with the host's musl, not arm64's.
  if (only === undefined || only.has('emulation') || only.has('native-trace'))
    checks.push(await muslCheck(p));
  if (arch === 'x86_64' && wanted('cross-lua-x86_64')) {
    const name = 'musl x86_64 (musl-gcc.specs)';
    checks.push(
      (await p.fileExists(MUSL_SPECS_X86_64))
        ? { name, ok: true, optional: true, detail: MUSL_SPECS_X86_64 }
        : {
            name,
            ok: false,
            optional: true,
            detail: `${MUSL_SPECS_X86_64} is missing (only arch: x86_64 configs need it)`,
            fix: `apt-get install musl-dev${SETUP_HINT}`,
          },
    );
  }
  return checks;
}

export function doctorExitCode(checks: readonly Check[]): number {
  return checks.some((c) => !c.ok && !c.optional) ? 1 : 0;
}

/** A plain-text table: status, name, detail, and the fix on its own line under a failure. */
export function formatChecks(checks: readonly Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines: string[] = [];
  for (const c of checks) {
    const status = c.ok ? 'ok  ' : c.optional ? 'warn' : 'FAIL';
    lines.push(`${status}  ${c.name.padEnd(width)}  ${c.detail}`);
    if (!c.ok && c.fix) lines.push(`${' '.repeat(6 + width)}  fix: ${c.fix}`);
  }
  const failed = checks.filter((c) => !c.ok && !c.optional).length;
  const warned = checks.filter((c) => !c.ok && c.optional).length;
  lines.push(
    failed === 0
      ? `host is ready${warned ? ` (${warned} optional tool${warned === 1 ? '' : 's'} missing)` : ''}`
      : `${failed} required check${failed === 1 ? '' : 's'} failed: run the fixes above, or: lhc setup`,
  );
  return lines.join('\n');
}

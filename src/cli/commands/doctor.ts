import { doctorExitCode, formatChecks, runChecks } from '../../host/doctor.js';
import { realProbe } from '../../host/probe.js';
import { painter } from '../colour.js';
import type { Command } from '../command.js';

const STATUS_COLOUR = { 'ok  ': 'green', warn: 'yellow', FAIL: 'red' } as const;

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'check that this host has everything lhc needs',
  help: `Usage: lhc doctor [--json]

Checks root or passwordless sudo, binfmt_misc and the qemu-aarch64 registration (F flag; skipped
on aarch64 hosts), systemd-nspawn, squashfs-tools, the musl aarch64 cross toolchain, curl,
mmdebstrap and the other host tools. Prints one row per check and, for each failure, the package
or command that fixes it. Exits 1 when a required check fails ("warn" rows are optional tools).
"lhc setup" fixes everything doctor checks.

Options:
  --json    print {"ok", "checks": [{name, ok, optional, detail, fix}]}`,
  json: true,
  async run(_args, ctx) {
    const checks = await runChecks(realProbe);
    const code = doctorExitCode(checks);
    if (ctx.json) {
      ctx.emitJson({ ok: code === 0, checks });
      return code;
    }
    const paint = painter(ctx.colour);
    for (const line of formatChecks(checks).split('\n')) {
      const status = line.slice(0, 4) as keyof typeof STATUS_COLOUR;
      ctx.out(
        status in STATUS_COLOUR ? paint(STATUS_COLOUR[status], status) + line.slice(4) : line,
      );
    }
    return code;
  },
};

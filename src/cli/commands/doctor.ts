import { doctorExitCode, formatChecks, runChecks } from '../../host/doctor.js';
import { realProbe } from '../../host/probe.js';
import { parseArgs, type Command } from '../command.js';

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'check that this host has everything lhc needs',
  help: `Usage: lhc doctor

Checks root or passwordless sudo, binfmt_misc and the qemu-aarch64 registration (F flag; skipped
on aarch64 hosts), systemd-nspawn, squashfs-tools, the musl aarch64 cross toolchain, curl,
mmdebstrap and the other host tools. Prints one row per check and, for each failure, the package
or command that fixes it. Exits 1 when a required check fails ("warn" rows are optional tools).
"lhc setup" fixes everything doctor checks.`,
  async run(args, ctx) {
    parseArgs(args, {}, 'lhc doctor');
    const checks = await runChecks(realProbe);
    for (const line of formatChecks(checks).split('\n')) ctx.out(line);
    return doctorExitCode(checks);
  },
};

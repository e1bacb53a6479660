import { hostArch } from '../../core/arch.js';
import { loadConfig } from '../../config/load.js';
import { featuresFor } from '../../host/config-needs.js';
import { doctorExitCode, formatChecks, runChecks } from '../../host/doctor.js';
import { realProbe } from '../../host/probe.js';
import type { Feature } from '../../host/requirements.js';
import { parseArgs, type Command } from '../command.js';

const ALL_FEATURES: readonly Feature[] = [
  'core',
  'emulation',
  'native-trace',
  'cross-lua',
  'cross-lua-x86_64',
  'debian-root',
  'inetd',
  'listen',
  'download',
  'git-epoch',
  'privilege',
  'oci',
  'tests',
];

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'check that this host has everything lhc needs (or one config needs)',
  help: `Usage: lhc doctor [CONFIG]

Checks root or passwordless sudo, binfmt_misc and the qemu-aarch64 registration (F flag; skipped
on aarch64 hosts), systemd-nspawn, squashfs-tools, the musl aarch64 cross toolchain, curl,
mmdebstrap and arch-test, and the other host tools. Prints one row per check and, for each
failure, the package or command that fixes it. Exits 1 when a required check fails ("warn" rows
are optional tools). "lhc setup" fixes everything doctor checks.

With CONFIG, checks only what that config needs and says which config fields ask for it: a
scratch base without Lua needs no cross compiler and no mmdebstrap.`,
  async run(args, ctx) {
    const { positionals } = parseArgs(
      args,
      { positionals: { min: 0, max: 1, names: '[CONFIG]' } },
      'lhc doctor',
    );
    let only: Set<Feature> | undefined;
    if (positionals[0] !== undefined) {
      const config = await loadConfig(positionals[0]);
      const needs = featuresFor(config, hostArch());
      only = needs.features;
      ctx.out(`checking what ${positionals[0]} needs:`);
      for (const [feature, why] of needs.reasons)
        if (feature !== 'system') ctx.out(`  ${feature}: ${why}`);
      const skipped = ALL_FEATURES.filter((f) => !only!.has(f));
      ctx.out(`not needed by this config (not checked): ${skipped.join(', ')}`);
    }
    const checks = await runChecks(realProbe, only);
    for (const line of formatChecks(checks).split('\n')) ctx.out(line);
    return doctorExitCode(checks);
  },
};

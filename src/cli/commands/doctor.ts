import { hostArch } from '../../core/arch.js';
import { loadConfig } from '../../config/load.js';
import { featuresFor } from '../../host/config-needs.js';
import { doctorExitCode, formatChecks, runChecks } from '../../host/doctor.js';
import { realProbe } from '../../host/probe.js';
import type { Feature } from '../../host/requirements.js';
import { painter } from '../colour.js';
import type { Command } from '../command.js';

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

const STATUS_COLOUR = { 'ok  ': 'green', warn: 'yellow', FAIL: 'red' } as const;

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'check that this host has everything lhc needs (or one config needs)',
  help: `Usage: lhc doctor [CONFIG] [--json]

Checks root or passwordless sudo, binfmt_misc and the qemu-aarch64 registration (F flag; skipped
on aarch64 hosts), systemd-nspawn, squashfs-tools, the musl aarch64 cross toolchain, curl,
mmdebstrap and arch-test, and the other host tools. Prints one row per check and, for each
failure, the package or command that fixes it. Exits 1 when a required check fails ("warn" rows
are optional tools). "lhc setup" fixes everything doctor checks.

With CONFIG, checks only what that config needs and says which config fields ask for it: a
scratch base without Lua needs no cross compiler and no mmdebstrap.

Options:
  --json    print {"ok", "config", "needs", "notChecked", "checks"} (see README, "JSON output")`,
  positionals: { min: 0, max: 1, names: 'CONFIG' },
  json: true,
  async run({ positionals }, ctx) {
    const file = positionals[0];
    let needs: { feature: Feature; why: string }[] | undefined;
    let notChecked: Feature[] | undefined;
    let only: Set<Feature> | undefined;
    if (file !== undefined) {
      const n = featuresFor(await loadConfig(file), hostArch());
      only = n.features;
      needs = [...n.reasons]
        .filter(([feature]) => feature !== 'system')
        .map(([feature, why]) => ({ feature, why }));
      notChecked = ALL_FEATURES.filter((f) => !only!.has(f));
    }
    const checks = await runChecks(realProbe, only);
    const code = doctorExitCode(checks);
    if (ctx.json) {
      ctx.emitJson({
        ok: code === 0,
        config: file ?? null,
        needs: needs ?? null,
        notChecked: notChecked ?? null,
        checks,
      });
      return code;
    }
    if (file !== undefined) {
      ctx.out(`checking what ${file} needs:`);
      for (const n of needs!) ctx.out(`  ${n.feature}: ${n.why}`);
      ctx.out(`not needed by this config (not checked): ${notChecked!.join(', ')}`);
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

import { realProbe } from '../../host/probe.js';
import { setupHost } from '../../host/setup.js';
import type { Command } from '../command.js';

export const setupCommand: Command = {
  name: 'setup',
  summary: 'install and register what lhc needs (apt, arm64, binfmt)',
  help: `Usage: lhc setup

Makes this Debian/Ubuntu host ready for lhc, changing only what is missing:
  - dpkg --add-architecture arm64 (not on aarch64 hosts)
  - deb-src apt entries cloned from the distribution's deb entries
    (/etc/apt/sources.list.d/lhc-deb-src.sources, or lhc-deb-src.list for a classic sources.list)
  - apt-get update and apt-get install of the missing packages
  - mounts binfmt_misc and registers qemu-aarch64 with the F flag
Runs as root, or through passwordless "sudo -n". A second run changes nothing.`,
  async run(_args, ctx) {
    const report = await setupHost(realProbe, ctx.logger);
    ctx.out(
      report.changed.length === 0
        ? 'setup: nothing to do, everything is already present'
        : `setup: done (${report.changed.length} change${report.changed.length === 1 ? '' : 's'}: ${report.changed.join('; ')})`,
    );
    return 0;
  },
};

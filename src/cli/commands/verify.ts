import { loadConfig } from '../../config/load.js';
import { ConfigError } from '../../core/errors.js';
import { verifyImage } from '../../stages/verify.js';
import { formatVerifyReport } from '../../verify/report.js';
import { parseArgs, type Command } from '../command.js';

function wholeNumber(
  flag: string,
  value: string | boolean | undefined,
  min: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value) || n < min) {
    throw new ConfigError(
      `lhc verify: --${flag} expects a whole number ≥ ${min}, got "${String(value)}"`,
    );
  }
  return n;
}

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'boot an image read-only like the board, check probes and hardening',
  help: `Usage: lhc verify CONFIG --image IMG --data TEMPLATE [--requests N] [--concurrency C] [--timeout S]

Loop-mounts IMG read-only, unpacks TEMPLATE into a noexec,nosuid,nodev tmpfs as the data
partition, and runs the service with the board's systemd-nspawn command line: one container per
connection for inetd services (systemd-socket-activate on a free 127.0.0.1 port), or one
container reached inside its network namespace for listening services. Each probe of CONFIG is
sent over a real socket and compared byte for byte with its fixture (a diff with CR, TAB and
non-printable bytes made visible on mismatch); the first probe is fetched once more with curl.
The hardening is read from the live container's /proc: read-only root, noexec/nosuid/nodev data,
only "lo", NoNewPrivs, no CAP_NET_ADMIN/CAP_SYS_ADMIN, uid 0 mapped away, no shell or
interpreter but the service's own. Needs root (or passwordless sudo).

Options:
  --image IMG          the squashfs image to boot (required)
  --data TEMPLATE      the data template .tar.gz (required)
  --requests N         load test: send N requests (round-robin over the gopher probes)
  --concurrency C      at most C requests in flight (default 8)
  --timeout S          give up after S seconds in all (default: no overall limit)
  --show               write the first probe's response, as the booted image sent it, to stdout
                       (the report then goes to stderr)

Exits 0 when every probe, hardening check and load request passed, 1 otherwise.`,
  async run(args, ctx) {
    const { flags, positionals } = parseArgs(
      args,
      {
        flags: {
          image: { type: 'string' },
          data: { type: 'string' },
          requests: { type: 'string' },
          concurrency: { type: 'string' },
          timeout: { type: 'string' },
          show: { type: 'boolean' },
        },
        positionals: { min: 1, max: 1, names: 'CONFIG' },
      },
      'lhc verify',
    );
    if (typeof flags.image !== 'string')
      throw new ConfigError('lhc verify: --image IMG is required (see: lhc verify --help)');
    if (typeof flags.data !== 'string')
      throw new ConfigError('lhc verify: --data TEMPLATE is required (see: lhc verify --help)');
    const requests = wholeNumber('requests', flags.requests, 0);
    const concurrency = wholeNumber('concurrency', flags.concurrency, 1);
    const timeout = wholeNumber('timeout', flags.timeout, 1);
    const config = await loadConfig(positionals[0]!);

    // SIGTERM/SIGINT abort ctx.signal; verifyImage then unmounts and kills what it started
    // (the signal handler's runCleanups() shares the same once-only cleanup).
    const report = await verifyImage({
      config,
      image: flags.image,
      dataTemplate: flags.data,
      requests,
      concurrency,
      timeoutMs: timeout === undefined ? undefined : timeout * 1000,
      logger: ctx.logger,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    if (flags.show === true) {
      for (const line of formatVerifyReport(report)) ctx.logger.info(line);
      if (report.sample) process.stdout.write(report.sample.body);
    } else for (const line of formatVerifyReport(report)) ctx.out(line);
    return report.ok ? 0 : 1;
  },
};

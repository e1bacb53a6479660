import { loadConfig } from '../../config/load.js';
import { ConfigError } from '../../core/errors.js';
import { withScratchContext } from '../../core/stage.js';
import { BOARD_HELP, runBoardVerify } from '../../board/command.js';
import { verifyImage } from '../../stages/verify.js';
import type { VerifyOutcome } from '../../build-result.js';
import { formatVerifyReport } from '../../verify/report.js';
import { painter } from '../colour.js';
import { configOrDefault, type Command } from '../command.js';

function wholeNumber(
  flag: string,
  value: string | boolean | string[] | undefined,
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

/** `lhc verify --json`: the report without the raw sample bytes (README, "JSON output"). */
export function verifyJson(r: VerifyOutcome) {
  const { sample, ...rest } = r;
  return {
    ...rest,
    sample: sample ? { probe: sample.probe, bytes: sample.body.length } : undefined,
  };
}

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'boot an image read-only like the board, check probes and hardening',
  help: `Usage: lhc verify [CONFIG] --image IMG --data TEMPLATE [--requests N] [--concurrency C] [--timeout S] [--show | --json]
       lhc verify [CONFIG] --board [--out DIR]

Loop-mounts IMG read-only (CONFIG defaults to ./lhc.yml), unpacks TEMPLATE into a noexec,nosuid,nodev tmpfs as the data
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
  --json               print the report as one JSON object (see README, "JSON output")
${BOARD_HELP}

Exits 0 when every probe, hardening check and load request passed, 1 otherwise.`,
  options: {
    image: { type: 'string', complete: 'file' },
    data: { type: 'string', complete: 'file' },
    requests: { type: 'string' },
    concurrency: { type: 'string' },
    timeout: { type: 'string' },
    show: { type: 'boolean' },
    board: { type: 'boolean' },
    out: { type: 'string', complete: 'dir' },
  },
  positionals: { min: 0, max: 1, names: 'CONFIG' },
  json: true,
  async run({ options, positionals }, ctx) {
    if (options.board === true)
      return runBoardVerify(
        configOrDefault(positionals[0], 'verify'),
        options.out as string | undefined,
        ctx,
      );
    if (typeof options.image !== 'string')
      throw new ConfigError('lhc verify: --image IMG is required (see: lhc verify --help)');
    if (typeof options.data !== 'string')
      throw new ConfigError('lhc verify: --data TEMPLATE is required (see: lhc verify --help)');
    if (options.show === true && ctx.json)
      throw new ConfigError('lhc verify: --show and --json both want stdout; pick one');
    const requests = wholeNumber('requests', options.requests, 0);
    const concurrency = wholeNumber('concurrency', options.concurrency, 1);
    const timeout = wholeNumber('timeout', options.timeout, 1);
    const config = await loadConfig(configOrDefault(positionals[0], 'verify'));

    // SIGTERM/SIGINT abort ctx.signal; verifyImage then unmounts and kills what it started
    // (the signal handler's runCleanups() shares the same once-only cleanup).
    const image = options.image;
    const dataTemplate = options.data;
    const report = await withScratchContext({ logger: ctx.logger, signal: ctx.signal }, (stage) =>
      verifyImage(stage, {
        config,
        image,
        dataTemplate,
        requests,
        concurrency,
        timeoutMs: timeout === undefined ? undefined : timeout * 1000,
      }),
    );
    if (ctx.json) ctx.emitJson(verifyJson(report));
    else if (options.show === true) {
      for (const line of formatVerifyReport(report)) ctx.logger.info(line);
      if (report.sample) process.stdout.write(report.sample.body);
    } else {
      const paint = painter(ctx.colour);
      for (const line of formatVerifyReport(report))
        ctx.out(line.replace(/\bFAIL\b/g, (w) => paint('red', w)));
    }
    return report.ok ? 0 : 1;
  },
};

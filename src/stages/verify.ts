/**
 * verify: boot the packed image the way the board does and prove it answers and is hardened.
 *
 * The image is loop-mounted read-only, a noexec tmpfs seeded from the data template becomes the
 * data partition, and the container runs with the same nspawn command line as the deploy
 * bundle's unit (nspawnArgv with the board's hardening). inetd services get one container per
 * TCP connection through systemd-socket-activate (the board's Accept=yes .socket unit); a
 * `listen` service runs once and is reached inside its network namespace. Every probe goes
 * over a real socket and is compared byte for byte; the hardening is read from the live
 * payload's /proc. Whatever happens, the teardown leaves no mount, loop device or process.
 */
import { setMaxListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import type { HardeningCheck, ProbeOutcome, VerifyOutcome } from '../build-result.js';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import { mapBounded, probeParallelism } from '../core/parallel.js';
import type { Logger } from '../core/logger.js';
import type { StageContext } from '../core/stage.js';
import { boardNspawnArgv, mountPoints, perConnectionMachine } from '../tools/nspawn.js';
import { containerIdentity } from '../harness/machine-name.js';
import { createLimitCgroups, cgroupLayout, limitedArgv } from '../harness/limits.js';
import { askProbe, describeEndpoint } from '../harness/client.js';
import {
  checkNoInterpreters,
  entrypointInterpreters,
  inspectProcess,
  listImage,
} from '../verify/hardening.js';
import { runLoad, type LoadResult } from '../verify/load.js';
import { curlable, curlProbe, judge, probeOnce, readFixtures } from '../verify/probes.js';
import { mountDataTmpfs, mountImageReadOnly } from '../harness/mounts.js';
import { unpackTemplate } from '../harness/data.js';
import { humanBytes } from '../core/format.js';
import {
  serviceLog,
  startInetd,
  startListening,
  startSocketActivated,
  type RunState,
  type Running,
} from '../harness/service.js';
import { registerCleanup } from '../core/cleanup.js';
import { teardown } from '../harness/teardown.js';
import type { RunAs } from '../service-user/passwd.js';
import { readRunAs } from './service-user.js';
import { assertAnswersAsTraced } from './self-check.js';
import type { ProbeResponse } from '../harness/client.js';

export interface VerifyInput {
  config: LhcConfig;
  /** The squashfs image to boot. */
  image: string;
  /** The data template (.tar.gz) that seeds the data partition. */
  dataTemplate: string;
  /** Load test: this many requests (default: none)... */
  requests?: number;
  /** ...with at most this many in flight (default 8). */
  concurrency?: number;
  /** Limit for the whole verify run, in milliseconds (default: none; each request has service.timeout). */
  timeoutMs?: number;
  /**
   * The traced (unpruned) run's answers. When given, verify also does the self-check's job: a
   * probe that fails its fixture although its traced answer passed it fails with the
   * self-check's error, which blames the prune rather than the fixture.
   */
  traced?: Record<string, ProbeResponse>;
}

interface VerifyOptions extends VerifyInput {
  logger: Logger;
  signal?: AbortSignal;
}

async function hardeningRows(
  svc: Running,
  state: RunState,
  config: LhcConfig,
  runAs: RunAs | undefined,
): Promise<HardeningCheck[]> {
  const rows: HardeningCheck[] = [];
  let inspected: HardeningCheck[] | undefined;
  // A process found under the activator can exit before its /proc is read (under load, a
  // finishing connection's container is caught just after its exec): take the next payload.
  for (let attempt = 0; attempt < 3 && !inspected; attempt++) {
    const payload = await svc.payload();
    if (!payload) break;
    try {
      inspected = await inspectProcess(payload.pid, config.data.path, config.service.limits, runAs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ESRCH') throw e;
    }
  }
  rows.push(
    ...(inspected ?? [
      {
        name: 'container payload running',
        ok: false,
        detail: 'no payload process appeared under systemd-nspawn',
      },
    ]),
  );
  for (const s of state.sockets) s.destroy();
  state.sockets.clear();
  const command0 = config.service.command[0]!;
  rows.push(
    checkNoInterpreters(
      await listImage(state.rootDir),
      command0,
      entrypointInterpreters(state.rootDir, command0),
    ),
  );
  return rows;
}

/**
 * The board bounds each container by its unit's cgroup; here each run gets cgroups of its own
 * (harness/limits.ts), where the host has the controllers for it.
 */
async function withLimits(
  argv: string[],
  state: RunState,
  config: LhcConfig,
  logger: Logger,
): Promise<string[]> {
  const l = config.service.limits;
  const layout = cgroupLayout();
  if (layout.kind === 'none') {
    logger.warn(
      `service.limits memory, tasks and cpu are not applied on this host (open files and processes per user are): ${layout.why}`,
    );
    return argv;
  }
  state.limitCgroups = await createLimitCgroups(`lhc-${path.basename(state.workDir)}`, logger);
  logger.info(
    `limits per container: memory ${humanBytes(l.memory)}, ${l.tasks} tasks, cpu ${l.cpu} %, ${l.nofile} open files`,
  );
  return limitedArgv(argv, state.limitCgroups, l);
}

/**
 * The caller's signal and the overall timeout as one signal of our own. Not AbortSignal.any()
 * with AbortSignal.timeout(): in Node 20 the timeout source of any() can be garbage-collected
 * before it fires (nodejs/node#57736); under the load test's garbage that happened here, and a
 * 20 s verify ran on for 10 minutes. A controller and a timer we hold (and clear) cannot be lost.
 */
function combinedSignal(
  opts: VerifyOptions,
  concurrency: number,
): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const abort = (reason: unknown) => controller.abort(reason);
  const onCaller = () => abort(opts.signal?.reason);
  if (opts.signal?.aborted) abort(opts.signal.reason);
  else opts.signal?.addEventListener('abort', onCaller, { once: true });
  const timer = opts.timeoutMs
    ? setTimeout(
        () => abort(new Error(`timed out after ${opts.timeoutMs! / 1000} s`)),
        opts.timeoutMs,
      )
    : undefined;
  // Every request in flight listens on it (node's http client a little longer than the request).
  setMaxListeners(4 * concurrency + 16, controller.signal);
  return {
    signal: controller.signal,
    dispose() {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onCaller);
    },
  };
}

async function mustExist(file: string, what: string): Promise<string> {
  const abs = path.resolve(file);
  if (!existsSync(abs)) throw new UserError(`${what} ${file} does not exist`);
  return abs;
}

/** Its mount points live in a fresh dir under ctx.work.verify, removed by the teardown. */
export async function verifyImage(ctx: StageContext, input: VerifyInput): Promise<VerifyOutcome> {
  const options: VerifyOptions = { ...input, logger: ctx.logger, signal: ctx.signal };
  const { config, logger } = options;
  const image = await mustExist(options.image, 'image');
  const dataTemplate = await mustExist(options.dataTemplate, 'data template');
  const fixtures = await readFixtures(config.probes);
  const timeoutMs = config.service.timeout * 1000;
  const requests = options.requests ?? 0;
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(requests) || requests < 0)
    throw new UserError(`--requests must be a whole number ≥ 0, got ${requests}`);
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UserError(`--concurrency must be a whole number ≥ 1, got ${concurrency}`);
  const { signal, dispose: disposeSignal } = combinedSignal(options, concurrency);
  const opts = { ...options, signal };

  await mkdir(ctx.work.verify, { recursive: true });
  const workDir = await mkdtemp(path.join(ctx.work.verify, 'lhc-verify-'));
  // The directory name becomes the hostname: use the service's name (see containerIdentity).
  const state: RunState = {
    workDir,
    rootDir: path.join(workDir, config.name),
    dataDir: path.join(workDir, 'data'),
    sockets: new Set(),
    payloads: [],
  };
  const identity = containerIdentity(state.rootDir);
  state.identity = identity;
  await mkdir(state.rootDir);
  await mkdir(state.dataDir);
  const cleanup = registerCleanup(`verify ${config.name} (${workDir})`, () =>
    teardown(state, image, logger),
  );

  let outcome: VerifyOutcome | undefined;
  let failure: unknown;
  let failed = false;
  try {
    outcome = await logger.group(`verify ${config.name}`, async () => {
      state.image = await mountImageReadOnly(image, state.rootDir, logger);
      logger.info(
        `image ${image} mounted read-only at ${state.rootDir} (${state.image.loopDevice})`,
      );
      for (const needed of mountPoints(config.data.path, config.deploy.runtime)) {
        if (!existsSync(path.join(state.rootDir, needed))) {
          throw new UserError(
            `the image has no ${needed} directory; a read-only root needs every mount point (add it to the root)`,
          );
        }
      }
      state.dataMajorMinor = await mountDataTmpfs(state.dataDir, logger);
      await unpackTemplate(dataTemplate, state.dataDir, { logger });
      logger.info(`data template ${dataTemplate} unpacked into a noexec,nosuid,nodev tmpfs`);

      // The ids the image's lhc-run-as drops to: the pruned image has no /etc/passwd to ask.
      const runAs = await readRunAs(config, state.rootDir);
      const nspawn = boardNspawnArgv({
        root: state.rootDir,
        dataDir: state.dataDir,
        dataPath: config.data.path,
        command: config.service.command,
        env: config.service.env,
        ...(runAs ? { runAs } : {}),
        workdir: config.service.workdir,
        limits: config.service.limits,
        service: config.name,
        machineName: identity.machineName,
      });
      // One container per connection, each with a machine name of its own, as on the board.
      const argv = await withLimits(
        config.service.inetd ? perConnectionMachine(nspawn) : nspawn,
        state,
        config,
        logger,
      );
      const svc = config.service.inetd
        ? await startInetd(argv, state, opts, timeoutMs)
        : config.service['socket-activation']
          ? await startSocketActivated(argv, state, opts, timeoutMs)
          : await startListening(argv, state, opts, timeoutMs);
      logger.info(`service reachable at ${describeEndpoint(svc.endpoint)}`);

      // In parallel (one connection per core), reported in config order.
      const asked = await mapBounded(config.probes, probeParallelism(), (p) =>
        probeOnce(p, fixtures.get(p.name), svc.endpoint, timeoutMs, signal),
      );
      if (options.traced) {
        // The packed image differs from the traced root in more than pruning (file times are the
        // epoch's), so only a probe that fails where the traced answer passed blames the prune.
        const traced = options.traced;
        const answers: Record<string, ProbeResponse> = {};
        const blamed = new Set<string>();
        config.probes.forEach((p, i) => {
          const r = asked[i]!.response;
          if (r) answers[p.name] = r;
          const before = traced[p.name];
          if (!asked[i]!.outcome.ok && before && !judge(p, fixtures.get(p.name), before, 'trace'))
            blamed.add(p.name);
        });
        assertAnswersAsTraced(config, traced, answers, blamed);
      }
      const probes: ProbeOutcome[] = asked.map((a) => a.outcome);
      for (const r of probes)
        logger.info(`probe ${r.name}: ${r.ok ? 'ok' : 'FAILED'} (${r.bytes} bytes)`);
      const sampled = asked.findIndex((a) => a.body);
      const sample: VerifyOutcome['sample'] =
        sampled < 0
          ? undefined
          : { probe: config.probes[sampled]!.name, body: asked[sampled]!.body! };
      const first = curlable(config.probes);
      const curl = first
        ? await curlProbe(first, fixtures.get(first.name), svc, state.workDir, opts, timeoutMs)
        : undefined;
      if (curl) {
        logger.info(`real client: ${curl.name}: ${curl.ok ? 'ok' : 'FAILED'}`);
        probes.push(curl);
      } else logger.info('real client: none (curl has no URL for raw tcp probes)');

      const hardening = await hardeningRows(svc, state, config, runAs);
      for (const h of hardening)
        logger.info(`hardening: ${h.ok ? 'ok ' : 'FAIL'} ${h.name}: ${h.detail}`);

      let load: LoadResult | undefined;
      if (requests > 0) {
        const gopher = config.probes.filter((p) => p.type === 'gopher');
        const targets = gopher.length ? gopher : config.probes;
        logger.info(
          `load: ${requests} requests at concurrency ${concurrency} over ${targets.map((p) => p.name).join(', ')}`,
        );
        load = await runLoad(
          requests,
          concurrency,
          async (i) => {
            const p = targets[i % targets.length]!;
            return judge(
              p,
              fixtures.get(p.name),
              await askProbe(p, { endpoint: svc.endpoint }, { timeoutMs, signal }),
              describeEndpoint(svc.endpoint),
            );
          },
          signal,
        );
        logger.info(
          `load: ${load.failures} failures; p50 ${load.p50ms} ms, p95 ${load.p95ms} ms, p99 ${load.p99ms} ms`,
        );
      }
      const ok =
        probes.every((p) => p.ok) && hardening.every((h) => h.ok) && (load?.failures ?? 0) === 0;
      return {
        ok,
        probes,
        hardening,
        curl,
        sample,
        endpoint: describeEndpoint(svc.endpoint),
        load: load && {
          requests: load.requests,
          concurrency: load.concurrency,
          failures: load.failures,
          p50ms: load.p50ms,
          p95ms: load.p95ms,
          p99ms: load.p99ms,
          firstFailure: load.firstFailure,
          wallMs: Math.round(load.wallMs),
        },
      };
    });
  } catch (e) {
    failed = true;
    failure = e;
  }
  // Not in a finally: a cleanup problem must not hide the error that got us here.
  let cleanupError: unknown;
  try {
    await cleanup.run();
  } catch (e) {
    cleanupError = e;
  }
  const timedOut = signal.aborted && !options.signal?.aborted;
  disposeSignal();
  if (failed) {
    if (cleanupError) logger.warn((cleanupError as Error).message);
    if (timedOut) {
      throw new UserError(`verify timed out after ${(options.timeoutMs ?? 0) / 1000} s`, {
        cause: failure,
      });
    }
    throw failure;
  }
  if (cleanupError) throw cleanupError;
  if (!outcome) throw new Error('verify produced no outcome');
  if (!outcome.ok && state.serviceStderr) outcome.serviceLog = serviceLog(state.serviceStderr);
  return outcome;
}

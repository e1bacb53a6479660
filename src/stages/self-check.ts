/**
 * Self-check: replay the probes against the pruned root, run the board's way (read-only root,
 * hardened, a fresh copy of the data template at the data path, no tracing), and fail the build
 * if any response differs from the unpruned traced run. A difference means the trace missed
 * something the service needs (or the service is not deterministic, which is just as fatal for
 * fixtures).
 */
import { mkdir, rm } from 'node:fs/promises';
import type { LhcConfig } from '../config/load.js';
import { registerCleanup } from '../core/cleanup.js';
import { UserError } from '../core/errors.js';
import { selfCheckScratch } from '../core/work-layout.js';
import type { StageContext } from '../core/stage.js';
import type { ProbeResponse } from '../harness/client.js';
import { responseDiff } from '../harness/diff.js';
import { bindReadOnly, unmount } from '../harness/mounts.js';
import { runProbes } from '../harness/run.js';
import type { RunAs } from '../service-user/passwd.js';
import { run } from '../tools/exec.js';
import { removeTree } from '../tools/remove-tree.js';

export interface SelfCheckInput {
  config: LhcConfig;
  prunedRoot: string;
  /** The traced run's responses, which the pruned root must repeat. */
  unprunedResponses: Record<string, ProbeResponse>;
  /** The data template directory from pruneRoot (seeds the data path of every run). */
  dataDir?: string;
  /** service.user's ids (stages/service-user.ts). */
  runAs?: RunAs;
}

export interface SelfCheckResult {
  responses: Record<string, ProbeResponse>;
  seconds: number;
}

/**
 * The self-check's judgement: every probe (or every one in `only`) answers the pruned root as it
 * answered the traced, unpruned one. Verify applies it to the probes that fail their fixture
 * where the traced answer passed it (see pipeline.ts), so a build probes the pruned image once.
 */
export function assertAnswersAsTraced(
  config: LhcConfig,
  traced: Record<string, ProbeResponse>,
  pruned: Record<string, ProbeResponse>,
  only?: ReadonlySet<string>,
): void {
  const diffs = config.probes
    .filter((p) => !only || only.has(p.name))
    .map((p) => responseDiff(p.name, traced[p.name], pruned[p.name]))
    .filter((d): d is string => d !== undefined);
  if (diffs.length > 0) {
    throw new UserError(
      `self-check failed: ${diffs.length} of ${config.probes.length} probe(s) answer differently after pruning ` +
        `(the trace missed something the service needs; add it to keep:)\n${diffs.join('\n')}`,
    );
  }
}

/** Its scratch (read-only view, data dir) is ctx.work.selfCheck. */
export async function selfCheck(
  ctx: StageContext,
  { config, prunedRoot, unprunedResponses, ...input }: SelfCheckInput,
): Promise<SelfCheckResult> {
  const opts = { ...input, workDir: ctx.work.selfCheck, logger: ctx.logger, signal: ctx.signal };
  await mkdir(opts.workDir, { recursive: true });
  const { view, data: dataDir } = selfCheckScratch(opts.workDir);
  await rm(dataDir, { recursive: true, force: true });
  if (opts.dataDir) await run(['cp', '-a', '--', opts.dataDir, dataDir], { privileged: true });
  else await run(['mkdir', '-p', dataDir]);
  // nspawn creates /etc, /var and /root in a writable directory even with --read-only; a
  // read-only bind mount keeps the pruned root exactly as packed (and is what the board sees).
  await mkdir(view, { recursive: true });
  const unmountView = registerCleanup(`self-check mount ${view}`, () => unmount(view, opts.logger));
  const started = Date.now();
  try {
    await bindReadOnly(prunedRoot, view, opts.logger);
    const probed = await opts.logger
      .group(`self-check: ${config.probes.length} probes against the pruned root`, () =>
        runProbes(
          config,
          {
            root: view,
            dataDir,
            readOnly: true,
            harden: true,
            ...(opts.runAs ? { runAs: opts.runAs } : {}),
          },
          {
            workDir: opts.workDir,
            logger: opts.logger,
            ...(opts.signal ? { signal: opts.signal } : {}),
          },
        ),
      )
      .catch((e: unknown) => {
        if (e instanceof UserError) {
          throw new UserError(
            `self-check failed: the pruned root does not run like the traced one: ${e.message}`,
            { cause: e },
          );
        }
        throw e;
      });
    assertAnswersAsTraced(config, unprunedResponses, probed.responses);
    return { responses: probed.responses, seconds: (Date.now() - started) / 1000 };
  } finally {
    await unmountView.run();
    await removeTree([dataDir], { reject: false });
  }
}

/**
 * The traced run: the service runs in systemd-nspawn on a writable view of the root (an overlay,
 * or a copy), without a network, while every file it touches is recorded (../trace/hook.ts: QEMU
 * or host strace); the probes drive it the way clients will (../harness/run.ts).
 */
import type { RunAs } from '../service-user/passwd.js';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { hostArch } from '../core/arch.js';
import { traceScratch } from '../core/work-layout.js';
import { registerCleanup } from '../core/cleanup.js';
import { UserError } from '../core/errors.js';
import type { StageContext } from '../core/stage.js';
import { readElf } from '../elf/elf.js';
import type { ProbeResponse } from '../harness/client.js';
import { seedDataDir } from '../harness/data.js';
import { mountOverlay, unmount } from '../harness/mounts.js';
import { runProbes } from '../harness/run.js';
import { isUnder, resolveTraced } from '../root/lookup.js';
import { run } from '../tools/exec.js';
import { TRACE_MOUNT } from '../tools/nspawn.js';
import { removeTree } from '../tools/remove-tree.js';
import { qemuTraceHook, straceHook } from '../trace/hook.js';
import {
  ENOENT,
  parseHostStrace,
  parseQemuStrace,
  type TraceEvent,
} from '../trace/parse-strace.js';

export interface TraceInput {
  config: LhcConfig;
  /** The assembled root; the run's scratch (writable view, data dir, raw traces) is ctx.work.trace. */
  root: string;
  /** The host's architecture ('aarch64' | 'x86_64'); default this machine's. */
  arch?: string;
  /** Probes in flight at once; default one per core. */
  parallel?: number;
  /** service.user's ids (stages/service-user.ts). */
  runAs?: RunAs;
  /**
   * Takes the removal of the writable view (unmount, delete) after a successful run instead of
   * waiting for it: the caller goes on and awaits the promise later (before it removes the work
   * dir). A failed run still removes it before throwing.
   */
  deferCleanup?: (removal: Promise<void>) => void;
}

export interface TraceResult {
  events: TraceEvent[];
  responses: Record<string, ProbeResponse>;
  /** Paths the service created or changed under the data path (they belong to the data template). */
  writtenUnderData: string[];
  /** Paths it wrote elsewhere: on the board's read-only root these writes fail. */
  writtenOutsideData: string[];
  /** Paths looked up and not found (ENOENT), which may hint at a missing file. */
  failedLookups: string[];
  /** command[0] and its PT_INTERP, which QEMU does not log. */
  entrypoint: string;
  interp?: string;
  emulated: boolean;
  /** Wall time of the traced runs. */
  seconds: number;
  /** Raw trace files kept for debugging. */
  traceFiles: string[];
}

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

export async function traceService(
  ctx: StageContext,
  { config, root, arch, parallel, runAs, deferCleanup }: TraceInput,
): Promise<TraceResult> {
  const { logger } = ctx;
  const workDir = ctx.work.trace;
  if (!(await isDir(root))) throw new UserError(`root directory ${root} does not exist`);
  const emulated = (arch ?? hostArch()) !== config.arch;
  const entry = resolveTraced(root, config.service.command[0]!);
  if (!entry.exists || entry.kind !== 'file') {
    throw new UserError(
      `the entrypoint ${config.service.command[0]} (service.command[0]) is not a file in the root`,
    );
  }
  const elf = await readElf(entry.host);
  const interp = elf?.interp;

  const { view: copy, raw: traceDir, data: dataDir, upper, overlayWork } = traceScratch(workDir);
  await mkdir(workDir, { recursive: true });
  await rm(traceDir, { recursive: true, force: true });
  await mkdir(traceDir, { recursive: true, mode: 0o755 });
  const state = { mounted: false };
  let succeeded = false;
  const removeCopy = registerCleanup(`traced root copy ${copy}`, async () => {
    // A payload that outlived a killed nspawn keeps the overlay busy: detach it lazily then,
    // and never let a failed cleanup replace the error that brought us here.
    if (state.mounted) await unmount(copy, logger);
    state.mounted = false;
    await removeTree([copy, upper, overlayWork], { logger, reject: false });
  });
  try {
    await logger.group('writable copy of the root for the traced run', async () => {
      await removeTree([copy, upper, overlayWork]);
      for (const d of [copy, upper, overlayWork]) await mkdir(d, { recursive: true });
      state.mounted = await mountOverlay(root, upper, overlayWork, copy, logger);
      if (!state.mounted) {
        await run(['cp', '-a', '--reflink=auto', '--', `${root}/.`, `${copy}/`], {
          privileged: true,
        });
      }
      // What nspawn cannot do without on a writable root: /usr and the bind targets. They exist
      // in this view only; the pruned root gets every mount point from prune (mountPoints()).
      const dirs = [TRACE_MOUNT, config.data.path, '/usr'].map((p) => path.join(copy, p));
      await run(['mkdir', '-p', '-m', '0755', '--', ...dirs], { privileged: true });
    });
    await seedDataDir(config, root, dataDir, runAs);

    const started = Date.now();
    const probed = await logger.group(
      `traced run of ${config.service.command.join(' ')} (${emulated ? 'QEMU_STRACE' : 'host strace'}, ${config.probes.length} probes)`,
      () =>
        runProbes(
          config,
          {
            root: copy,
            dataDir,
            readOnly: false,
            harden: false,
            ...(runAs ? { runAs } : {}),
          },
          {
            workDir,
            logger,
            hook: emulated ? qemuTraceHook(traceDir) : straceHook(traceDir),
            ...(parallel ? { parallel } : {}),
            ...(ctx.signal ? { signal: ctx.signal } : {}),
          },
        ),
    );
    const seconds = (Date.now() - started) / 1000;
    // The cost is for the log only: the prune report is an artifact and must be reproducible.
    logger.info(`traced in ${seconds.toFixed(1)} s (${emulated ? 'QEMU_STRACE' : 'host strace'})`);

    const parseOpts = {
      cwd: config.service.workdir ?? '/',
      entrypoint: config.service.command[0]!,
      ...(emulated ? {} : { payloadExec: config.service.command[0]! }),
    };
    const events: TraceEvent[] = [];
    const traceFiles = probed.records.flatMap((r) => (r.file ? [r.file] : []));
    for (const [i, { text }] of probed.records.entries()) {
      const parsed = emulated ? parseQemuStrace(text, parseOpts) : parseHostStrace(text, parseOpts);
      if (emulated) {
        // Keep the raw stream for debugging; the FIFO itself holds nothing afterwards.
        const file = path.join(traceDir, `qemu.${i}.txt`);
        await writeFile(file, text);
        traceFiles.push(file);
      }
      if (parsed.skipped > 0)
        logger.debug(`trace ${i}: ${parsed.skipped} unusable call(s) skipped`);
      events.push(...parsed.events);
    }
    if (events.length === 0) {
      throw new UserError(
        `the traced run of '${config.name}' recorded no file access at all: ` +
          (emulated
            ? 'QEMU_STRACE produced nothing (is the entrypoint an aarch64 binary run through binfmt_misc? check `lhc doctor`)'
            : 'host strace saw no exec of the entrypoint'),
      );
    }
    // QEMU loads the entrypoint and its interpreter itself, so neither shows up in its trace.
    events.unshift({
      pid: 0,
      op: 'exec',
      path: config.service.command[0]!,
      result: 'ok',
      write: false,
      syscall: 'entrypoint',
    });
    if (interp)
      events.unshift({
        pid: 0,
        op: 'exec',
        path: interp,
        result: 'ok',
        write: false,
        syscall: 'pt-interp',
      });

    const written = new Set<string>();
    const writtenOutside = new Set<string>();
    const failed = new Set<string>();
    for (const e of events) {
      if (e.write && e.result === 'ok')
        (isUnder(e.path, config.data.path) ? written : writtenOutside).add(e.path);
      if (e.result === 'error' && e.errno === ENOENT && !e.write) failed.add(e.path);
    }
    for (const p of writtenOutside)
      if (isUnder(p, '/dev') || isUnder(p, '/proc') || isUnder(p, '/sys')) writtenOutside.delete(p);
    if (writtenOutside.size > 0) {
      logger.warn(
        `the service wrote outside ${config.data.path}, which is read-only on the board: ${[...writtenOutside].sort().join(', ')}`,
      );
    }
    succeeded = true;
    return {
      events,
      responses: probed.responses,
      writtenUnderData: [...written].sort(),
      writtenOutsideData: [...writtenOutside].sort(),
      failedLookups: [...failed].sort(),
      entrypoint: config.service.command[0]!,
      ...(interp ? { interp } : {}),
      emulated,
      seconds,
      traceFiles,
    };
  } finally {
    // Still registered while it runs: an interrupted build waits for it (runCleanups()).
    if (succeeded && deferCleanup) deferCleanup(removeCopy.run());
    else await removeCopy.run();
  }
}

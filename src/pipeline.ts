/**
 * The whole job, stage by stage: fetch → lua → root → trace → prune → pack → outputs → verify
 * (which also does the self-check: a probe failing where its traced answer passed blames the
 * prune; without verify the self-check runs after prune) → seal (SHA256SUMS, or the failure report). The CLI's `lhc build`, the
 * action and the tests all call build(); it returns a BuildResult (a failed verify is
 * `verify.ok: false`, a manifest that differs from its lock is `manifestDiff` without
 * `manifestLock.updated`) and the shells decide the exit.
 */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildFailures, type BuildResult } from './build-result.js';
import { checkConfigFiles } from './config/check-files.js';
import { projectRoot } from './config/confine.js';
import { claimBuildDirs, inspectBuildDirs, workDirRemovals } from './core/build-dirs.js';
import type { LhcConfig } from './config/load.js';
import { registerCleanup } from './core/cleanup.js';
import type { Logger } from './core/logger.js';
import { checkManifestLock } from './manifest/diff.js';
import { checkEntrypoint } from './stages/entrypoint-check.js';
import { resolveEpoch } from './stages/epoch.js';
import { fetchInputs } from './stages/fetch.js';
import { buildLua } from './stages/lua.js';
import { exposureFileName } from './deploy/exposure.js';
import { retractSha256Sums, sealOutputs, writeOutputs } from './stages/outputs.js';
import { artifactNames, packImage } from './stages/pack.js';
import { pruneRoot } from './stages/prune.js';
import { stageContext, type StageContext } from './core/stage.js';
import { assembleRoot } from './stages/root.js';
import { installAcceptLoop, installRunAs } from './stages/service-user.js';
import { recordFixtures } from './stages/record-fixtures.js';
import { selfCheck } from './stages/self-check.js';
import { traceService } from './stages/trace.js';
import { verifyImage } from './stages/verify.js';
import { Store } from './store/store.js';
import { removeTree } from './tools/remove-tree.js';

export interface BuildOptions {
  outDir: string;
  logger: Logger;
  /** Boot the pruned image and check the probes (default true). */
  verify?: boolean;
  manifestLock?: string;
  updateManifest?: boolean;
  /** Write each probe's traced response into its fixture where missing or different. */
  updateFixtures?: boolean;
  /** Working directory for intermediate roots; default a temp dir removed afterwards. */
  workDir?: string;
  keepWorkDir?: boolean;
  /** Replace outputs (or work-dir entries) that lhc did not write in an unmarked dir. */
  force?: boolean;
  /** Load test during verify. */
  requests?: number;
  concurrency?: number;
  store?: Store;
  /** Root of lhc's caches (built Lua, Debian bases); default cacheDir() ($LHC_CACHE_DIR). */
  cacheDir?: string;
  /** Where Debian base tarballs are cached; default <cacheDir>/bases. */
  basesDir?: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

export async function build(config: LhcConfig, opts: BuildOptions): Promise<BuildResult> {
  const { logger } = opts;
  await checkConfigFiles(config, { updateFixtures: opts.updateFixtures ?? false });
  const timings: BuildResult['timings'] = [];
  const stage = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    ctx.signal?.throwIfAborted();
    const started = Date.now();
    try {
      return await logger.group(name, fn);
    } finally {
      timings.push({ stage: name, seconds: (Date.now() - started) / 1000 });
    }
  };
  // lhc runs as root: refuse system dirs and the project, and never replace or remove entries
  // it did not write (core/build-dirs.ts).
  const outDir = path.resolve(opts.outDir);
  const names = artifactNames(config.name, {
    image: config.outputs.image,
    dataTemplate: config.outputs['data-template'],
    manifest: config.outputs.manifest,
  });
  const dirs = await inspectBuildDirs({
    outDir,
    workDir: opts.workDir,
    force: opts.force ?? false,
    outputNames: [
      ...Object.values(names),
      `${config.name}.trace.json`,
      exposureFileName(config.name),
      'SHA256SUMS',
      'deploy',
    ],
    projectRoot: await projectRoot(config.dir),
    configDir: config.dir,
  });
  // Every file and directory lhc creates gets an explicit mode, but mkdir() and open() are masked
  // by the umask: pin it, so the caller's umask can never reach the image or the data template.
  const callerUmask = process.umask(0o022);
  let ctx: StageContext;
  try {
    await claimBuildDirs(dirs, logger);
    // The one context every stage gets: its paths, store, logger and cancellation signal.
    ctx = stageContext({
      logger,
      workDir: dirs.work?.dir ?? (await mkdtemp(path.join(os.tmpdir(), `lhc-${config.name}-`))),
      outDir,
      ...(opts.store ? { store: opts.store } : {}),
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (e) {
    process.umask(callerUmask);
    throw e;
  }
  const { work } = ctx;
  const workDir = work.dir;
  // Registered, so that a cancelled run (SIGTERM, Ctrl-C) removes it too, after the stages'
  // own cleanups have unmounted what lives inside it.
  const removeWorkDir = registerCleanup(`work dir ${workDir}`, async () => {
    if (opts.keepWorkDir) {
      logger.info(`work dir kept: ${workDir}`);
      return;
    }
    // The roots hold files owned by other uids (nspawn, mmdebstrap): remove them with privilege.
    // A work dir lhc did not create loses only what lhc put there.
    await removeTree(workDirRemovals(workDir, dirs.work), { reject: false });
  });
  // Clean-ups that run alongside later stages; all are awaited before the build returns.
  const background: Promise<void>[] = [];
  const settleBackground = async () => {
    const results = await Promise.allSettled(background.splice(0));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  try {
    await stage('fetch', () => fetchInputs(ctx, { config }));

    const lua = config.lua;
    const luaBuild = lua
      ? await stage('lua', () =>
          buildLua(ctx, {
            version: lua.version,
            sha256: lua.sha256,
            urls: lua.urls,
            arch: config.arch,
            strategy: lua.strategy,
            cacheDir: opts.cacheDir,
          }),
        )
      : undefined;
    if (luaBuild)
      logger.info(
        `lua ${luaBuild.version}: ${luaBuild.bytes} bytes${luaBuild.cached ? ' (cached)' : ''}`,
      );

    // Intermediate roots are created by root (nspawn, mmdebstrap); clear any earlier run's tree.
    const { assembled, runAs } = await stage('root', async () => {
      await removeTree([work.root]);
      const assembled = await assembleRoot(ctx, {
        config,
        luaPath: luaBuild?.path,
        basesDir: opts.basesDir ?? (opts.cacheDir ? path.join(opts.cacheDir, 'bases') : undefined),
      });
      // Before the trace, from the unpruned root: the pruned one has no /etc/passwd.
      const runAs = await installRunAs(ctx, { config, root: assembled.root });
      await installAcceptLoop(ctx, { config, root: assembled.root });
      return { assembled, runAs };
    });

    await checkEntrypoint(ctx, {
      root: assembled.root,
      command0: config.service.command[0]!,
      arch: config.arch,
    });
    // The traced view's unmount and removal go on behind prune and pack (awaited below).
    const trace = await stage('trace', () =>
      traceService(ctx, {
        config,
        root: assembled.root,
        runAs,
        deferCleanup: (removal) => {
          // Handled at once (a rejection must not count as unhandled); thrown by settleBackground.
          removal.catch(() => undefined);
          background.push(removal);
        },
      }),
    );

    // From the unpruned run, before pruning: verify then judges the pruned image against them.
    const fixtures = opts.updateFixtures
      ? await stage('fixtures', () => recordFixtures(ctx, { config, responses: trace.responses }))
      : undefined;

    const verifies = opts.verify !== false;
    // Verify judges bodies by their fixtures; an http probe without one is only judged by the
    // self-check's comparison with the traced body.
    const verifyChecks = verifies && config.probes.every((p) => p.fixture !== undefined);
    const pruned = await stage('prune', async () => {
      const p = await pruneRoot(ctx, { root: assembled.root, trace, config, runAs });
      if (verifyChecks) {
        // Verify probes the packed image against the traced answers too: one round, not two.
        logger.info('self-check: done by verify, against the packed image');
        return p;
      }
      await selfCheck(ctx, {
        config,
        prunedRoot: p.prunedRoot,
        unprunedResponses: trace.responses,
        dataDir: p.dataDir,
        runAs,
      });
      logger.info('self-check: every probe answers the same from the pruned root');
      return p;
    });
    // From here on the image in outDir changes: an earlier SHA256SUMS no longer vouches for it.
    await retractSha256Sums(outDir);
    const { packed, manifestDiff } = await stage('pack', async () => {
      const { epoch, source } = await resolveEpoch({
        env: ctx.env,
        configEpoch: config.epoch,
        configFile: config.file,
        logger,
      });
      logger.info(`epoch ${epoch} (from ${source})`);
      const packed = await packImage(ctx, {
        root: pruned.prunedRoot,
        dataDir: pruned.dataDir,
        dataPath: config.data.path,
        ...(runAs ? { dataOwner: { uid: runAs.uid, gid: runAs.gid } } : {}),
        name: config.name,
        epoch,
        fileNames: {
          image: config.outputs.image,
          dataTemplate: config.outputs['data-template'],
          manifest: config.outputs.manifest,
        },
      });
      let manifestDiff: string | undefined;
      if (opts.manifestLock) {
        const lock = await checkManifestLock(
          packed.manifestData,
          path.resolve(opts.manifestLock),
          opts.updateManifest ?? false,
          logger,
        );
        if (lock.updated) {
          manifestDiff = lock.diffText;
          logger.info(
            `manifest lock ${opts.manifestLock} updated with this build's manifest: commit it\n${lock.diffText.trimEnd()}`,
          );
        } else if (lock.changed) {
          manifestDiff = lock.diffText;
          // Not thrown: verify still runs, so one run shows everything that is wrong.
          logger.warn(
            `the built image differs from the manifest lock ${opts.manifestLock}; the build will fail after verify:\n${lock.diffText.trimEnd()}`,
          );
        } else logger.info(`manifest matches ${opts.manifestLock}`);
      }
      return { packed, manifestDiff };
    });
    const outputs = await stage('outputs', () =>
      writeOutputs(ctx, {
        config,
        packed,
        report: pruned.report,
        prunedRoot: pruned.prunedRoot,
      }),
    );

    const verify = !verifies
      ? undefined
      : await stage('verify', () =>
          verifyImage(ctx, {
            config,
            image: packed.image,
            dataTemplate: packed.dataTemplate,
            requests: opts.requests,
            concurrency: opts.concurrency,
            traced: trace.responses,
          }),
        );

    const lockState = opts.manifestLock
      ? {
          path: opts.manifestLock,
          updated: (opts.updateManifest ?? false) && manifestDiff !== undefined,
        }
      : undefined;
    const failure =
      buildFailures(
        { manifestDiff, manifestLock: lockState, verify },
        '--update-manifest (CLI) or the update-manifest: true input (Action)',
      ) || undefined;
    await settleBackground();
    const seal = await sealOutputs(ctx, { name: config.name, files: outputs.files, failure });

    const result: BuildResult = {
      name: config.name,
      outDir,
      image: packed.image,
      imageSha256: packed.imageSha256,
      imageBytes: packed.imageBytes,
      dataTemplate: packed.dataTemplate,
      dataTemplateSha256: packed.dataTemplateSha256,
      manifest: packed.manifest,
      ...seal,
      bundleDir: outputs.bundle.dir,
      traceReport: outputs.traceReport,
      ...(outputs.exposure ? { exposure: outputs.exposure } : {}),
      bytesBefore: pruned.report.base.bytes,
      bytesAfter: pruned.report.kept.bytes,
      filesKept: pruned.report.kept.entries,
      manifestDiff,
      ...(lockState ? { manifestLock: lockState } : {}),
      verify,
      ...(fixtures ? { fixtures } : {}),
      timings,
    };
    return result;
  } finally {
    process.umask(callerUmask);
    // A failed build still waits for them (their own errors give way to the build's).
    await Promise.allSettled(background);
    await removeWorkDir.run();
  }
}

import { buildFailures, buildOk, type BuildResult } from '../../build-result.js';
import { ConfigError } from '../../core/errors.js';
import { loadConfig } from '../../config/load.js';
import { build } from '../../pipeline.js';
import { configOrDefault, type Command } from '../command.js';

/** `lhc build --json`: the documented shape (README, "JSON output"), built from the pipeline's result. */
export function buildJson(r: BuildResult) {
  return {
    ok: buildOk(r),
    name: r.name,
    outDir: r.outDir,
    image: { path: r.image, sha256: r.imageSha256, bytes: r.imageBytes },
    dataTemplate: { path: r.dataTemplate, sha256: r.dataTemplateSha256 },
    manifest: r.manifest,
    sha256sums: r.sha256sums ?? null,
    failureReport: r.failureReport ?? null,
    bundleDir: r.bundleDir,
    traceReport: r.traceReport,
    bytesBefore: r.bytesBefore,
    bytesAfter: r.bytesAfter,
    filesKept: r.filesKept,
    manifestDiff: r.manifestDiff ?? null,
    manifestUpdated: r.manifestLock?.updated ?? false,
    fixtures: r.fixtures ?? null,
    verify: r.verify ?? null,
    timings: r.timings,
  };
}

export const buildCommand: Command = {
  name: 'build',
  summary: 'build the image described by an lhc.yml',
  help: `Usage: lhc build [CONFIG] [--out DIR] [--no-verify] [--manifest-lock FILE] [--update-manifest] [--update-fixtures] [--work-dir DIR] [--force] [--json]

Runs the pipeline for CONFIG (default: ./lhc.yml) and writes the image, data template, manifest
and SHA256SUMS to DIR. A failed build (verify, or a manifest that differs from its lock) writes
<name>.build-failed.txt there instead of SHA256SUMS and exits 1.

Options:
  --out, -o DIR          output directory (default: outputs.dir from the config, "out")
  --no-verify            skip booting the pruned image and checking the probes
  --manifest-lock FILE   fail (after verify) when the manifest differs from FILE
  --update-manifest      write the new manifest to the --manifest-lock file instead of failing
  --update-fixtures      write each probe's response from the traced (unpruned) run into its
                         fixture file where it is missing or differs, and print what was written;
                         verify still fails if the pruned image answers differently
  --work-dir DIR         keep intermediate roots in DIR (default: a temp dir, removed)
  --force                replace outputs (or work-dir entries) in DIR that lhc did not write;
                         without it such a DIR is refused (see README, "Output directory")
  --json                 print the result as one JSON object (see README, "JSON output")`,
  options: {
    out: { type: 'string', short: 'o', complete: 'dir' },
    'no-verify': { type: 'boolean' },
    'manifest-lock': { type: 'string', complete: 'file' },
    'update-manifest': { type: 'boolean' },
    'update-fixtures': { type: 'boolean' },
    'work-dir': { type: 'string', complete: 'dir' },
    force: { type: 'boolean' },
  },
  positionals: { min: 0, max: 1, names: 'CONFIG' },
  json: true,
  async run({ options, positionals }, ctx) {
    if (options['update-manifest'] === true && options['manifest-lock'] === undefined)
      throw new ConfigError(
        'lhc build: --update-manifest needs --manifest-lock FILE (the lock file to write)',
      );
    const config = await loadConfig(configOrDefault(positionals[0], 'build'));
    const workDir = options['work-dir'] as string | undefined;
    const result = await build(config, {
      outDir: (options.out as string | undefined) ?? config.outputs.dir,
      logger: ctx.logger,
      verify: options['no-verify'] !== true,
      manifestLock: options['manifest-lock'] as string | undefined,
      updateManifest: options['update-manifest'] === true,
      updateFixtures: options['update-fixtures'] === true,
      workDir,
      keepWorkDir: workDir !== undefined,
      force: options.force === true,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    const json = buildJson(result);
    if (ctx.json) ctx.emitJson(json);
    else {
      ctx.out(`image         ${result.image}`);
      ctx.out(`sha256        ${result.imageSha256}`);
      ctx.out(`data template ${result.dataTemplate}`);
      ctx.out(`manifest      ${result.manifest}`);
      ctx.out(`files kept    ${result.filesKept}`);
      ctx.out(`bytes         ${result.bytesBefore} -> ${result.bytesAfter}`);
      for (const f of result.fixtures ?? [])
        if (f.change !== 'unchanged')
          ctx.out(`fixture       ${f.path} (${f.change}, ${f.bytes} bytes, probe ${f.probe})`);
      if (result.verify) ctx.out(`verify        ${result.verify.ok ? 'ok' : 'FAILED'}`);
      if (result.manifestLock?.updated)
        ctx.out(`manifest lock ${result.manifestLock.path} updated`);
      ctx.out(
        `SHA256SUMS    ${result.sha256sums ?? `none: the build FAILED, see ${result.failureReport}`}`,
      );
    }
    // The artifacts are written either way; a failed build fails the command (exit 1).
    const failures = buildFailures(result, '--update-manifest');
    if (failures) ctx.logger.warn(`build failed:\n${failures}`);
    return json.ok ? 0 : 1;
  },
};

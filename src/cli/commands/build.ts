import { verifyFailures } from '../../build-result.js';
import { loadConfig } from '../../config/load.js';
import { UserError } from '../../core/errors.js';
import { build } from '../../pipeline.js';
import { parseArgs, type Command } from '../command.js';

export const buildCommand: Command = {
  name: 'build',
  summary: 'build the image described by an lhc.yml',
  help: `Usage: lhc build CONFIG [--out DIR] [--no-verify] [--manifest-lock FILE] [--update-manifest] [--work-dir DIR]

Runs the pipeline for CONFIG and writes the image, data template, manifest and SHA256SUMS to DIR.

Options:
  --out, -o DIR          output directory (default: outputs.dir from the config, "out")
  --no-verify            skip booting the pruned image and checking the probes
  --manifest-lock FILE   fail when the manifest differs from FILE
  --update-manifest      write the new manifest to the lock file instead of failing
  --work-dir DIR         keep intermediate roots in DIR (default: a temp dir, removed)`,
  async run(args, ctx) {
    const { flags, positionals } = parseArgs(
      args,
      {
        flags: {
          out: { type: 'string', short: 'o' },
          verify: { type: 'boolean' },
          'manifest-lock': { type: 'string' },
          'update-manifest': { type: 'boolean' },
          'work-dir': { type: 'string' },
        },
        positionals: { min: 1, max: 1, names: 'CONFIG' },
      },
      'lhc build',
    );
    const config = await loadConfig(positionals[0]!);
    const workDir = flags['work-dir'] as string | undefined;
    const result = await build(config, {
      outDir: (flags.out as string | undefined) ?? config.outputs.dir,
      logger: ctx.logger,
      verify: flags.verify !== false,
      manifestLock: flags['manifest-lock'] as string | undefined,
      updateManifest: flags['update-manifest'] === true,
      workDir,
      keepWorkDir: workDir !== undefined,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    ctx.out(`image         ${result.image}`);
    ctx.out(`sha256        ${result.imageSha256}`);
    ctx.out(`data template ${result.dataTemplate}`);
    ctx.out(`manifest      ${result.manifest}`);
    ctx.out(`files kept    ${result.filesKept}`);
    ctx.out(`bytes         ${result.bytesBefore} -> ${result.bytesAfter}`);
    // The artifacts are written either way; a failed verify fails the command (exit 1).
    if (result.verify && !result.verify.ok)
      throw new UserError(`verify failed:\n${verifyFailures(result.verify)}`);
    return 0;
  },
};

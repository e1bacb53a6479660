import { checkConfigFiles } from '../../config/check-files.js';
import { loadConfig } from '../../config/load.js';
import { configOrDefault, type Command } from '../command.js';
import { errorJson } from '../errors.js';

export const validateCommand: Command = {
  name: 'validate',
  summary: 'check lhc.yml files against the schema',
  help: `Usage: lhc validate [CONFIG...] [--update-fixtures] [--json]

Reads each config (default: ./lhc.yml) and checks it against the lhc.yml schema. Every problem
is reported with its field path and line, e.g. "lua.sha256: expected 64 hex characters
(lhc.yml:7)". Files the config names (files[].src, data.template, base.path, probe fixtures)
must be readable. Exits 0 when all configs are valid, 2 otherwise.

Options:
  --update-fixtures  accept probe fixtures that do not exist yet (lhc build --update-fixtures
                     records them)
  --json    print {"ok", "configs": [...]} with one entry per config, valid or not`,
  options: { 'update-fixtures': { type: 'boolean' } },
  positionals: { min: 0, names: 'CONFIG' },
  json: true,
  async run({ options, positionals }, ctx) {
    const files = positionals.length > 0 ? positionals : [configOrDefault(undefined, 'validate')];
    const results = [];
    for (const file of files) {
      try {
        const c = await loadConfig(file);
        await checkConfigFiles(c, { updateFixtures: options['update-fixtures'] === true });
        const summary = {
          file,
          ok: true as const,
          name: c.name,
          arch: c.arch,
          base: c.base.type,
          lua: c.lua?.version ?? null,
          probes: c.probes.length,
          warnings: c.warnings,
        };
        results.push(summary);
        for (const w of c.warnings) ctx.logger.warn(`${file}: ${w}`);
        if (!ctx.json) {
          const lua = c.lua ? `lua ${c.lua.version}` : 'no lua';
          ctx.out(
            `${file}: ok (${c.name}, ${c.arch}, base ${c.base.type}, ${lua}, ${c.probes.length} probe${c.probes.length === 1 ? '' : 's'})`,
          );
        }
      } catch (e) {
        // Text mode stops at the first invalid config, as before; --json reports every one.
        if (!ctx.json) throw e;
        const error = errorJson(e);
        if (error.kind === 'bug') throw e;
        results.push({ file, ok: false as const, error });
      }
    }
    const ok = results.every((r) => r.ok);
    if (ctx.json) ctx.emitJson({ ok, configs: results });
    return ok ? 0 : 2;
  },
};

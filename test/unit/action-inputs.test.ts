import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { readInputs } from '../../src/action/inputs.js';
import { failureMessage, outputsOf } from '../../src/action/main.js';
import type { BuildResult } from '../../src/build-result.js';
import { ConfigError, UserError } from '../../src/core/errors.js';

const actionYml = parse(
  readFileSync(path.resolve(import.meta.dirname, '../../action.yml'), 'utf8'),
) as {
  runs: { using: string; main: string };
  inputs: Record<string, { description: string; default?: string; required?: boolean }>;
  outputs: Record<string, { description: string }>;
};

/** Inputs as the runner passes them: every declared default, then the workflow's values. */
function inputsFrom(given: Record<string, string>) {
  const values: Record<string, string> = {};
  for (const [name, spec] of Object.entries(actionYml.inputs)) values[name] = spec.default ?? '';
  Object.assign(values, given);
  return readInputs((name) => {
    if (!(name in actionYml.inputs)) throw new Error(`input ${name} is not declared in action.yml`);
    return values[name]!;
  });
}

describe('action.yml and the action shell agree', () => {
  it('runs on node24 from dist/index.js, every input and output documented', () => {
    expect(actionYml.runs).toEqual({ using: 'node24', main: 'dist/index.js' });
    for (const spec of [...Object.values(actionYml.inputs), ...Object.values(actionYml.outputs)]) {
      expect(spec.description.length).toBeGreaterThan(10);
    }
  });

  it('defaults: cache, upload-artifacts, verify and board on; lhc.yml', () => {
    expect(inputsFrom({})).toEqual({
      config: 'lhc.yml',
      outDir: undefined,
      cache: true,
      uploadArtifacts: true,
      artifactName: undefined,
      manifestLock: undefined,
      updateManifest: false,
      updateFixtures: false,
      verify: true,
      force: false,
      board: true,
    });
  });

  it('reads every input', () => {
    expect(
      inputsFrom({
        config: 'examples/gophermoon/lhc.yml',
        'out-dir': 'build',
        cache: 'false',
        'upload-artifacts': 'False',
        'artifact-name': 'moon',
        'manifest-lock': 'manifest.lock',
        'update-manifest': 'true',
        'update-fixtures': 'true',
        verify: 'FALSE',
        force: 'true',
        board: 'false',
      }),
    ).toEqual({
      config: 'examples/gophermoon/lhc.yml',
      outDir: 'build',
      cache: false,
      uploadArtifacts: false,
      artifactName: 'moon',
      manifestLock: 'manifest.lock',
      updateManifest: true,
      updateFixtures: true,
      verify: false,
      force: true,
      board: false,
    });
  });

  it('a boolean input that is not true/false is a config error naming the input', () => {
    expect(() => inputsFrom({ verify: 'yes' })).toThrow(
      new ConfigError('input verify: expected true or false, got "yes"'),
    );
  });

  it('every declared output is set from a BuildResult', () => {
    const r = {
      image: '/o/t.squashfs',
      imageSha256: 'a'.repeat(64),
      dataTemplate: '/o/t-data.tar',
      manifest: '/o/t.manifest',
      sha256sums: '/o/SHA256SUMS',
      bytesBefore: 1000,
      bytesAfter: 10,
      filesKept: 3,
    } as BuildResult;
    const outputs = outputsOf(r);
    expect(Object.keys(outputs).sort()).toEqual(Object.keys(actionYml.outputs).sort());
    expect(outputs).toMatchObject({
      'bytes-before': '1000',
      'bytes-after': '10',
      'files-kept': '3',
      'verify-ok': '',
      'manifest-changed': 'false',
    });
    expect(outputs).toMatchObject({
      sha256sums: '/o/SHA256SUMS',
      'failure-report': '',
      'board-ok': '',
    });
    const failed = {
      ...r,
      sha256sums: undefined,
      failureReport: '/o/t.build-failed.txt',
      manifestDiff: '+ /x',
      verify: { ok: false, probes: [], hardening: [] },
    };
    expect(outputsOf(failed)).toMatchObject({
      'verify-ok': 'false',
      'manifest-changed': 'true',
      sha256sums: '',
      'failure-report': '/o/t.build-failed.txt',
    });
    expect(outputsOf(r, { ok: true })['board-ok']).toBe('true');
    expect(outputsOf(r, { ok: false, error: 'boot failed' })['board-ok']).toBe('false');
    expect(outputsOf(failed, { ok: false, skipped: 'the build failed' })['board-ok']).toBe('');
  });

  it('a user error fails the step with its message, no stack', () => {
    expect(failureMessage(new UserError('lua.sha256 mismatch'))).toBe('lua.sha256 mismatch');
    expect(failureMessage(new Error('bug'))).toMatch(/^Error: bug\n +at /);
  });
});

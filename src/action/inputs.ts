/** The action's inputs (see action.yml), read and checked in one place. */
import { ConfigError } from '../core/errors.js';

export interface ActionInputs {
  config: string;
  /** Empty: the config's outputs.dir. */
  outDir?: string;
  cache: boolean;
  uploadArtifacts: boolean;
  /** Empty: the config's name. */
  artifactName?: string;
  manifestLock?: string;
  updateManifest: boolean;
  /** Record each probe's traced response into its fixture file where missing or different. */
  updateFixtures: boolean;
  verify: boolean;
  /** Replace files in out-dir that lhc did not write (default false: such an out-dir is refused). */
  force: boolean;
  /** Also verify on a simulated board (boots a Debian systemd machine; default true). */
  board: boolean;
}

function bool(name: string, value: string, fallback: boolean): boolean {
  const v = value.trim();
  if (v === '') return fallback;
  if (/^(true|True|TRUE)$/.test(v)) return true;
  if (/^(false|False|FALSE)$/.test(v)) return false;
  throw new ConfigError(`input ${name}: expected true or false, got "${v}"`);
}

/** `get` returns an input's raw value ('' when unset), as core.getInput does. */
export function readInputs(get: (name: string) => string): ActionInputs {
  const opt = (name: string) => get(name).trim() || undefined;
  return {
    config: opt('config') ?? 'lhc.yml',
    outDir: opt('out-dir'),
    cache: bool('cache', get('cache'), true),
    uploadArtifacts: bool('upload-artifacts', get('upload-artifacts'), true),
    artifactName: opt('artifact-name'),
    manifestLock: opt('manifest-lock'),
    updateManifest: bool('update-manifest', get('update-manifest'), false),
    updateFixtures: bool('update-fixtures', get('update-fixtures'), false),
    verify: bool('verify', get('verify'), true),
    force: bool('force', get('force'), false),
    board: bool('board', get('board'), true),
  };
}

/**
 * Every intermediate path of a build, derived from one work dir, so that no stage guesses where
 * another one put its files (and the cleanup knows what it removes).
 */
import path from 'node:path';

export interface WorkLayout {
  dir: string;
  /** The assembled root (created by the root stage; must not exist before it runs). */
  root: string;
  /** The traced run's scratch: the writable view of the root, its data dir, the raw traces. */
  trace: string;
  /** The pruned root (`<pruned>/root`) and the data template's directory (`<pruned>/data`). */
  pruned: string;
  /** The self-check's read-only view and data dir. */
  selfCheck: string;
  /** Parent of the Lua builds' temporary source trees (one `lhc-lua-*` per build). */
  lua: string;
  /** Parent of verify's runs (one `lhc-verify-*` per run: the image and data mount points). */
  verify: string;
}

export function workLayout(dir: string): WorkLayout {
  const abs = path.resolve(dir);
  return {
    dir: abs,
    root: path.join(abs, 'root'),
    trace: path.join(abs, 'trace'),
    pruned: path.join(abs, 'pruned'),
    selfCheck: path.join(abs, 'self-check'),
    lua: path.join(abs, 'lua'),
    verify: path.join(abs, 'verify'),
  };
}

/** The traced run's scratch inside its dir (the view's name is the container's hostname: keep it). */
export function traceScratch(dir: string) {
  return {
    /** The writable view of the root the service runs on (overlay mount point or copy). */
    view: path.join(dir, 'trace-root'),
    upper: path.join(dir, 'trace-upper'),
    overlayWork: path.join(dir, 'trace-overlay-work'),
    data: path.join(dir, 'trace-data'),
    /** Raw traces (QEMU FIFO text, strace logs), kept for debugging. */
    raw: path.join(dir, 'raw'),
  };
}

/** The self-check's scratch inside its dir. */
export function selfCheckScratch(dir: string) {
  return {
    /** The pruned root, bind-mounted read-only. */
    view: path.join(dir, 'self-check-root'),
    data: path.join(dir, 'self-check-data'),
  };
}

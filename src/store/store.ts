/**
 * The content-addressed download store: one file per input, named by the hex sha256 of its
 * content. A file only ever enters the store through a rename after its hash was checked, so a
 * name is a promise about the content; `has` re-checks that promise and drops a file that
 * broke it (disk corruption, a hand edit), so the next fetch replaces it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { storeDir } from '../core/paths.js';
import { sleep } from '../core/wait.js';
import { download, DownloadError, formatBytes } from './download.js';

export interface FetchInput {
  urls: readonly string[];
  sha256: string;
  /** Human name for messages (default: the last path segment of the first URL). */
  name?: string;
  /** Size cap for this input (the config's `max-bytes`); default DEFAULT_MAX_DOWNLOAD_BYTES. */
  maxBytes?: number;
}

export interface FetchOptions {
  /** Attempts per URL after the first, for transient failures only. Default 2. */
  retries?: number;
  /** Milliseconds without data before an attempt is abandoned. Default 30 s. */
  idleTimeoutMs?: number;
  /** Milliseconds one attempt may take in all. Default DEFAULT_DOWNLOAD_DEADLINE_MS. */
  deadlineMs?: number;
  /** Base delay between retries (doubles each time). Default 500 ms. */
  retryDelayMs?: number;
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

const SHA256_RE = /^[0-9a-f]{64}$/;
const TEMP_PREFIX = '.tmp-';

const quiet: Logger = { info() {}, warn() {}, debug() {}, group: (_n, fn) => fn() };

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function checkSha(sha256: string): string {
  if (!SHA256_RE.test(sha256))
    throw new UserError(`not a sha256 (expected 64 lower-case hex characters): '${sha256}'`);
  return sha256;
}

function nameOf(input: FetchInput): string {
  if (input.name) return input.name;
  const first = input.urls[0];
  if (first) {
    try {
      const seg = new URL(first).pathname.split('/').filter(Boolean).pop();
      if (seg) return decodeURIComponent(seg);
    } catch {
      // Reported when the URL is tried.
    }
  }
  return input.sha256.slice(0, 12);
}

export class Store {
  readonly dir: string;
  private readonly logger: Logger;

  constructor(dir: string = storeDir(), logger: Logger = quiet) {
    this.dir = path.resolve(dir);
    this.logger = logger;
  }

  /** Where the file with this content lives (whether or not it is present). */
  path(sha256: string): string {
    return path.join(this.dir, checkSha(sha256));
  }

  /**
   * True when the store holds this content. The file is re-hashed: one whose content does not
   * match its name is removed (with a warning) and reported as absent.
   */
  async has(sha256: string): Promise<boolean> {
    return (await this.presence(sha256)) === 'present';
  }

  /** Like `has`, but tells a file that was never there from a corrupt one it just removed. */
  private async presence(sha256: string): Promise<'present' | 'absent' | 'removed-corrupt'> {
    const file = this.path(sha256);
    try {
      if (!(await stat(file)).isFile()) return 'absent';
    } catch {
      return 'absent';
    }
    const actual = await sha256File(file);
    if (actual === sha256) return 'present';
    this.logger.warn(
      `store file ${file} is corrupt (its content has sha256 ${actual}); removed it`,
    );
    await rm(file, { force: true });
    return 'removed-corrupt';
  }

  /** Imports a local file; returns its sha256. */
  async add(file: string): Promise<string> {
    try {
      if (!(await stat(file)).isFile())
        throw new UserError(`cannot add ${file} to the store: not a regular file`);
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(
        `cannot add ${file} to the store: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      );
    }
    const tmp = await this.tempPath();
    try {
      const h = createHash('sha256');
      const hasher = new Transform({
        transform(chunk: Buffer, _e, cb) {
          h.update(chunk);
          cb(null, chunk);
        },
      });
      await pipeline(createReadStream(file), hasher, createWriteStream(tmp, { mode: 0o644 }));
      const sha = h.digest('hex');
      await rename(tmp, path.join(this.dir, sha));
      this.logger.debug(`store: added ${file} as ${sha}`);
      return sha;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * Path of the content with `input.sha256`: from the store when present (no network), else
   * downloaded from the first URL that delivers exactly that content.
   */
  async fetch(input: FetchInput, opts: FetchOptions = {}): Promise<string> {
    const sha = checkSha(input.sha256);
    const dest = this.path(sha);
    const name = nameOf(input);
    const presence = await this.presence(sha);
    if (presence === 'present') {
      this.logger.debug(`store: ${name} present as ${sha}`);
      return dest;
    }
    // What the store looks like after a failure, said truthfully: a corrupt copy is already gone.
    const storeState =
      presence === 'removed-corrupt'
        ? `the corrupt copy that was in the store was removed (${dest})`
        : 'nothing was added to the store';
    if (input.urls.length === 0) {
      throw new UserError(
        `${name} (sha256 ${sha}) is not in the store ${this.dir} and no URL was given` +
          `${presence === 'removed-corrupt' ? ` (${storeState})` : ''}; import it with: lhc store add FILE`,
      );
    }
    const retries = opts.retries ?? 2;
    const failures: string[] = [];
    for (const url of input.urls) {
      for (let attempt = 0; ; attempt++) {
        const tmp = await this.tempPath();
        try {
          this.logger.info(
            `downloading ${name} from ${url}${attempt > 0 ? ` (retry ${attempt} of ${retries})` : ''}`,
          );
          const got = await download(url, tmp, {
            idleTimeoutMs: opts.idleTimeoutMs,
            deadlineMs: opts.deadlineMs,
            maxBytes: input.maxBytes,
            progressIntervalMs: opts.progressIntervalMs,
            signal: opts.signal,
            logger: this.logger,
            label: name,
          });
          if (got.sha256 !== sha) {
            throw new DownloadError(
              url,
              `sha256 mismatch: expected ${sha}, got ${got.sha256} (${got.bytes} bytes)`,
              false,
            );
          }
          await rename(tmp, dest);
          this.logger.info(`${name}: ${formatBytes(got.bytes)}, sha256 verified`);
          return dest;
        } catch (e) {
          if (!(e instanceof DownloadError)) throw e;
          if (e.transient && attempt < retries && !opts.signal?.aborted) {
            this.logger.warn(`${e.message}; retrying`);
            await sleep((opts.retryDelayMs ?? 500) * 2 ** attempt);
            continue;
          }
          failures.push(`  ${e.message}${attempt > 0 ? ` (after ${attempt + 1} attempts)` : ''}`);
          break;
        } finally {
          await rm(tmp, { force: true });
        }
      }
    }
    throw new UserError(
      `could not fetch ${name} (sha256 ${sha}) from ${input.urls.length === 1 ? 'its URL' : `any of ${input.urls.length} URLs`}; ${storeState}:\n${failures.join('\n')}`,
    );
  }

  /** sha256 names of every file in the store (temp files of running downloads excluded). */
  async list(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((f) => SHA256_RE.test(f)).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  /** A fresh temp name inside the store, so the final rename never crosses a file system. */
  private async tempPath(): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    return path.join(this.dir, `${TEMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
  }
}

/**
 * The action as a GitHub-hosted runner runs it: the bundled dist/index.js started with node by a
 * non-root user that has passwordless sudo, inputs as INPUT_* variables (every input, defaults
 * from action.yml), outputs, summary and state as files, RUNNER_TEMP and GITHUB_WORKSPACE set,
 * no cache or artifact service. Builds the gophermoon example for real and checks every output
 * and the job summary.
 */
import { createHash } from 'node:crypto';
import { existsSync, createReadStream } from 'node:fs';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { formatBytes } from '../../src/action/summary.js';
import { loadConfig } from '../../src/config/load.js';
import { Store } from '../../src/store/store.js';
import { run, type RunResult } from '../../src/tools/exec.js';
import { testBoardTarball } from '../support/board.js';
import { luaSourceTarball } from '../support/debian-inputs.js';
import {
  createRunnerUser,
  removeRunnerUser,
  runAs,
  type RunnerUser,
} from '../support/runner-user.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = path.join(repo, 'dist/index.js');
const EXAMPLE = 'examples/gophermoon/lhc.yml';

interface ActionSpec {
  inputs: Record<string, { default?: string }>;
  outputs: Record<string, unknown>;
}

let user: RunnerUser | undefined;
let spec: ActionSpec;
/** The runner's per-job layout, under the user's home. */
let workspace: string;
let runnerTemp: string;

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * The board root is made by mmdebstrap (minutes) and cached; hand the runner user this machine's
 * copy (made here first if missing), as a runner with a warm Actions cache would have it.
 */
async function seedBoardCache(): Promise<void> {
  const tarball = await testBoardTarball();
  const userCache = path.join(user!.home, '.cache/lhc/board');
  await mkdir(userCache, { recursive: true });
  await cp(tarball, path.join(userCache, path.basename(tarball)));
  await run(['chown', '-R', `${user!.uid}:${user!.gid}`, path.join(user!.home, '.cache')]);
}

/** `name<<DELIM\nvalue\nDELIM` records of a GITHUB_OUTPUT file (the runner's file command format). */
function parseOutputFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') continue;
    const heredoc = /^([^=<]+)<<(.+)$/.exec(line);
    if (heredoc) {
      const [, name, delim] = heredoc;
      const end = lines.indexOf(delim!, i + 1);
      if (end < 0) throw new Error(`output ${name}: no closing delimiter ${delim}`);
      out.set(name!, lines.slice(i + 1, end).join('\n'));
      i = end;
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`malformed GITHUB_OUTPUT line: ${line}`);
    out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** Rows (cell HTML) of the first table after `marker` in the summary. */
function tableAfter(html: string, marker: string): string[][] {
  const at = html.indexOf(marker);
  if (at < 0) return [];
  const start = html.indexOf('<table>', at);
  const end = html.indexOf('</table>', start);
  const rows = html.slice(start, end).match(/<tr>.*?<\/tr>/gs) ?? [];
  return rows.slice(1).map((r) => [...r.matchAll(/<td>(.*?)<\/td>/gs)].map((m) => m[1]!));
}

interface StepRun {
  result: RunResult;
  outputs: Map<string, string>;
  summary: string;
  outDir: string;
}

/**
 * One action step: fresh GITHUB_OUTPUT/GITHUB_STEP_SUMMARY files, every input set (the runner
 * passes defaults too), INPUT_ names upper-cased with spaces as "_" and hyphens kept.
 */
async function runStep(name: string, inputs: Record<string, string>): Promise<StepRun> {
  const u = user!;
  const files = path.join(runnerTemp, `_runner_file_commands_${name}`);
  await mkdir(files, { recursive: true });
  const outDir = path.join(runnerTemp, `out-${name}`);
  const fileEnv: Record<string, string> = {};
  for (const [v, f] of [
    ['GITHUB_OUTPUT', 'set_output'],
    ['GITHUB_STEP_SUMMARY', 'step_summary'],
    ['GITHUB_ENV', 'set_env'],
    ['GITHUB_PATH', 'add_path'],
    ['GITHUB_STATE', 'save_state'],
  ] as const) {
    fileEnv[v] = path.join(files, f);
    await writeFile(fileEnv[v]!, '');
  }
  await run(['chown', '-R', `${u.uid}:${u.gid}`, files]);
  const inputEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.inputs))
    inputEnv[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v.default ?? '';
  for (const [k, v] of Object.entries({ 'out-dir': outDir, ...inputs }))
    inputEnv[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v;
  const env: Record<string, string> = {
    PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: u.home,
    USER: u.name,
    LANG: 'C.UTF-8',
    CI: 'true',
    GITHUB_ACTIONS: 'true',
    GITHUB_WORKSPACE: workspace,
    GITHUB_ACTION_PATH: repo,
    GITHUB_REPOSITORY: 'lhc/lhc',
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_RUN_ID: '1',
    GITHUB_JOB: 'build',
    RUNNER_OS: 'Linux',
    RUNNER_ARCH: process.arch === 'arm64' ? 'ARM64' : 'X64',
    RUNNER_TEMP: runnerTemp,
    ...fileEnv,
    ...inputEnv,
  };
  const result = await runAs(u, [process.execPath, dist], {
    env,
    cwd: workspace,
    timeoutMs: 25 * 60_000,
  });
  const outputs = parseOutputFile(await readFile(fileEnv.GITHUB_OUTPUT!, 'utf8'));
  const summary = await readFile(fileEnv.GITHUB_STEP_SUMMARY!, 'utf8');
  return { result, outputs, summary, outDir };
}

/** True when `file` is readable by the runner user (artifact upload and release steps read it). */
async function readableByUser(file: string): Promise<boolean> {
  const r = await runAs(user!, ['test', '-r', file], { env: { PATH: '/usr/bin:/bin' }, cwd: '/' });
  return r.exitCode === 0;
}

beforeAll(async () => {
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run npm run bundle`);
  spec = parse(await readFile(path.join(repo, 'action.yml'), 'utf8')) as ActionSpec;
  user = await createRunnerUser();
  workspace = path.join(user.home, 'work', 'lhc', 'lhc');
  runnerTemp = path.join(user.home, 'work', '_temp');
  // The checkout: the example and its fixtures, at the same relative places as in the repo.
  for (const dir of ['examples/gophermoon', 'fixtures/gophermoon']) {
    await cp(path.join(repo, dir), path.join(workspace, dir), { recursive: true });
  }
  await mkdir(runnerTemp, { recursive: true });
  await run(['chown', '-R', `${user.uid}:${user.gid}`, user.home]);
  // A checkout is a git repository owned by the runner user: the image's epoch comes from the
  // config's last commit, as on a runner.
  const git = (args: string[]) =>
    runAs(
      user!,
      ['git', '-c', 'user.name=lhc test', '-c', 'user.email=test@lhc.invalid', ...args],
      {
        env: { PATH: '/usr/bin:/bin', HOME: user!.home, GIT_COMMITTER_DATE: '@1700000000 +0000' },
        cwd: workspace,
      },
    );
  for (const args of [
    ['init', '-q'],
    ['add', '-A'],
    ['commit', '-q', '-m', 'checkout', '--date=@1700000000 +0000'],
  ]) {
    const r = await git(args);
    if (r.exitCode !== 0)
      throw new Error(`git ${args.join(' ')} in the workspace failed: ${r.stderr}`);
  }
  // Our machines cannot reach lua.org: seed the user's download store with Debian's
  // byte-identical tarball, as a user with a warm cache would have it.
  const lua = await luaSourceTarball('5.4.4');
  await new Store(path.join(user.home, '.cache', 'lhc', 'store')).add(lua.path);
  await run(['chown', '-R', `${user.uid}:${user.gid}`, user.home]);
}, 15 * 60_000);

afterAll(async () => {
  await removeRunnerUser(user);
});

describe('privileged commands as the runner user (sudo -n)', () => {
  const probe = path.join(repo, 'test/support/privileged-run.ts');
  async function asUser(spec: {
    argv: string[];
    privileged: boolean;
    env?: Record<string, string>;
  }) {
    const r = await runAs(
      user!,
      [process.execPath, '--import', 'tsx', probe, JSON.stringify(spec)],
      {
        env: {
          PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`,
          HOME: user!.home,
        },
        cwd: repo,
      },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as {
      ok: boolean;
      stdout?: string;
      command?: string;
      error?: string;
      message?: string;
    };
  }

  it('runs a privileged command as root through sudo -n', async () => {
    const r = await asUser({ argv: ['id', '-u'], privileged: true });
    expect(r).toMatchObject({ ok: true, stdout: '0\n' });
    expect(r.command).toMatch(/^sudo -n -- /);
    const plain = await asUser({ argv: ['id', '-u'], privileged: false });
    expect(plain.stdout).toBe(`${user!.uid}\n`);
  });

  it("passes the caller's environment through sudo", async () => {
    const r = await asUser({
      argv: ['sh', '-c', 'echo "$SOURCE_DATE_EPOCH"'],
      privileged: true,
      env: { SOURCE_DATE_EPOCH: '1700000000' },
    });
    expect(r).toMatchObject({ ok: true, stdout: '1700000000\n' });
  });

  it('names the missing tool, not sudo, when sudo works but the tool is absent', async () => {
    // A path outside the system directories: no host-requirements row is needed to run it.
    const r = await asUser({ argv: ['/opt/lhc-no-such-tool'], privileged: true });
    expect(r.ok).toBe(false);
    expect(r.error).toBe('UserError');
    expect(r.message).toContain("required tool '/opt/lhc-no-such-tool' was not found");
  });
});

describe('the bundled action on the gophermoon example', () => {
  it('fails a broken config with one ::error:: line naming the field and line, no stack, exit 1', async () => {
    const bad = path.join(workspace, 'examples/gophermoon/broken.yml');
    const text = await readFile(path.join(workspace, EXAMPLE), 'utf8');
    const sha = /^ {2}sha256: ([0-9a-f]{64})$/m.exec(text);
    expect(sha, 'the example declares lua.sha256').not.toBeNull();
    const broken = text.replace(sha![0], `  sha256: ${sha![1]!.slice(1)}`);
    const line = broken.split('\n').findIndex((l) => l.startsWith('  sha256: ')) + 1;
    await writeFile(bad, broken);
    await run(['chown', `${user!.uid}:${user!.gid}`, bad]);
    const step = await runStep('broken', { config: 'examples/gophermoon/broken.yml' });
    const { stdout, stderr, exitCode } = step.result;
    expect(exitCode).toBe(1);
    const errors = stdout.split('\n').filter((l) => l.startsWith('::error'));
    expect(errors).toEqual([
      `::error::lua.sha256: expected 64 hex characters (broken.yml:${line})`,
    ]);
    expect(`${stdout}\n${stderr}`).not.toMatch(/^\s+at /m);
    expect([...step.outputs.keys()]).toEqual([]);
  });

  it('fails a missing config with a message naming it', async () => {
    const step = await runStep('missing', { config: 'examples/gophermoon/nope.yml' });
    expect(step.result.exitCode).toBe(1);
    const errors = step.result.stdout.split('\n').filter((l) => l.startsWith('::error'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^::error::cannot read config .*nope\.yml: ENOENT$/);
    expect(step.result.stdout).not.toMatch(/^\s+at /m);
  });

  it('builds as the runner user with the defaults: every output set and right, summary with table, verify, hardening and board', async () => {
    const config = await loadConfig(path.join(workspace, EXAMPLE));
    await seedBoardCache();
    // Every input at its action.yml default: the board verify runs too.
    const step = await runStep('build', { config: EXAMPLE });
    const { stdout, stderr, exitCode } = step.result;
    const log = `${stdout}\n${stderr}`;
    expect(exitCode, `action failed:\n${log.slice(-6000)}`).toBe(0);
    expect(stdout).not.toMatch(/^::error/m);
    expect(stdout).not.toMatch(/^::warning::/m);

    // Every declared output, and nothing else; only the failure report is empty on a passing build.
    const o = step.outputs;
    expect([...o.keys()].sort()).toEqual(Object.keys(spec.outputs).sort());
    const emptyWhenPassing = new Set(['failure-report']);
    for (const [k, v] of o) expect(v === '', `output ${k} = "${v}"`).toBe(emptyWhenPassing.has(k));
    expect(o.get('verify-ok')).toBe('true');
    expect(o.get('board-ok')).toBe('true');
    expect(o.get('manifest-changed')).toBe('false');

    for (const k of ['image', 'data-template', 'manifest', 'sha256sums']) {
      const f = o.get(k)!;
      expect(path.isAbsolute(f), `${k} is an absolute path`).toBe(true);
      expect(f.startsWith(step.outDir + path.sep), `${k} is in out-dir`).toBe(true);
      expect(existsSync(f), `${k} exists`).toBe(true);
      expect(await readableByUser(f), `${k} is readable by the runner user`).toBe(true);
    }
    // The artifact upload and a release step read everything in out-dir as the runner user.
    const unreadable = await runAs(user!, ['find', step.outDir, '!', '-readable'], {
      env: { PATH: '/usr/bin:/bin' },
      cwd: '/',
    });
    expect(unreadable.stdout.trim(), 'files in out-dir the runner user cannot read').toBe('');
    const image = o.get('image')!;
    expect(o.get('image-sha256')).toBe(await sha256(image));

    // SHA256SUMS covers the image and every file it lists is intact.
    const sums = (await readFile(o.get('sha256sums')!, 'utf8')).trim().split('\n');
    const listed = new Map(
      sums.map((l) => {
        const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(l);
        expect(m, `SHA256SUMS line: ${l}`).not.toBeNull();
        return [m![2]!, m![1]!] as const;
      }),
    );
    const base = path.dirname(o.get('sha256sums')!);
    expect(
      [...listed.entries()].some(
        ([f, h]) => path.resolve(base, f) === image && h === o.get('image-sha256'),
      ),
    ).toBe(true);
    for (const [f, h] of listed)
      expect(await sha256(path.resolve(base, f)), `SHA256SUMS entry ${f}`).toBe(h);
    expect(JSON.parse(await readFile(o.get('manifest')!, 'utf8'))).toBeTruthy();

    const before = Number(o.get('bytes-before'));
    const after = Number(o.get('bytes-after'));
    const kept = Number(o.get('files-kept'));
    for (const [k, n] of [
      ['bytes-before', before],
      ['bytes-after', after],
      ['files-kept', kept],
    ] as const) {
      expect(Number.isSafeInteger(n) && n > 0, `${k} is a positive integer, got ${o.get(k)}`).toBe(
        true,
      );
    }
    expect(after).toBeLessThanOrEqual(before);

    // The summary: one compact row with the same numbers, then every probe and hardening row
    // folded (all passed), nothing marked failed.
    const s = step.summary;
    expect(s).toContain(`<h2>lhc: ${config.name} ✅ passed</h2>`);
    expect(s).not.toContain('❌');
    const [top] = tableAfter(s, '<h2>');
    expect(top![1]).toBe('✅');
    expect(top![3]).toBe(`<code>${o.get('image-sha256')!.slice(0, 12)}</code>`);
    expect(top![4]).toBe(String(kept));
    expect(top![5]).toContain(`${formatBytes(before)} → ${formatBytes(after)}`);
    const probes = tableAfter(s, 'probes matched their fixtures</summary>');
    // One row per configured probe, plus rows for a probe repeated through a real client
    // ("root-empty (curl)").
    const configured = new Set(config.probes.map((p) => p.name));
    const rowNames = probes.map((r) => /^<code>(.*)<\/code>$/.exec(r[0]!)?.[1] ?? r[0]!);
    expect(rowNames.filter((n) => configured.has(n)).sort()).toEqual([...configured].sort());
    for (const n of rowNames.filter((n) => !configured.has(n))) {
      expect(configured.has(/^(.+) \(\w+\)$/.exec(n)?.[1] ?? ''), `extra probe row ${n}`).toBe(
        true,
      );
    }
    const hardening = tableAfter(s, 'hardening checks passed</summary>');
    expect(hardening.length, 'hardening rows in the summary').toBeGreaterThan(0);
    expect(top![6]).toBe(
      `✅ ${probes.length}/${probes.length} probes, ${hardening.length}/${hardening.length} hardening`,
    );
    expect(top![7]).toMatch(/^✅ (\d+)\/\1 probes, (\d+)\/\2 hardening$/);
    expect(stdout).toContain('::group::Board verify');

    // One log group per stage with its timing; privileged steps went through sudo.
    const groups = stdout.split('\n').filter((l) => l.startsWith('::group::'));
    expect(groups.length).toBeGreaterThanOrEqual(3);
    expect(stdout.split('\n').filter((l) => l === '::endgroup::')).toHaveLength(groups.length);
    expect(stdout).toMatch(/: done in \d+\.\d s$/m);
    expect(stdout).toMatch(/^(::debug::)?\$ sudo -n -- /m);

    // No cache or artifact service here: the cache is skipped quietly, the upload with a notice.
    expect(stdout).not.toMatch(/^::warning::.*cache/im);
    expect(stdout).toMatch(/^::notice::artifacts: no artifact service outside GitHub Actions/m);
  });

  it('a manifest-lock mismatch still verifies, writes the diff into the summary, sets the outputs, then fails', async () => {
    // A stale lock: the committed one without /bin/gophermoon, so this build adds that path.
    const committed = JSON.parse(
      await readFile(path.join(workspace, 'examples/gophermoon/manifest.lock.json'), 'utf8'),
    ) as { image: { path: string }[] };
    expect(committed.image.some((e) => e.path === '/bin/gophermoon')).toBe(true);
    committed.image = committed.image.filter((e) => e.path !== '/bin/gophermoon');
    const lock = 'examples/gophermoon/stale.lock.json';
    await writeFile(path.join(workspace, lock), JSON.stringify(committed, null, 2) + '\n');
    await run(['chown', `${user!.uid}:${user!.gid}`, path.join(workspace, lock)]);

    const step = await runStep('lock', { config: EXAMPLE, 'manifest-lock': lock });
    const { stdout, stderr, exitCode } = step.result;
    const log = `${stdout}\n${stderr}`;
    expect(exitCode, log.slice(-4000)).toBe(1);
    const errors = stdout.split('\n').filter((l) => l.startsWith('::error'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain('differs from the manifest lock');
    expect(errors[0]).toContain('update-manifest: true');
    expect(log).not.toMatch(/^\s+at /m);

    // Verify ran and passed; every output is set; the failure is marked in out-dir.
    const o = step.outputs;
    expect([...o.keys()].sort()).toEqual(Object.keys(spec.outputs).sort());
    expect(o.get('manifest-changed')).toBe('true');
    expect(o.get('verify-ok')).toBe('true');
    expect(o.get('sha256sums')).toBe('');
    expect(existsSync(path.join(step.outDir, 'SHA256SUMS'))).toBe(false);
    const report = o.get('failure-report')!;
    expect(path.dirname(report)).toBe(step.outDir);
    expect(await readFile(report, 'utf8')).toContain('+ image /bin/gophermoon');
    expect(existsSync(o.get('image')!)).toBe(true);

    // The summary: failed, the diff first, the input named (not the CLI flag).
    const s = step.summary;
    expect(s).toContain('<h2>lhc: gophermoon ❌ failed</h2>');
    expect(s).toContain(`<h3>❌ The manifest differs from the lock <code>${lock}</code></h3>`);
    const diffAt = s.indexOf('+ image /bin/gophermoon');
    expect(diffAt).toBeGreaterThan(0);
    expect(diffAt).toBeLessThan(s.indexOf('<details>'));
    expect(s).toContain('<code>update-manifest: true</code> input');
    expect(s).not.toContain('--update-manifest');
    expect(s).toContain('No <code>SHA256SUMS</code> was written');
    // The lock was left as it was.
    expect(
      (JSON.parse(await readFile(path.join(workspace, lock), 'utf8')) as typeof committed).image,
    ).toEqual(committed.image);
  });
});

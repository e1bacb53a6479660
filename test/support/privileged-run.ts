/**
 * Runs one command through exec.ts's run() in a separate process and prints the outcome as JSON,
 * so tests can watch the privilege path as another (non-root) user:
 *   node --import tsx test/support/privileged-run.ts '{"argv":["id","-u"],"privileged":true}'
 * Output: {"ok":true,"exitCode":0,"stdout":"...","command":"..."} or {"ok":false,"error":"UserError","message":"..."}
 */
import { run } from '../../src/tools/exec.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as {
  argv: string[];
  privileged?: boolean;
  env?: Record<string, string>;
};
try {
  const r = await run(spec.argv, {
    privileged: spec.privileged ?? false,
    env: spec.env,
    timeoutMs: 30_000,
  });
  process.stdout.write(
    JSON.stringify({ ok: true, exitCode: r.exitCode, stdout: r.stdout, command: r.command }),
  );
} catch (e) {
  const err = e as Error;
  process.stdout.write(JSON.stringify({ ok: false, error: err.name, message: err.message }));
}

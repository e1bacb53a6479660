/**
 * Verify stage: what a connection costs on the board's path. The gophermoon image (built by the
 * real stages) is booted read-only with one container per connection, and its probes are sent
 * one at a time: per-connection latency p50/p99. The same script then runs directly under QEMU
 * without a container (`qemu-aarch64-static lua gophermoon < request`, one process per request,
 * content from the same root): the ratio is the container's price. Last, the load
 * (200 requests at concurrency 8) as throughput.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { verifyImage } from '../../src/stages/verify.js';
import { run } from '../../src/tools/exec.js';
import { gopherRequest } from '../../src/harness/client.js';
import { runLoad } from '../../src/verify/load.js';
import { packedGophermoon, requireTools } from '../support/verify-image.js';
import { timed, type BenchSection } from './section.js';

const SEQUENTIAL = 60;
const LOAD = { requests: 200, concurrency: 8 };

export const verifySection: BenchSection = {
  name: 'verify',
  async run(ctx) {
    await requireTools();
    ctx.log('packing the gophermoon image');
    const packed = await packedGophermoon(ctx.workDir);
    const gopher = packed.config.probes.filter((p) => p.type === 'gopher');
    const stage = stageContext({ logger: memoryLogger(), workDir: ctx.workDir });
    const common = {
      config: packed.config,
      image: packed.image,
      dataTemplate: packed.dataTemplate,
    };

    ctx.log(`${SEQUENTIAL} connections one at a time through the booted image`);
    const seq = await verifyImage(stage, { ...common, requests: SEQUENTIAL, concurrency: 1 });
    if (!seq.ok || !seq.load) throw new Error(`verify failed:\n${JSON.stringify(seq, null, 2)}`);

    ctx.log(`${SEQUENTIAL} runs of the same script directly under qemu-aarch64-static`);
    const fixtures = await Promise.all(gopher.map((p) => readFile(p.fixture!)));
    const env = {
      ...packed.config.service.env,
      GOPHER_ROOT: path.join(packed.root, packed.config.service.env.GOPHER_ROOT ?? '/gopher'),
    };
    const [lua, script] = packed.config.service.command.map((c) => path.join(packed.root, c));
    const direct = await runLoad(SEQUENTIAL, 1, async (i) => {
      const p = gopher[i % gopher.length]!;
      const r = await run(['qemu-aarch64-static', lua!, script!], {
        input: gopherRequest(p.type === 'gopher' ? p.selector : ''),
        env,
        binary: true,
      });
      return r.stdoutBytes.equals(fixtures[i % gopher.length]!)
        ? undefined
        : `${p.name}: answer differs from the fixture`;
    });
    if (direct.failures > 0) throw new Error(`direct QEMU runs failed: ${direct.firstFailure}`);

    ctx.log(`${LOAD.requests} requests at concurrency ${LOAD.concurrency}`);
    const { seconds, result: loaded } = await timed(() =>
      verifyImage(stage, { ...common, ...LOAD }),
    );
    if (!loaded.ok || !loaded.load) throw new Error('verify under load failed');

    return [
      { metric: 'container per-connection p50', value: seq.load.p50ms, unit: 'ms' },
      { metric: 'container per-connection p99', value: seq.load.p99ms, unit: 'ms' },
      { metric: 'direct qemu per-request p50', value: direct.p50ms, unit: 'ms' },
      { metric: 'direct qemu per-request p99', value: direct.p99ms, unit: 'ms' },
      {
        metric: 'container/direct p50 ratio',
        value: Math.round((seq.load.p50ms / direct.p50ms) * 100) / 100,
        unit: 'x',
      },
      {
        metric: 'container/direct p99 ratio',
        value: Math.round((seq.load.p99ms / direct.p99ms) * 100) / 100,
        unit: 'x',
      },
      {
        metric: `load ${LOAD.requests}@${LOAD.concurrency} p50`,
        value: loaded.load.p50ms,
        unit: 'ms',
      },
      {
        metric: `load ${LOAD.requests}@${LOAD.concurrency} p99`,
        value: loaded.load.p99ms,
        unit: 'ms',
      },
      {
        metric: `load ${LOAD.requests}@${LOAD.concurrency} throughput`,
        value: Math.round((LOAD.requests / (loaded.load.wallMs / 1000)) * 10) / 10,
        unit: 'req/s',
      },
      {
        metric: `load ${LOAD.requests}@${LOAD.concurrency} failures`,
        value: loaded.load.failures,
        unit: 'count',
      },
      { metric: 'whole verify under load', value: seconds, unit: 's' },
    ];
  },
};

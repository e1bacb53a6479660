import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { pendingCleanups, registerCleanup, runCleanups } from '../../src/core/cleanup.js';
import type { VerifyOutcome } from '../../src/build-result.js';
import { serviceLog } from '../../src/harness/service.js';
import { listensOn } from '../../src/harness/listen.js';
import { exchange, gopherUrl } from '../../src/harness/client.js';
import { percentile, runLoad } from '../../src/verify/load.js';
import { descendants, parseStat, processTable } from '../../src/harness/proc.js';
import { formatVerifyReport } from '../../src/verify/report.js';

describe('parseStat', () => {
  it('reads pid, comm with spaces and parentheses, ppid, pgid and start time', () => {
    const stat =
      '4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10';
    expect(parseStat(stat)).toEqual({
      pid: 4242,
      comm: 'a (weird) name',
      ppid: 1,
      pgid: 4242,
      startTime: 987654,
    });
  });

  it('finds this test process among the descendants of its parent', () => {
    const table = processTable();
    expect(table.get(process.pid)?.ppid).toBe(process.ppid);
    expect(descendants(process.ppid, table).map((p) => p.pid)).toContain(process.pid);
  });
});

describe('percentile (nearest rank)', () => {
  it('matches hand-computed ranks', () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentile(v, 50), percentile(v, 95), percentile(v, 99), percentile(v, 100)]).toEqual([
      50, 95, 99, 100,
    ]);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBe(0);
  });
});

describe('runLoad', () => {
  it('never exceeds the concurrency and counts wrong answers and errors as failures', async () => {
    let inFlight = 0;
    let peak = 0;
    const r = await runLoad(50, 4, async (i) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((res) => setTimeout(res, 2));
      inFlight--;
      if (i === 7) return 'wrong bytes';
      if (i === 9) throw new Error('connection reset');
      return undefined;
    });
    expect(peak).toBe(4);
    expect(r.failures).toBe(2);
    expect(r.latencies).toHaveLength(50);
    expect(r.firstFailure).toMatch(/^request (8: wrong bytes|10: connection reset)$/);
  });
});

describe('listensOn', () => {
  it('reads LISTEN sockets (state 0A) for a port from /proc/net/tcp text', () => {
    const tcp = `  sl  local_address rem_address   st
   0: 0100007F:1BA6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:0050 0100007F:B9B0 01 00000000:00000000 03:00000DAC 00000000     0`;
    expect(listensOn(tcp, 7078)).toBe(true);
    // Port 80 is only in an established connection here.
    expect(listensOn(tcp, 80)).toBe(false);
  });
});

describe('gopher client', () => {
  it('gopherUrl percent-encodes every byte curl would otherwise interpret', () => {
    expect(gopherUrl('127.0.0.1', 70, '')).toBe('gopher://127.0.0.1:70/1');
    expect(gopherUrl('127.0.0.1', 70, '/search\tApollo 11')).toBe(
      'gopher://127.0.0.1:70/1/search%09Apollo%2011',
    );
    expect(gopherUrl('127.0.0.1', 70, '/%2e?x')).toBe('gopher://127.0.0.1:70/1/%252e%3Fx');
  });

  it('exchange sends selector+CRLF and reads to EOF; it times out on a silent server', async () => {
    const got: Buffer[] = [];
    const srv = net.createServer((c) => {
      c.once('data', (d: Buffer) => {
        got.push(d);
        if (d.toString() !== 'silent\r\n') c.end(Buffer.concat([Buffer.from('answer:'), d]));
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    try {
      const answer = await exchange({ host: '127.0.0.1', port }, Buffer.from('/x\tq\r\n'), {
        timeoutMs: 5000,
      });
      expect(answer.toString('latin1')).toBe('answer:/x\tq\r\n');
      await expect(
        exchange({ host: '127.0.0.1', port }, Buffer.from('silent\r\n'), { timeoutMs: 200 }),
      ).rejects.toThrow(/within 200 ms/);
    } finally {
      srv.close();
    }
  });
});

describe('cleanup registry', () => {
  it('runs each cleanup once, newest first, even when called from the finally and the signal handler', async () => {
    const order: string[] = [];
    const a = registerCleanup('a', async () => void order.push('a'));
    registerCleanup('b', async () => {
      order.push('b');
      throw new Error('b failed');
    });
    expect(pendingCleanups()).toEqual(['a', 'b']);
    const errors = await runCleanups();
    await a.run();
    expect(order).toEqual(['b', 'a']);
    expect(errors.map((e) => e.message)).toEqual(['b failed']);
    expect(pendingCleanups()).toEqual([]);
  });
});

describe('report', () => {
  const report: VerifyOutcome = {
    ok: false,
    probes: [
      { name: 'root', ok: true, bytes: 62 },
      { name: 'about', ok: false, bytes: 31, diff: 'first difference at byte 3\n--- a\n+++ b' },
    ],
    hardening: [{ name: 'NoNewPrivs set', ok: true, detail: 'NoNewPrivs: 1' }],
    load: {
      requests: 200,
      concurrency: 8,
      failures: 0,
      p50ms: 70,
      p95ms: 90,
      p99ms: 120,
      wallMs: 4000,
    },
  };

  it('prints probe rows, the diff of a failed probe, hardening rows, the load line and the verdict', () => {
    const text = formatVerifyReport(report).join('\n');
    expect(text).toContain('root   ok      62');
    expect(text).toContain('about  FAIL    31');
    expect(text).toContain('probe about failed:\n    first difference at byte 3');
    expect(text).toContain('NoNewPrivs set  ok      NoNewPrivs: 1');
    expect(text).toContain(
      'LOAD  200 requests at concurrency 8: 0 failures, p50 70 ms, p95 90 ms, p99 120 ms (4.0 s)',
    );
    expect(text.endsWith('verify: FAILED')).toBe(true);
  });

  it('serviceLog drops the socket activator chatter', () => {
    const log =
      'Listening on 127.0.0.1:1 as 3.\nCommunication attempt on fd 3.\nlua: /bin/x:3: boom\nChild 9 died with code 0';
    expect(serviceLog(log)).toBe('lua: /bin/x:3: boom');
  });
});

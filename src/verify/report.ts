/** The verify report as text rows: probes, hardening checks, load, and the verdict. */
import type { VerifyOutcome } from '../build-result.js';

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

const indent = (text: string) => text.split('\n').map((l) => `    ${l}`);

export function formatVerifyReport(r: VerifyOutcome): string[] {
  const out: string[] = [];
  out.push(
    ...table([
      ['PROBE', 'RESULT', 'BYTES'],
      ...r.probes.map((p) => [p.name, p.ok ? 'ok' : 'FAIL', String(p.bytes)]),
    ]),
  );
  for (const p of r.probes) {
    if (!p.ok && p.diff) out.push('', `probe ${p.name} failed:`, ...indent(p.diff));
  }
  out.push('');
  out.push(
    ...table([
      ['HARDENING', 'RESULT', 'DETAIL'],
      ...r.hardening.map((h) => [h.name, h.ok ? 'ok' : 'FAIL', h.detail]),
    ]),
  );
  if (r.load) {
    const l = r.load;
    out.push(
      '',
      `LOAD  ${l.requests} requests at concurrency ${l.concurrency}: ${l.failures} failure${l.failures === 1 ? '' : 's'}, ` +
        `p50 ${l.p50ms} ms, p95 ${l.p95ms} ms, p99 ${l.p99ms} ms (${(l.wallMs / 1000).toFixed(1)} s)`,
    );
    if (l.firstFailure) out.push(...indent(l.firstFailure));
  }
  if (!r.ok && r.serviceLog)
    out.push('', 'container stderr (last lines):', ...indent(r.serviceLog));
  out.push('', `verify: ${r.ok ? 'ok' : 'FAILED'}`);
  return out;
}

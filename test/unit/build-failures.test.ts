/** What makes a build fail and how the failure reads: the lock first, then verify. */
import { describe, expect, it } from 'vitest';
import { buildFailures, buildOk, manifestLockFailed } from '../../src/build-result.js';

const verify = (ok: boolean) => ({
  ok,
  probes: [{ name: 'root', ok, bytes: 3, ...(ok ? {} : { diff: '-a\n+b' }) }],
  hardening: [],
});

describe('buildOk / buildFailures', () => {
  it('a lock that differs fails the build unless it was rewritten; no lock, no lock failure', () => {
    const diff = '+ image /bin/new  file 0644 0:0 3 bytes\n';
    expect(
      manifestLockFailed({ manifestDiff: diff, manifestLock: { path: 'l.json', updated: false } }),
    ).toBe(true);
    expect(
      manifestLockFailed({ manifestDiff: diff, manifestLock: { path: 'l.json', updated: true } }),
    ).toBe(false);
    expect(manifestLockFailed({ manifestLock: { path: 'l.json', updated: false } })).toBe(false);
    expect(buildOk({ verify: verify(true) })).toBe(true);
    expect(buildOk({})).toBe(true);
    expect(buildOk({ verify: verify(false) })).toBe(false);
    expect(
      buildOk({
        manifestDiff: diff,
        manifestLock: { path: 'l.json', updated: false },
        verify: verify(true),
      }),
    ).toBe(false);
  });

  it("names the lock and the shell's own way to update it, then the verify failures", () => {
    const text = buildFailures(
      {
        manifestDiff: '+ image /bin/new\n',
        manifestLock: { path: 'examples/x/lock.json', updated: false },
        verify: verify(false),
      },
      '--update-manifest',
    );
    expect(text).toBe(
      'the built image differs from the manifest lock examples/x/lock.json:\n+ image /bin/new\n' +
        'if the change is intended, rebuild with --update-manifest and commit the lock\n\n' +
        'verify failed:\nprobe root\n-a\n+b',
    );
    expect(buildFailures({ verify: verify(true) }, '--update-manifest')).toBe('');
  });
});

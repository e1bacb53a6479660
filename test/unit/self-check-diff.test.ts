import { describe, expect, it } from 'vitest';
import { responseDiff, visible } from '../../src/harness/diff.js';

describe('self-check response differences', () => {
  it('equal responses have no difference', () => {
    expect(
      responseDiff(
        'a',
        { body: Buffer.from('iHi\tsel\r\n.\r\n') },
        { body: Buffer.from('iHi\tsel\r\n.\r\n') },
      ),
    ).toBeUndefined();
    expect(
      responseDiff(
        'h',
        { status: 200, body: Buffer.from('x') },
        { status: 200, body: Buffer.from('x') },
      ),
    ).toBeUndefined();
  });

  it('names the first differing byte and shows both sides with control bytes visible', () => {
    const d = responseDiff(
      'menu',
      { body: Buffer.from('1Moon\t/moon\tlocalhost\t70\r\n.\r\n') },
      { body: Buffer.from('3not found\r\n.\r\n') },
    );
    expect(d).toContain(
      "probe 'menu': 29 bytes before pruning, 15 after; first difference at byte 0",
    );
    expect(d).toContain('before: …1Moon\\t/moon\\tlocalhost\\t70\\r\\n.\\r\\n');
    expect(d).toContain('after:  …3not found\\r\\n.\\r\\n');
  });

  it('HTTP: status first, then the body', () => {
    expect(
      responseDiff(
        'i',
        { status: 200, body: Buffer.from('a') },
        { status: 404, body: Buffer.from('a') },
      ),
    ).toBe("probe 'i': HTTP status 200 before pruning, 404 after");
    expect(
      responseDiff(
        'i',
        { status: 200, body: Buffer.from('abc') },
        { status: 200, body: Buffer.from('abd') },
      ),
    ).toMatch(/probe 'i' body: 3 bytes before pruning, 3 after; first difference at byte 2/);
  });

  it('a missing response is a difference', () => {
    expect(responseDiff('x', { body: Buffer.from('a') }, undefined)).toBe(
      "probe 'x': no response after pruning",
    );
  });

  it('visible() spells out CR, LF, TAB and other control bytes', () => {
    expect(visible(Buffer.from([0x41, 0x0d, 0x0a, 0x09, 0x00, 0xff]))).toBe('A\\r\\n\\t\\x00\\xff');
  });
});

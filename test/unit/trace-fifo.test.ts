import { spawn } from 'node:child_process';
import { closeSync, openSync, writeSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TraceFifo } from '../../src/trace/fifo.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-fifo-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it("keeps every writer's lines although each opens with O_TRUNC, as QEMU does after every exec", async () => {
  const fifo = await TraceFifo.create(path.join(dir, 'qemu.log'));
  // fopen(name, "w") = O_WRONLY|O_CREAT|O_TRUNC: on a regular file each would wipe the others.
  writeFileSync(fifo.path, '1 openat(AT_FDCWD,"/a",O_RDONLY) = 3\n', { flag: 'w' });
  const fd = openSync(fifo.path, 'w');
  writeSync(fd, '2 openat(AT_FDCWD,"/b",O_RDONLY)');
  writeFileSync(fifo.path, '3 openat(AT_FDCWD,"/c",O_RDONLY) = 3\n', { flag: 'w' });
  writeSync(fd, ' = 4\n');
  closeSync(fd);
  const text = await fifo.finish();
  expect(text).toBe(
    '1 openat(AT_FDCWD,"/a",O_RDONLY) = 3\n2 openat(AT_FDCWD,"/b",O_RDONLY)3 openat(AT_FDCWD,"/c",O_RDONLY) = 3\n = 4\n',
  );
  // Finishing twice is harmless.
  expect(await fifo.finish()).toBe(text);
});

it('finishes at once when nothing was ever written', async () => {
  const fifo = await TraceFifo.create(path.join(dir, 'empty.log'));
  expect(await fifo.finish()).toBe('');
});

it('cuts the stream between connections: each part is what was written since the previous cut', async () => {
  const fifo = await TraceFifo.create(path.join(dir, 'cut.log'));
  writeFileSync(fifo.path, '3 openat(AT_FDCWD,"/a",O_RDONLY) = 3\n3 exit_group(0)\n', {
    flag: 'w',
  });
  expect(await fifo.cut()).toBe('3 openat(AT_FDCWD,"/a",O_RDONLY) = 3\n3 exit_group(0)\n');
  // Nothing written in between: an empty part.
  expect(await fifo.cut()).toBe('');
  // A part larger than the pipe arrives in several reads (written by another process, waited for
  // without blocking: a synchronous write here would block the loop that reads).
  const big = `5 read(0,0x1,1) = 1\n`.repeat(10_000);
  await new Promise<void>((resolve, reject) => {
    const cat = spawn('sh', ['-c', 'cat > "$1"', 'sh', fifo.path], {
      stdio: ['pipe', 'ignore', 'inherit'],
    });
    cat.on('error', reject);
    cat.on('exit', () => resolve());
    cat.stdin.end(big);
  });
  expect(await fifo.cut()).toBe(big);
  writeFileSync(fifo.path, '7 exit_group(1)\n', { flag: 'w' });
  expect(await fifo.finish()).toBe('7 exit_group(1)\n');
  expect(await fifo.finish()).toBe('7 exit_group(1)\n');
});

it("reading more FIFOs than libuv's pool has threads leaves file operations free", async () => {
  const fifos = await Promise.all(
    Array.from({ length: 8 }, (_, i) => TraceFifo.create(path.join(dir, `many.${i}.log`))),
  );
  // With a blocking read per FIFO on the pool, this would wait until they finish.
  writeFileSync(path.join(dir, 'plain.txt'), 'x');
  expect(await readFile(path.join(dir, 'plain.txt'), 'utf8')).toBe('x');
  expect(await Promise.all(fifos.map((f) => f.finish()))).toEqual(fifos.map(() => ''));
});

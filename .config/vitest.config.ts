import { defineConfig } from 'vitest/config';

// Integration tests drive real QEMU, nspawn and compilers on a 2-core machine:
// run files one at a time so timings and mounts never race each other.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 900_000,
    reporters: ['default'],
  },
});

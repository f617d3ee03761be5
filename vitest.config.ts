import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Each test file spawns onnxruntime workers; two files at a time fit two cores.
    maxWorkers: 2,
  },
});

import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    fileParallelism: false,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['src/**/*.test.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'vm',
          include: ['tests/**/*.test.ts'],
          globalSetup: ['tests/global-setup.ts'],
          // Real VMs under TCG on 2 cores: one test file at a time (root fileParallelism), generous deadlines.
          pool: 'forks',
          testTimeout: 240_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});

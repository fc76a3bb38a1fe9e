import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Suites open real databases and native threads; separate processes keep
    // a crash or a leaked handle in one file from taking down the others.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
})

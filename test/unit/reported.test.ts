import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ReportedProperties } from '../../src/twin/reported.js';

describe('ReportedProperties', () => {
  it('a new sink sends at once: the retry delay after the old sink failed does not hold it back', async () => {
    const reported = new ReportedProperties({
      minIntervalMs: 10,
      retryMs: 60_000,
      logger: pino({ level: 'silent' }),
    });
    let failed!: () => void;
    const failedOnce = new Promise<void>((resolve) => (failed = resolve));
    reported.attach({
      send: () => {
        failed();
        return Promise.reject(new Error('client dropped'));
      },
    });
    reported.set('model', { version: '7' });
    await failedOnce;
    const sent = new Promise<Record<string, unknown>>((resolve) =>
      reported.attach({
        send: (patch) => {
          resolve(patch);
          return Promise.resolve();
        },
      }),
    );
    await expect(sent).resolves.toMatchObject({ model: { version: '7' } });
    await reported.stop();
  });
});

import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, terminalDestination } from '../../src/logger.js';

/** A stream that keeps what is written; `isTTY` as a terminal or a pipe would say. */
function sink(isTTY: boolean): Writable & { isTTY: boolean; text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return Object.assign(w, { isTTY, text: () => chunks.join('') });
}

describe('log destination', () => {
  it('a terminal gets readable lines with the fields, secrets still redacted', async () => {
    const out = sink(true);
    const dest = await terminalDestination(out);
    expect(dest).toBeDefined();
    const logger = createLogger({ logLevel: 'info' }, dest);
    logger.info(
      { component: 'app', console: 'http://127.0.0.1:8080/', apiToken: 'line-secret-1' },
      'edge-scorer listening',
    );
    // eslint-disable-next-line no-control-regex -- the colour codes a terminal gets
    const text = out.text().replace(/\x1b\[[0-9;]*m/g, '');
    expect(text).toMatch(/INFO.*edge-scorer listening/);
    expect(text).toContain('console: "http://127.0.0.1:8080/"');
    expect(text).not.toContain('line-secret-1');
    expect(() => JSON.parse(text.split('\n')[0]!) as unknown).toThrow();
  });

  it('anything else (the container, a pipe) gets JSON lines', async () => {
    expect(await terminalDestination(sink(false))).toBeUndefined();
  });
});

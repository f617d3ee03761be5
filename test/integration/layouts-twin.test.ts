import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { LayoutReport } from '../../src/layouts/store.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { waitFor } from '../helpers/lifecycle.js';

/**
 * Layouts in the twin (README, "Board layouts"): the desired `layouts` block puts a recipe in force
 * on every line, removes what it no longer names, leaves layouts put over HTTP alone, reports a
 * refused layout while the others apply, and survives a restart. Standalone, the desired file plays
 * the twin through the same reconciler.
 */

let dir: string | undefined;
let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const regions = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    id: `R${i + 1}`,
    x: (i % 2) * 16,
    y: Math.floor(i / 2) * 16,
    width: 16,
    height: 16,
  }));

const names = async (d: Daemon): Promise<string[]> =>
  ((await request(`${d.url}/v1/layouts`)).json as { layouts: { name: string }[] }).layouts.map((l) => l.name);

const report = (d: Daemon): LayoutReport | undefined =>
  (d.app.reported.document as { layouts?: LayoutReport }).layouts;

describe('layouts in the twin', () => {
  it('puts the recipe in force, removes what it drops, keeps HTTP layouts, reports a refused one, survives a restart', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'edge-layouts-twin-'));
    const desired = path.join(dir, 'desired.json');
    const dataDir = path.join(dir, 'daemon');
    const env = {
      DESIRED_PROPERTIES_FILE: desired,
      DESIRED_PROPERTIES_POLL_MS: '50',
      REPORTED_MIN_INTERVAL_MS: '0',
    };
    await writeFile(desired, JSON.stringify({ layouts: { 'top-a': { regions: regions(2) } } }));
    daemon = await startDaemon({ dir: dataDir, env });
    let d = daemon;
    await waitFor(async () => ((await names(d)).includes('top-a') ? true : undefined), 'the twin layout');
    const manual = await request(`${d.url}/v1/layouts/manual`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ regions: regions(1) }),
    });
    expect(manual.status, manual.text).toBe(201);
    const board = await encodeFrame(gradientFrame(32, 32), 32, 32, 3, 'png');
    const scored = await postFrame(`${d.url}/v1/score?layout=top-a`, board, 'image/png');
    expect(scored.status, scored.text).toBe(200);
    expect((scored.json as { regions: unknown[] }).regions).toHaveLength(2);

    // A recipe change: top-a goes, top-b comes, and bad-c (a duplicate region id) is refused.
    await writeFile(
      desired,
      JSON.stringify({
        layouts: {
          'top-b': { regions: regions(4) },
          'bad-c': { regions: [...regions(1), ...regions(1)] },
        },
      }),
    );
    await waitFor(async () => (report(d)?.fromTwin.includes('top-b') ? true : undefined), 'the new recipe');
    expect(await names(d)).toEqual(['manual', 'top-b']);
    expect(report(d)).toMatchObject({
      fromTwin: ['top-b'],
      stored: 2,
      lastError: { layout: 'bad-c', code: 'EDGE_ERR_LAYOUT_INVALID' },
    });
    const gone = await postFrame(`${d.url}/v1/score?layout=top-a`, board, 'image/png');
    expect(gone.status).toBe(404);
    expect(gone.json).toMatchObject({ error: { code: 'EDGE_ERR_LAYOUT_NOT_FOUND' } });
    expect((await postFrame(`${d.url}/v1/score?layout=top-b`, board, 'image/png')).status).toBe(200);

    // A layouts block the schema refuses changes nothing and is reported as a rejected document.
    await writeFile(desired, JSON.stringify({ layouts: { 'no/slash': { regions: regions(1) } } }));
    await waitFor(
      () =>
        (d.app.reported.document as { desired?: { status?: string } }).desired?.status === 'rejected'
          ? true
          : undefined,
      'the rejected document',
    );
    expect(await names(d)).toEqual(['manual', 'top-b']);

    // A restart keeps both, and knows which one the twin owns.
    await writeFile(desired, JSON.stringify({ layouts: { 'top-b': { regions: regions(4) } } }));
    await waitFor(
      () =>
        (d.app.reported.document as { desired?: { status?: string } }).desired?.status !== 'rejected'
          ? true
          : undefined,
      'the good document again',
    );
    await daemon.stop();
    daemon = await startDaemon({ dir: dataDir, env });
    d = daemon;
    expect(await names(d)).toEqual(['manual', 'top-b']);
    await writeFile(desired, JSON.stringify({}));
    await waitFor(async () => ((await names(d)).length === 1 ? true : undefined), 'the twin layout removed');
    expect(await names(d)).toEqual(['manual']);
  });
});

/**
 * `npm run docs:screenshots`: the operator console's screenshots in docs/, taken with Debian's
 * chromium against a real daemon (the bundled demo detector, standalone) fed with the demo frames
 * from two cameras (every frame captured, for the review view), then swapped through the desired
 * file to show a model change.
 */
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../test/helpers/browser.js';
import { demoModel } from '../test/helpers/console.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { postFrame } from '../test/helpers/http.js';
import { desiredModel, versionedModel, waitFor } from '../test/helpers/lifecycle.js';
import { startModelServer } from '../test/helpers/model-server.js';

const DOCS = fileURLToPath(new URL('../docs/', import.meta.url));
const demo = await demoModel();
const server = await startModelServer();
const desiredFile = path.join(tmpdir(), `edge-scorer-screens-${process.pid}.json`);
// Capture every frame (kept here, no upload) so the review view has frames waiting for a verdict.
await writeFile(
  desiredFile,
  JSON.stringify({
    capture: {
      enabled: true,
      rules: [{ reason: 'sample', rate: 1 }],
      maxItems: 40,
      upload: { target: 'none' },
    },
  }),
);
const daemon = await startDaemon({
  model: demo.model,
  manifest: demo.manifest,
  env: {
    DESIRED_PROPERTIES_FILE: desiredFile,
    DESIRED_PROPERTIES_POLL_MS: '200',
    MODEL_URL_ALLOWLIST: `${server.origin}/`,
    REPORTED_MIN_INTERVAL_MS: '0',
  },
});
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  await page.goto(`${daemon.url}/#live`);
  await page.getByText('live', { exact: true }).waitFor();
  const feed = async (seconds: number): Promise<void> => {
    const end = Date.now() + seconds * 1000;
    for (let i = 0; Date.now() < end; i++) {
      await postFrame(`${daemon.url}/v1/score`, i % 3 === 0 ? demo.ok : demo.bridge, 'image/jpeg', {
        'x-camera-id': i % 2 === 0 ? 'aoi-top' : 'aoi-bottom',
      });
    }
  };
  await feed(4);
  await page.waitForTimeout(600);
  await page.screenshot({ path: path.join(DOCS, 'console-live.png') });
  await feed(20);
  await page.goto(`${daemon.url}/#health`);
  await page.locator('.cards canvas').first().waitFor();
  await page.waitForTimeout(2500);
  await page.screenshot({ path: path.join(DOCS, 'console-health.png') });
  await page.goto(`${daemon.url}/#review`);
  await page.locator('#review-list li').first().waitFor();
  await page.keyboard.press('o');
  await page.locator('#review-list li.selected').waitFor();
  await page.waitForTimeout(500);
  await page.keyboard.press('b');
  const frame = (await page.locator('#review-frame').boundingBox())!;
  await page.mouse.move(frame.x + frame.width * 0.3, frame.y + frame.height * 0.35);
  await page.mouse.down();
  await page.mouse.move(frame.x + frame.width * 0.55, frame.y + frame.height * 0.6);
  await page.mouse.up();
  await page.screenshot({ path: path.join(DOCS, 'console-review.png') });
  await page.keyboard.press('Escape');
  await writeFile(desiredFile, JSON.stringify({ model: desiredModel(server, versionedModel('7')) }));
  await waitFor(async () => {
    const r = await fetch(`${daemon.url}/v1/console/model`);
    return ((await r.json()) as { model?: { version?: string } }).model?.version === '7' ? true : undefined;
  }, 'the swap');
  await page.goto(`${daemon.url}/#model`);
  await page.locator('#model-history').waitFor();
  await page.screenshot({ path: path.join(DOCS, 'console-model.png'), fullPage: true });
} finally {
  await browser.close();
  await daemon.stop();
  await server.close();
  await rm(desiredFile, { force: true });
}

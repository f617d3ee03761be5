/**
 * Board layout bench (README, "Board layouts"): 200 regions of 300 × 60 on a 2448 × 2048 JPEG,
 * scored through one layout request vs the same 200 crops posted one by one (8 in flight), with
 * the default test classifier. Prints regions/s of each and their ratio, from one run.
 *   npm run bench:layout [-- boards]
 */
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { startDaemon } from '../test/helpers/daemon.js';

const W = 2448;
const H = 2048;
const boards = Number(process.argv[2] ?? 3);

async function main(): Promise<void> {
  const daemon = await startDaemon({ env: { MAX_QUEUE: '512', LOG_LEVEL: 'warn', INTRA_OP_THREADS: '0' } });
  try {
    const raw = Buffer.alloc(W * H * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 2654435761) >>> 24;
    const jpeg = await sharp(raw, { raw: { width: W, height: H, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer();
    const regions = Array.from({ length: 200 }, (_, i) => ({
      id: `r${i}`,
      x: (i % 8) * 300,
      y: Math.floor(i / 8) * 80,
      width: 300,
      height: 60,
    }));
    const put = await fetch(`${daemon.url}/v1/layouts/bench`, {
      method: 'PUT',
      body: JSON.stringify({ regions }),
      headers: { 'content-type': 'application/json' },
    });
    if (put.status !== 201) throw new Error(`PUT layout: ${put.status}`);
    const crops = await Promise.all(
      regions.map((r) =>
        sharp(jpeg)
          .extract({ left: r.x, top: r.y, width: r.width, height: r.height })
          .jpeg({ quality: 90 })
          .toBuffer(),
      ),
    );
    const post = async (url: string, body: Buffer): Promise<void> => {
      const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'image/jpeg' } });
      if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    };
    // Warm both paths once.
    await post(`${daemon.url}/v1/score?layout=bench`, jpeg);
    let t = performance.now();
    for (let b = 0; b < boards; b++) await post(`${daemon.url}/v1/score?layout=bench`, jpeg);
    const layoutRate = (boards * regions.length * 1000) / (performance.now() - t);
    t = performance.now();
    for (let b = 0; b < boards; b++) {
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < crops.length) await post(`${daemon.url}/v1/score`, crops[next++]!);
        }),
      );
    }
    const cropRate = (boards * crops.length * 1000) / (performance.now() - t);
    console.log(
      JSON.stringify(
        {
          boards,
          regionsPerBoard: regions.length,
          layoutRegionsPerSec: Math.round(layoutRate),
          cropsOneByOneRegionsPerSec: Math.round(cropRate),
          ratio: Math.round((layoutRate / cropRate) * 100) / 100,
        },
        null,
        2,
      ),
    );
  } finally {
    await daemon.stop();
  }
}

await main();

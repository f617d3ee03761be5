/**
 * Board layout bench (bench/README.md, "`npm run bench:layout`"): 200 regions of 300 × 60 on a
 * 2448 × 2048 board JPEG scored through one layout request, against the same 200 crops posted one
 * by one (8 in flight), and against the model alone at its best batch (tensors prepared once, no
 * decode, no HTTP): the ceiling of any path with this model here. The bench's 192×48 crop
 * classifier (bench/tiny-model.ts); the daemon runs in its own process with the model alone's
 * best arrangement; the phases alternate in rounds, so every ratio comes from one run.
 * `--widen 4` gives the classifier four times the channels (~13 times the work a region), a model
 * that costs more than the board's decode and cuts, to read the layout path against its ceiling.
 *   npm run bench:layout [-- --rounds 3 --seconds 6 --quick --widen 4]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { prepareFrame, type FrameInput, type InputTensorData } from '../src/scoring/preprocess.js';
import { decodeBoard } from '../src/scoring/regions.js';
import { writeModelDir } from '../test/helpers/onnx-builder.js';
import {
  fmt,
  freePort,
  load,
  loadRuntime,
  makeBoardFrames,
  startDaemonProcess,
  stopProcess,
  type Arrangement,
  type Point,
} from './harness.js';
import { buildTinyClassifier, TINY_MANIFEST } from './tiny-model.js';
import { arrangements, inFlightFor, modelAloneThroughput } from './workloads.js';
import { median } from './ab.js';

const W = 2448;
const H = 2048;
const REGIONS = Array.from({ length: 200 }, (_, i) => ({
  id: `r${i}`,
  x: (i % 8) * 300,
  y: Math.floor(i / 8) * 80,
  width: 300,
  height: 60,
}));

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '6' },
    quick: { type: 'boolean', default: false },
    widen: { type: 'string', default: '1' },
  },
});
const rounds = Number(args.rounds);
const seconds = Number(args.seconds);
const widen = Number(args.widen);

const round2 = (x: number): number => Math.round(x * 100) / 100;

async function main(): Promise<void> {
  const load1 = os.loadavg()[0]!;
  if (load1 > 0.5) console.log(`warning: load average ${load1.toFixed(2)}; figures will be noisy`);
  const work = await mkdtemp(path.join(os.tmpdir(), 'bench-layout-'));
  let daemon;
  try {
    const model = await writeModelDir(
      path.join(work, 'tiny'),
      buildTinyClassifier({ batch: 'dynamic', widen }),
      TINY_MANIFEST,
    );
    const [board] = await makeBoardFrames(1, W, H, 'jpeg');
    const crops: FrameInput[] = await Promise.all(
      REGIONS.map(async (r) => ({
        body: await sharp(board)
          .extract({ left: r.x, top: r.y, width: r.width, height: r.height })
          .jpeg({ quality: 90 })
          .toBuffer(),
        mediaType: 'image/jpeg' as const,
      })),
    );
    console.log(
      `board ${W}×${H} JPEG ${Math.round(board!.length / 1024)} KiB, ${REGIONS.length} regions of 300×60; ` +
        `crops ~${Math.round(crops[0]!.body.length / 1024)} KiB JPEG; model: 192×48 crop classifier, channels ×${widen}`,
    );

    // The board's decode in this process: the part of a layout request no batching can share.
    const decodes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await decodeBoard({ body: board!, mediaType: 'image/jpeg' }, { maxPixels: 1e8 });
      decodes.push(performance.now() - t);
    }
    const decodeMs = median(decodes.slice(1));
    console.log(`board decode (sharp, whole board to RGB): ${decodeMs.toFixed(1)} ms`);

    // The model alone, at its best arrangement.
    const spec = { ...TINY_MANIFEST.input, padValue: 114 } as Parameters<typeof prepareFrame>[1];
    const tensor: InputTensorData = (await prepareFrame(crops[0]!, spec, { maxPixels: 1e8 })).data;
    let best: { a: Arrangement; point: Point } | undefined;
    for (const a of arrangements(args.quick)) {
      const runtime = await loadRuntime(model.modelPath, a);
      const point = await modelAloneThroughput(runtime, tensor, inFlightFor(a), seconds / 3);
      await runtime.close();
      console.log(`model alone workers=${a.workers} batch≤${a.maxBatchSize}: ${fmt(point)}`);
      if (!best || point.framesPerSec > best.point.framesPerSec) best = { a, point };
    }
    const a = best!.a;

    const port = await freePort();
    daemon = await startDaemonProcess(model.modelPath, a, port, path.join(work, 'data'));
    const base = `http://127.0.0.1:${port}`;
    const put = await fetch(`${base}/v1/layouts/bench`, {
      method: 'PUT',
      body: JSON.stringify({ regions: REGIONS }),
      headers: { 'content-type': 'application/json' },
    });
    if (put.status !== 201) throw new Error(`PUT layout: ${put.status} ${await put.text()}`);
    const check = await fetch(`${base}/v1/score?layout=bench`, {
      method: 'POST',
      body: board,
      headers: { 'content-type': 'image/jpeg' },
    });
    const answer = (await check.json()) as { regions?: unknown[] };
    if (check.status !== 200 || answer.regions?.length !== REGIONS.length)
      throw new Error(`layout request: ${check.status} ${JSON.stringify(answer).slice(0, 200)}`);

    const boardFrame: FrameInput[] = [{ body: board!, mediaType: 'image/jpeg' }];
    const phases = {
      'layout, 1 board in flight': () =>
        load(`${base}/v1/score?layout=bench`, boardFrame, { connections: 1, seconds }),
      'layout, 2 boards in flight': () =>
        load(`${base}/v1/score?layout=bench`, boardFrame, { connections: 2, seconds }),
      'crops one by one, 8 in flight': () => load(`${base}/v1/score`, crops, { connections: 8, seconds }),
    };
    type Phase = keyof typeof phases;
    const names = Object.keys(phases) as Phase[];
    const rates: Record<Phase, number[]> = Object.fromEntries(names.map((n) => [n, []])) as never;
    for (let r = 0; r < rounds; r++) {
      // Alternate the order between rounds, so no phase always follows another.
      for (const name of r % 2 ? [...names].reverse() : names) {
        const point = await phases[name]();
        if (point.errors) throw new Error(`${name}: ${point.errors} failed requests`);
        const perSec = name.startsWith('layout') ? point.framesPerSec * REGIONS.length : point.framesPerSec;
        rates[name].push(perSec);
        console.log(`round ${r + 1} ${name}: ${perSec.toFixed(0)} regions/s (${fmt(point)})`);
      }
    }
    const modelAlone = best!.point.framesPerSec;
    const crop = rates['crops one by one, 8 in flight'];
    const summary = {
      date: new Date().toISOString(),
      command: `npm run bench:layout -- --rounds ${rounds} --seconds ${seconds}${args.quick ? ' --quick' : ''}${widen !== 1 ? ` --widen ${widen}` : ''}`,
      widen,
      loadAverageAtStart: round2(load1),
      loadAverageAtEnd: round2(os.loadavg()[0]!),
      arrangement: a,
      boardJpegKiB: Math.round(board!.length / 1024),
      boardDecodeMs: round2(decodeMs),
      modelAloneRegionsPerSec: Math.round(modelAlone),
      phases: Object.fromEntries(
        names.map((n) => [
          n,
          {
            regionsPerSec: Math.round(median(rates[n])),
            rounds: rates[n].map(Math.round),
            // Each round's ratio to the crops of the same round, then the median of those.
            vsCropsOneByOne: n.startsWith('crops') ? 1 : round2(median(rates[n].map((x, i) => x / crop[i]!))),
            shareOfModelAlone: round2(median(rates[n]) / modelAlone),
          },
        ]),
      ),
    };
    console.log(JSON.stringify(summary, null, 2));
    await writeFile(
      path.join(
        import.meta.dirname,
        'results',
        widen === 1 ? 'layout-latest.json' : `layout-widen${widen}-latest.json`,
      ),
      JSON.stringify(summary, null, 2) + '\n',
    );
  } finally {
    if (daemon) await stopProcess(daemon);
    await rm(work, { recursive: true, force: true });
  }
}

await main();

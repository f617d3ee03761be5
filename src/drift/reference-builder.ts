import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../config.js';
import { EdgeError, ErrorCodes } from '../errors.js';
import { ScoringEngine, type ScoredFrame } from '../scoring/engine.js';
import type { PartialManifest } from '../scoring/manifest.js';
import type { AcceptedMediaType } from '../scoring/preprocess.js';
import type { ReferenceProfile } from '../scoring/reference.js';
import { Metrics } from '../telemetry/metrics.js';
import { referenceProfile, type FrameSample } from './profile.js';
import { sampleOf } from './sample.js';

const MEDIA_TYPES: Record<string, AcceptedMediaType> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.bmp': 'image/bmp',
};

/** Fewer frames than this make a reference whose own noise hides drift (docs/drift.md). */
export const MIN_REFERENCE_FRAMES = 20;

/** The image files of a folder (not recursive), by name. */
export async function referenceFrames(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => path.extname(n).toLowerCase() in MEDIA_TYPES).sort();
  return names.map((n) => path.join(dir, n));
}

/**
 * The reference profile of a model over a folder of frames, computed the way the daemon will
 * measure the line: each frame is scored by the daemon's own engine (same pre-processing, session
 * and decoder, on the CPU) and measured by the same sampler the drift monitor uses.
 */
export async function computeReference(
  modelPath: string,
  dir: string,
  manifest: PartialManifest = {},
): Promise<ReferenceProfile> {
  const files = await referenceFrames(dir);
  if (files.length < MIN_REFERENCE_FRAMES) {
    throw new EdgeError(
      ErrorCodes.BAD_REQUEST,
      `${dir} holds ${files.length} frames; a reference needs at least ${MIN_REFERENCE_FRAMES} (a few hundred make a sharp one)`,
    );
  }
  const dataDir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-reference-'));
  const config = loadConfig({
    MODEL_PATH: modelPath,
    DATA_DIR: dataDir,
    EXECUTION_PROVIDERS: 'cpu',
    LOG_LEVEL: 'silent',
  });
  const engine = new ScoringEngine(config, pino({ level: 'silent' }), new Metrics({ defaultMetrics: false }));
  const measured: Promise<FrameSample>[] = [];
  const failures: string[] = [];
  try {
    await engine.activate({ modelPath, manifest });
    const scored = new Map<string, ScoredFrame>();
    const unsubscribe = engine.frames.subscribe('reference', (f) => void scored.set(f.frameId, f), {
      maxPending: files.length + 1,
      maxPendingBytes: Number.MAX_SAFE_INTEGER,
    });
    for (const file of files) {
      const mediaType = MEDIA_TYPES[path.extname(file).toLowerCase()]!;
      try {
        await engine.score({ body: await readFile(file), mediaType }, { frameId: file, cameraId: null });
      } catch (err) {
        failures.push(`${path.basename(file)}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    await engine.frames.idle();
    unsubscribe();
    for (const file of files) {
      const f = scored.get(file);
      if (f) measured.push(sampleOf(f));
    }
    const samples = await Promise.all(measured);
    if (failures.length > 0) {
      throw new EdgeError(
        ErrorCodes.BAD_REQUEST,
        `${failures.length} reference frame(s) could not be scored: ${failures.slice(0, 3).join('; ')}`,
      );
    }
    return referenceProfile(samples);
  } finally {
    await engine.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

import { createHash } from 'node:crypto';
import { buildClassifier } from './onnx-builder.js';
import type { ModelServer } from './model-server.js';

/** A small classifier whose bytes (and so sha256) differ per version, with its manifest. */
export interface VersionedModel {
  version: string;
  bytes: Uint8Array;
  sha256: string;
  manifest: Record<string, unknown>;
}

export const LABELS = ['ok', 'bridge', 'missing'];

/** The test classifier: 3 classes, logits out, a dynamic batch, `width`² RGB in (32 by default). */
export function testClassifier(width = 32, metadata?: Record<string, string>): Uint8Array {
  return buildClassifier({
    batch: 'dynamic',
    channels: 3,
    height: width,
    width,
    classes: 3,
    output: 'logits',
    ...(metadata ? { metadata } : {}),
  });
}

/** `padBytes` adds that much metadata, to make a model big enough to stall a download in. */
export function versionedModel(
  version: string,
  over: { width?: number; padBytes?: number } = {},
): VersionedModel {
  const width = over.width ?? 32;
  const bytes = testClassifier(width, {
    version,
    ...(over.padBytes ? { padding: 'p'.repeat(over.padBytes) } : {}),
  });
  return {
    version,
    bytes,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    manifest: {
      name: 'line-classifier',
      version,
      task: 'classification',
      labels: LABELS,
      defectLabels: ['bridge', 'missing'],
      input: { width, height: width, resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
      output: { format: 'logits', topK: 3 },
    },
  };
}

/** Serves the model on `server` and returns the desired `model` block that names it. */
export function desiredModel(
  server: ModelServer,
  m: VersionedModel,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  const file = `/models/${m.version}-${m.sha256.slice(0, 8)}.onnx`;
  server.serve(file, m.bytes);
  return { ...m.manifest, url: server.url(file), sha256: m.sha256, sizeBytes: m.bytes.length, ...over };
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  what: string,
  timeoutMs = 15_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: Error | undefined;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err instanceof Error ? err : new Error(String(err));
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

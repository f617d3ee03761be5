import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';

/** The daemon's identity for the reported `daemon` section and logs. */
export function daemonInfo(startedAt: Date): {
  version: string;
  node: string;
  onnxruntime: string;
  startedAt: string;
} {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return {
    version: pkg.version,
    node: process.version,
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    startedAt: startedAt.toISOString(),
  };
}

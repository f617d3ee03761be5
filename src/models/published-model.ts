import type { PartialManifest } from '../scoring/manifest.js';

/**
 * A model as the ML team publishes it in the desired properties: the manifest plus where to get
 * the file and its identity (README, "Model lifecycle").
 */
export interface DesiredModel extends PartialManifest {
  url: string;
  sha256: string;
  sizeBytes?: number;
}

/** The manifest part of a desired model block (what model.json would hold). */
export function manifestOf(model: DesiredModel): PartialManifest {
  const { url: _url, sha256: _sha, sizeBytes: _size, ...manifest } = model;
  return manifest;
}

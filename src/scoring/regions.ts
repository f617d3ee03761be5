import { performance } from 'node:perf_hooks';
import sharp, { type Sharp } from 'sharp';
import { EdgeError, ErrorCodes } from '../errors.js';
import { geometryFor, type FrameGeometry } from './geometry.js';
import type { InputSpec } from './manifest.js';
import { decodeRaw } from './pixel-formats/index.js';
import type { FrameInput, PreparedFrame, PreprocessLimits } from './preprocess.js';
import { inMemory, regionTensor, tensorize, type BoardRaster, type InputTensorData } from './tensor.js';

/**
 * Board regions: one decode of the whole board, then each region cut out of those pixels (upright
 * when rotated), resized by the model's resize rule and turned into the tensor `prepareFrame` would
 * build for the crop posted alone (docs/architecture.md, "The path of a frame").
 */

/** A region of a board, in board pixels. `angle` (degrees, clockwise) turns the part on the board. */
export interface Region {
  id: string;
  x: number;
  y: number;
  width: number;
  height: number;
  angle?: number;
  ref?: string;
  type?: string;
}

/** The decoded board: 8-bit interleaved pixels. */
export interface BoardPixels extends BoardRaster {
  data: Buffer;
  decodeMs: number;
}

/** A region's tensor, its geometry (model input ↔ upright crop) and how the crop sits on the board. */
export interface PreparedRegion extends PreparedFrame {
  region: Region;
  /** The crop's placement: centre on the board and the angle it was cut at. */
  placement: { cx: number; cy: number; angle: number };
}

/** Decodes a board once (any accepted frame type) to raw pixels, alpha dropped. */
export async function decodeBoard(frame: FrameInput, limits: PreprocessLimits): Promise<BoardPixels> {
  const started = performance.now();
  if (frame.mediaType === 'application/octet-stream') {
    const raw = frame.raw;
    if (!raw) throw new EdgeError(ErrorCodes.RAW_HEADERS_INVALID, 'raw frames need X-Frame-* headers');
    if (raw.width * raw.height > limits.maxPixels) {
      throw new EdgeError(ErrorCodes.FRAME_TOO_LARGE, `frame is over ${limits.maxPixels} pixels`);
    }
    const px = decodeRaw(frame.body, raw);
    return {
      data: px.data,
      width: raw.width,
      height: raw.height,
      channels: px.channels,
      order: px.order,
      decodeMs: performance.now() - started,
    };
  }
  try {
    const meta = await sharp(frame.body, { limitInputPixels: false }).metadata();
    if (!['jpeg', 'png', 'webp', 'tiff'].includes(meta.format)) {
      throw new EdgeError(
        ErrorCodes.UNSUPPORTED_MEDIA_TYPE,
        `frame content is ${meta.format}, which is not accepted for a board`,
      );
    }
    if ((meta.width ?? 0) * (meta.height ?? 0) > limits.maxPixels) {
      throw new EdgeError(ErrorCodes.FRAME_TOO_LARGE, `frame is over ${limits.maxPixels} pixels`);
    }
    const image: Sharp = sharp(frame.body, { failOn: 'warning', limitInputPixels: limits.maxPixels });
    const { data, info } = await image
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    return {
      data,
      width: info.width,
      height: info.height,
      channels: info.channels as 1 | 3,
      order: 'rgb',
      decodeMs: performance.now() - started,
    };
  } catch (err) {
    if (err instanceof EdgeError) throw err;
    throw new EdgeError(ErrorCodes.FRAME_UNDECODABLE, `the body is not a decodable ${frame.mediaType} frame`);
  }
}

const rad = (deg: number): number => (deg * Math.PI) / 180;

/** The axis-aligned box, in board pixels, that a region covers once turned by its angle. */
export function regionBounds(r: Region): { left: number; top: number; right: number; bottom: number } {
  const angle = r.angle ?? 0;
  const cx = r.x + r.width / 2;
  const cy = r.y + r.height / 2;
  const c = Math.abs(Math.cos(rad(angle)));
  const s = Math.abs(Math.sin(rad(angle)));
  const hw = (r.width * c + r.height * s) / 2;
  const hh = (r.width * s + r.height * c) / 2;
  // Round away float noise (cos 90° is 6e-17) before deciding what lies inside the frame.
  const snap = (v: number): number => Math.round(v * 1e6) / 1e6;
  return { left: snap(cx - hw), top: snap(cy - hh), right: snap(cx + hw), bottom: snap(cy + hh) };
}

/** Throws REGION_OUT_OF_FRAME unless every region (turned by its angle) lies inside the board. */
export function checkRegions(regions: readonly Region[], width: number, height: number): void {
  for (const r of regions) {
    const b = regionBounds(r);
    if (b.left < 0 || b.top < 0 || b.right > width || b.bottom > height) {
      throw new EdgeError(
        ErrorCodes.REGION_OUT_OF_FRAME,
        `region ${r.id} reaches outside the ${width}x${height} frame`,
        { region: r.id, width, height },
      );
    }
  }
}

/** A region's pixels copied out of the board, packed, for a sharp pipeline. */
function copyOf(board: BoardRaster, left: number, top: number, width: number, height: number): Buffer {
  const stride = board.width * board.channels;
  const rowBytes = width * board.channels;
  const out = Buffer.allocUnsafe(rowBytes * height);
  for (let y = 0; y < height; y++) {
    const from = (top + y) * stride + left * board.channels;
    out.set(board.data.subarray(from, from + rowBytes), y * rowBytes);
  }
  return out;
}

/** How a region's upright crop maps to the model input (its detections' frame). */
export function regionGeometry(region: Region, spec: InputSpec): FrameGeometry {
  const g = geometryFor(spec.resize, region.width, region.height, spec.width, spec.height);
  const { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY } = g;
  return { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY };
}

/**
 * A region's tensor as a prepared frame: its geometry (model input ↔ upright crop) and where the
 * crop sits on the board.
 */
export function preparedRegion(
  region: Region,
  spec: InputSpec,
  data: InputTensorData,
  preprocessMs: number,
): PreparedRegion {
  const geometry = regionGeometry(region, spec);
  const placement = {
    cx: region.x + region.width / 2,
    cy: region.y + region.height / 2,
    angle: region.angle ?? 0,
  };
  return { data, geometry, preprocessMs, region, placement };
}

/** Whether a region is cut in place by `regionTensor` (upright and small) rather than by sharp. */
export const cutInPlace = (region: Region): boolean =>
  (region.angle ?? 0) % 360 === 0 && inMemory(region.width, region.height);

/**
 * Cuts one region upright and builds its tensor, exactly as prepareFrame would for the crop posted
 * alone: an upright region small enough for the in-memory path is resampled in place from the
 * board's pixels by the code a small frame goes through (no pipeline, no copy); a turned or large
 * one goes through sharp.
 */
export async function prepareRegion(
  board: BoardPixels,
  region: Region,
  spec: InputSpec,
): Promise<PreparedRegion> {
  const started = performance.now();
  const done = (data: InputTensorData): PreparedRegion =>
    preparedRegion(region, spec, data, performance.now() - started);
  const angle = region.angle ?? 0;
  const g = geometryFor(spec.resize, region.width, region.height, spec.width, spec.height);
  const channels = board.channels;
  let crop: Buffer;
  if (angle % 360 === 0) {
    const small = regionTensor(board, region, spec);
    if (small) return done(small);
    crop = copyOf(board, region.x, region.y, region.width, region.height);
  } else {
    // Cut the bounding box, turn it back by the angle, and take the part's rectangle from its middle.
    const b = regionBounds(region);
    const left = Math.floor(b.left);
    const top = Math.floor(b.top);
    const bw = Math.ceil(b.right) - left;
    const bh = Math.ceil(b.bottom) - top;
    const box = copyOf(board, left, top, bw, bh);
    const turned = await sharp(box, { raw: { width: bw, height: bh, channels } })
      .rotate(-angle, { background: { r: 0, g: 0, b: 0, alpha: 1 } })
      .raw()
      .toBuffer({ resolveWithObject: true });
    // The region's centre, relative to the turned canvas's centre, stays put under rotation about it.
    const cx = region.x + region.width / 2 - (left + bw / 2);
    const cy = region.y + region.height / 2 - (top + bh / 2);
    const t = rad(-angle);
    const ux = cx * Math.cos(t) - cy * Math.sin(t) + turned.info.width / 2;
    const uy = cx * Math.sin(t) + cy * Math.cos(t) + turned.info.height / 2;
    const upright = {
      x: Math.max(0, Math.min(turned.info.width - region.width, Math.round(ux - region.width / 2))),
      y: Math.max(0, Math.min(turned.info.height - region.height, Math.round(uy - region.height / 2))),
      width: region.width,
      height: region.height,
    };
    const canvas = { ...board, data: turned.data, width: turned.info.width, height: turned.info.height };
    const small = regionTensor(canvas, upright, spec);
    if (small) return done(small);
    crop = copyOf(canvas, upright.x, upright.y, region.width, region.height);
  }
  let image = sharp(crop, {
    raw: { width: region.width, height: region.height, channels },
  }).resize(g.resizeWidth, g.resizeHeight, { fit: 'fill' });
  if (spec.resize === 'letterbox' && (g.padLeft || g.padTop || g.padRight || g.padBottom)) {
    const v = spec.padValue;
    image = image.extend({
      top: g.padTop,
      bottom: g.padBottom,
      left: g.padLeft,
      right: g.padRight,
      background: { r: v, g: v, b: v, alpha: 1 },
    });
  } else if (
    spec.resize === 'center-crop' &&
    (g.resizeWidth !== spec.width || g.resizeHeight !== spec.height)
  ) {
    image = image.extract({ left: g.cropLeft, top: g.cropTop, width: spec.width, height: spec.height });
  }
  const { data, info } = await image.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  return done(tensorize(data, info.channels, board.order, spec));
}

/**
 * A box in upright-crop pixels as board pixels: shifted by the region's place and, for a turned
 * region, the axis-aligned box around the turned corners.
 */
export function boxOnBoard(
  box: { x: number; y: number; width: number; height: number },
  region: Region,
): { x: number; y: number; width: number; height: number } {
  const angle = region.angle ?? 0;
  if (angle % 360 === 0)
    return { x: box.x + region.x, y: box.y + region.y, width: box.width, height: box.height };
  const t = rad(angle);
  const cx = region.x + region.width / 2;
  const cy = region.y + region.height / 2;
  const xs: number[] = [];
  const ys: number[] = [];
  for (const [px, py] of [
    [box.x, box.y],
    [box.x + box.width, box.y],
    [box.x, box.y + box.height],
    [box.x + box.width, box.y + box.height],
  ] as const) {
    const dx = px - region.width / 2;
    const dy = py - region.height / 2;
    xs.push(cx + dx * Math.cos(t) - dy * Math.sin(t));
    ys.push(cy + dx * Math.sin(t) + dy * Math.cos(t));
  }
  const x = Math.min(...xs);
  const y = Math.min(...ys);
  return { x, y, width: Math.max(...xs) - x, height: Math.max(...ys) - y };
}

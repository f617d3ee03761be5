import { geometryFor } from './geometry.js';
import type { InputSpec } from './manifest.js';
import { channelsOf } from './manifest.js';
import { SMALL_PNG_MAX_PIXELS } from './png-small.js';
import { kernelArena } from './kernels.js';
import { resampleInArena, type PixelSource, type Placement } from './resample.js';

/**
 * Pixels in memory → the model's tensor: the resize of small frames and board regions and the
 * conversion to the model's layout and dtype. No libvips here, so inference workers load it too
 * (they cut a board's regions beside the event loop; docs/architecture.md, "The path of a frame").
 */

export type InputTensorData = Float32Array | Uint8Array;

/**
 * Frames whose pixels are already in memory (raw, BMP, small PNG) are resized in JavaScript up to
 * this many pixels: below it a libvips pipeline's set-up (~1.5 ms) costs more than the pixels.
 * Larger ones go to sharp, which runs on the libuv pool, off the event loop.
 */
const IN_MEMORY_MAX_PIXELS = SMALL_PNG_MAX_PIXELS;
export const inMemory = (width: number, height: number): boolean => width * height <= IN_MEMORY_MAX_PIXELS;

/**
 * The tensor of a frame small enough to resize here rather than in sharp (the same kernels, see
 * bench/README.md, "Decoding"); undefined for a larger one. Board regions use it too, so a region
 * gives exactly the tensor its crop would when posted alone.
 */
export function smallFrameTensor(
  pixels: PixelSource,
  g: Placement,
  order: 'rgb' | 'bgr',
  spec: InputSpec,
  into?: TensorSlot,
): InputTensorData | undefined {
  if (!inMemory(pixels.width, pixels.height)) return undefined;
  const { at, channels } = resampleInArena(pixels, g, spec.width, spec.height, spec.padValue);
  const n = spec.width * spec.height * channels;
  return tensorize(
    kernelArena()
      .bytes()
      .subarray(at, at + n),
    channels,
    order,
    spec,
    into,
  );
}

/**
 * Where a tensor is written instead of an array of its own: frame `index` of a batch tensor, so
 * a batch of regions is cut straight into the tensor the model runs on.
 */
export interface TensorSlot {
  batch: InputTensorData;
  index: number;
}

/**
 * For each output channel of a tensor: the source byte it reads within a pixel (-1: BT.601 luma of
 * a colour pixel) and its affine, p · mul + add.
 */
function channelPlan(
  srcChannels: number,
  srcOrder: 'rgb' | 'bgr',
  spec: InputSpec,
): { srcIndex: number[]; mul: number[]; add: number[] } {
  const outC = channelsOf(spec);
  const float = spec.dtype === 'float32';
  const srcIndex: number[] = [];
  const mul: number[] = [];
  const add: number[] = [];
  for (let c = 0; c < outC; c++) {
    const wantRgbIndex = spec.color === 'bgr' ? 2 - c : c;
    if (outC === 1) srcIndex.push(srcChannels === 1 ? 0 : -1);
    else if (srcChannels === 1) srcIndex.push(0);
    else srcIndex.push(srcOrder === 'bgr' ? 2 - wantRgbIndex : wantRgbIndex);
    const mean = spec.mean.length === 1 ? spec.mean[0]! : spec.mean[c]!;
    const std = spec.std.length === 1 ? spec.std[0]! : spec.std[c]!;
    mul.push(float ? spec.scale / std : 1);
    add.push(float ? -mean / std : 0);
  }
  return { srcIndex, mul, add };
}

/** A decoded board (8-bit interleaved pixels) as the region cutters read it. */
export interface BoardRaster {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3;
  order: 'rgb' | 'bgr';
}

/** An upright rectangle of a board, in board pixels. */
export interface UprightRegion {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * An upright region's tensor, read in place from the board's pixels: the tensor its crop gives
 * when posted alone. Undefined for a region too large for the in-memory path (sharp cuts those).
 */
export function regionTensor(
  board: BoardRaster,
  r: UprightRegion,
  spec: InputSpec,
  into?: TensorSlot,
): InputTensorData | undefined {
  const g = geometryFor(spec.resize, r.width, r.height, spec.width, spec.height);
  const stride = board.width * board.channels;
  const window: PixelSource = {
    data: board.data,
    width: r.width,
    height: r.height,
    channels: board.channels,
    offset: r.y * stride + r.x * board.channels,
    stride,
  };
  return smallFrameTensor(window, g, board.order, spec, into);
}

/**
 * HWC uint8 pixels (1 or 3 channels, or 2/4 with alpha removed upstream) → the model's tensor.
 * Grey from colour uses ITU-R BT.601 luma (as OpenCV's cvtColor does); colour from grey repeats the
 * channel. float32: (p * scale - mean[c]) / std[c]; uint8: p unchanged.
 */
export function tensorize(
  pixels: Uint8Array,
  srcChannels: number,
  srcOrder: 'rgb' | 'bgr',
  spec: InputSpec,
  into?: TensorSlot,
): InputTensorData {
  const plane = spec.width * spec.height;
  const { srcIndex, mul, add } = channelPlan(srcChannels, srcOrder, spec);
  const outC = srcIndex.length;
  const size = plane * outC;
  const nhwc = spec.layout === 'nhwc';
  if (spec.dtype === 'float32' && srcIndex.every((s) => s >= 0)) {
    // The common case (float, no luma) is written by the WebAssembly kernel, bit for bit what
    // `p * m + a` stored into a Float32Array gives: beside the pixels when they are the kernels'
    // own (a small frame just resampled), else after copying them in.
    const arena = kernelArena();
    let at = pixels.byteOffset;
    if (pixels.buffer !== arena.k.memory.buffer) {
      arena.reset();
      at = arena.alloc(pixels.length);
      arena.bytes().set(pixels, at);
    }
    const dst = arena.alloc(size * 4);
    srcIndex.forEach((s, c) => {
      const to = dst + 4 * (nhwc ? c : c * plane);
      arena.k.channelF32(at, s, srcChannels, plane, mul[c]!, add[c]!, to, nhwc ? outC : 1);
    });
    const written = new Float32Array(arena.k.memory.buffer, dst, size);
    if (!into) return written.slice();
    into.batch.set(written, into.index * size);
    return into.batch.subarray(into.index * size, (into.index + 1) * size);
  }
  const out = into
    ? into.batch.subarray(into.index * size, (into.index + 1) * size)
    : spec.dtype === 'float32'
      ? new Float32Array(size)
      : new Uint8Array(size);
  const rIdx = srcOrder === 'bgr' ? 2 : 0;
  const bIdx = 2 - rIdx;
  for (let c = 0; c < outC; c++) {
    const s = srcIndex[c]!;
    const m = mul[c]!;
    const a = add[c]!;
    const step = nhwc ? outC : 1;
    for (let i = 0, p = 0, o = nhwc ? c : c * plane; i < plane; i++, p += srcChannels, o += step) {
      const v =
        s >= 0
          ? pixels[p + s]!
          : Math.round(0.299 * pixels[p + rIdx]! + 0.587 * pixels[p + 1]! + 0.114 * pixels[p + bIdx]!);
      out[o] = v * m + a;
    }
  }
  return out;
}

export function blankFrame(spec: InputSpec): InputTensorData {
  const size = spec.width * spec.height * channelsOf(spec);
  return spec.dtype === 'float32' ? new Float32Array(size) : new Uint8Array(size);
}

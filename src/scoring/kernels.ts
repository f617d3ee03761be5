import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The pixel loops in WebAssembly (wasm/kernels.ts, built by `npm run build:wasm`): loaded once per
 * thread on first use, with a bump allocator over their memory. Resampling and tensor writing are
 * synchronous, so one frame's buffers are all that ever live there.
 */

export interface Kernels {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  horizontal3(
    src: number,
    srcStride: number,
    rows: number,
    pixelBytes: number,
    span: number,
    starts: number,
    pairs: number,
    x0: number,
    cols: number,
    dst: number,
    dstStride: number,
  ): void;
  horizontal1(
    src: number,
    srcStride: number,
    rows: number,
    taps: number,
    index: number,
    weights: number,
    x0: number,
    cols: number,
    dst: number,
    dstStride: number,
  ): void;
  vertical(
    tmp: number,
    rowBytes: number,
    taps: number,
    index: number,
    weights: number,
    y0: number,
    rows: number,
    dst: number,
  ): void;
  channelF32(
    src: number,
    first: number,
    srcStep: number,
    count: number,
    m: number,
    a: number,
    dst: number,
    dstStep: number,
  ): void;
}

/** The two members of the WebAssembly JS API used here (its types live in lib.dom, not loaded). */
const Wasm = (
  globalThis as unknown as {
    WebAssembly: {
      Module: new (bytes: Uint8Array) => object;
      Instance: new (module: object) => { exports: unknown };
    };
  }
).WebAssembly;

/** Both src/ (tests) and dist/ (the daemon) sit one level below the package root. */
const WASM_FILE = new URL('../../dist/wasm/kernels.wasm', import.meta.url);

function loadKernels(): Kernels {
  let bytes: Buffer;
  try {
    bytes = readFileSync(WASM_FILE);
  } catch {
    throw new Error(`${fileURLToPath(WASM_FILE)} is missing: run npm run build`);
  }
  // Under a kilobyte: compiled and instantiated synchronously, once per thread, on first use.
  return new Wasm.Instance(new Wasm.Module(bytes)).exports as Kernels;
}

/**
 * A bump allocator over the module's memory, reset for every frame: resampling is synchronous, so
 * one frame's buffers are all that ever live there. Each block is 16-byte aligned with 16 bytes of
 * room after it (the passes read and write up to a SIMD step past their rows).
 */
export class Arena {
  private top = 0;
  constructor(readonly k: Kernels) {}
  reset(): void {
    this.top = 1024;
  }
  alloc(bytes: number): number {
    const at = this.top;
    this.top += (bytes + 31) & ~15;
    const have = this.k.memory.buffer.byteLength;
    if (this.top > have) this.k.memory.grow(Math.ceil((this.top - have) / 65536));
    return at;
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.k.memory.buffer);
  }
  /** Copies two Int32Arrays in; returns where they are. */
  plan(index: Int32Array, weights: Int32Array): { index: number; weights: number } {
    const at = [index, weights].map((a) => {
      const to = this.alloc(a.byteLength);
      this.bytes().set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), to);
      return to;
    });
    return { index: at[0]!, weights: at[1]! };
  }
}

let arena: Arena | undefined;

/** This thread's kernels and their memory. */
export function kernelArena(): Arena {
  arena ??= new Arena(loadKernels());
  return arena;
}

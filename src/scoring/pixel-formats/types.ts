/**
 * A raw camera pixel format (GenICam PFNC names; byte layouts in the README, "Raw pixel
 * formats"). Each variant is one file in this folder and one line in `index.ts`.
 */
export interface PixelFormat {
  /** The value of `X-Frame-Format`. */
  readonly name: string;
  /** Significant bits a sender may declare in `X-Frame-Bits`; the first is the default. */
  readonly bits: readonly number[];
  /** Widths must be even (formats that share chroma between two pixels). */
  readonly evenWidth?: boolean;
  /** Bytes of a width × height frame. */
  byteLength(width: number, height: number): number;
  /** The frame as 8-bit interleaved pixels (1 or 3 channels), the only depth preprocessing uses. */
  decode(body: Uint8Array, width: number, height: number, bits: number): DecodedPixels;
}

export interface DecodedPixels {
  data: Buffer;
  channels: 1 | 3;
  /** Channel order of 3-channel data. */
  order: 'rgb' | 'bgr';
}

import * as bmpTs from 'bmp-ts';
import { EdgeError, ErrorCodes } from '../errors.js';

/** Pixels of a BMP, ready to hand to sharp as raw input. */
export interface BmpPixels {
  width: number;
  height: number;
  /** 4 means a fourth, ignored byte per pixel (BGRX); callers drop it before any resize. */
  channels: 1 | 3 | 4;
  order: 'rgb' | 'bgr';
  /** Rows are stored bottom-up (the BMP default): the image must be flipped. */
  bottomUp: boolean;
  data: Buffer;
}

const undecodable = (why: string): EdgeError =>
  new EdgeError(ErrorCodes.FRAME_UNDECODABLE, `BMP frame is undecodable: ${why}`);

/**
 * Reads a BMP without decoding it in JavaScript where the layout allows: uncompressed 24-bit and
 * 32-bit pixels (the formats AOI cameras write) and 8-bit palettes are sliced or copied row by row,
 * which costs a fraction of a pixel-by-pixel decode on the event loop (a 1280×1024 decode with
 * bmp-ts takes about 60 ms). Rarer variants (RLE, 1/4/16-bit) fall back to bmp-ts.
 * Checks the pixel count against `maxPixels` from the header, before touching pixel data.
 */
export function readBmp(buf: Buffer, maxPixels: number): BmpPixels {
  try {
    return parseBmp(buf, maxPixels);
  } catch (err) {
    // A header cut short makes Buffer reads run past the end.
    if (err instanceof RangeError) throw undecodable('truncated header');
    throw err;
  }
}

function parseBmp(buf: Buffer, maxPixels: number): BmpPixels {
  if (buf.length < 26 || buf.toString('latin1', 0, 2) !== 'BM') throw undecodable('no BMP signature');
  const dataOffset = buf.readUInt32LE(10);
  const dibSize = buf.readUInt32LE(14);
  if (dibSize < 40 || buf.length < 14 + dibSize) return fallback(buf, maxPixels);
  const width = buf.readInt32LE(18);
  const rawHeight = buf.readInt32LE(22);
  const bpp = buf.readUInt16LE(28);
  const compression = buf.readUInt32LE(30);
  const height = Math.abs(rawHeight);
  if (width <= 0 || height === 0) throw undecodable(`bad dimensions ${width}x${rawHeight}`);
  checkPixels(width, height, maxPixels);
  const bottomUp = rawHeight > 0;

  const standardMasks =
    compression === 3 &&
    buf.length >= 14 + 40 + 12 &&
    buf.readUInt32LE(54) === 0xff0000 &&
    buf.readUInt32LE(58) === 0xff00 &&
    buf.readUInt32LE(62) === 0xff;
  if ((bpp === 24 && compression === 0) || (bpp === 32 && (compression === 0 || standardMasks))) {
    const channels = bpp === 24 ? 3 : 4;
    const data = packRows(buf, dataOffset, width, height, channels);
    return { width, height, channels, order: 'bgr', bottomUp, data };
  }
  if (bpp === 8 && compression === 0) {
    const colors = buf.readUInt32LE(46) || 256;
    const paletteAt = 14 + dibSize;
    if (paletteAt + colors * 4 > buf.length) throw undecodable('truncated palette');
    const rows = packRows(buf, dataOffset, width, height, 1);
    let gray = true;
    for (let i = 0; i < colors && gray; i++) {
      const p = paletteAt + i * 4;
      gray = buf[p] === i && buf[p + 1] === i && buf[p + 2] === i;
    }
    if (gray) return { width, height, channels: 1, order: 'rgb', bottomUp, data: rows };
    const lut = Buffer.alloc(256 * 3);
    for (let i = 0; i < colors; i++) buf.copy(lut, i * 3, paletteAt + i * 4, paletteAt + i * 4 + 3);
    const data = Buffer.allocUnsafe(width * height * 3);
    for (let i = 0, o = 0; i < rows.length; i++, o += 3) {
      const k = rows[i]! * 3;
      data[o] = lut[k]!;
      data[o + 1] = lut[k + 1]!;
      data[o + 2] = lut[k + 2]!;
    }
    return { width, height, channels: 3, order: 'bgr', bottomUp, data };
  }
  return fallback(buf, maxPixels);
}

function checkPixels(width: number, height: number, maxPixels: number): void {
  if (width * height > maxPixels) {
    throw new EdgeError(
      ErrorCodes.FRAME_TOO_LARGE,
      `frame is ${width}x${height} pixels; the limit is ${maxPixels} pixels`,
      { width, height, maxPixels },
    );
  }
}

/** Rows of a BMP are padded to 4 bytes; slice when they are not, copy row by row when they are. */
function packRows(buf: Buffer, offset: number, width: number, height: number, channels: number): Buffer {
  const rowBytes = width * channels;
  const stride = (rowBytes + 3) & ~3;
  if (offset + stride * (height - 1) + rowBytes > buf.length) throw undecodable('truncated pixel data');
  if (stride === rowBytes) return buf.subarray(offset, offset + rowBytes * height);
  const out = Buffer.allocUnsafe(rowBytes * height);
  for (let y = 0; y < height; y++)
    buf.copy(out, y * rowBytes, offset + y * stride, offset + y * stride + rowBytes);
  return out;
}

/**
 * The JavaScript decoder blocks the event loop for the whole image, so it only gets small,
 * uncompressed images whose pixel data is actually present. RLE-compressed BMPs (a few bytes can
 * declare a huge image) are refused: cameras do not write them.
 */
const FALLBACK_MAX_PIXELS = 4096 * 4096;

function fallback(buf: Buffer, maxPixels: number): BmpPixels {
  // OS/2 headers keep 16-bit dimensions at offset 18; check them before bmp-ts allocates.
  const dibSize = buf.readUInt32LE(14);
  const os2 = dibSize === 12;
  const width = os2 ? buf.readUInt16LE(18) : Math.abs(buf.readInt32LE(18));
  const height = os2 ? buf.readUInt16LE(20) : Math.abs(buf.readInt32LE(22));
  const bpp = buf.readUInt16LE(os2 ? 24 : 28);
  const compression = os2 || buf.length < 34 ? 0 : buf.readUInt32LE(30);
  checkPixels(width, height, maxPixels);
  if (compression === 1 || compression === 2 || compression === 4 || compression === 5) {
    throw new EdgeError(
      ErrorCodes.UNSUPPORTED_MEDIA_TYPE,
      'compressed (RLE, JPEG or PNG in BMP) BMP frames are not accepted',
    );
  }
  if (width * height > FALLBACK_MAX_PIXELS) {
    throw new EdgeError(
      ErrorCodes.FRAME_TOO_LARGE,
      `a ${bpp}-bit BMP is accepted up to ${FALLBACK_MAX_PIXELS} pixels`,
    );
  }
  const stride = Math.ceil((width * bpp) / 32) * 4;
  if (buf.readUInt32LE(10) + stride * height > buf.length) throw undecodable('truncated pixel data');
  let decoded: { width: number; height: number; data: Buffer };
  try {
    decoded = bmpTs.decode(buf, { toRGBA: true });
  } catch (err) {
    throw undecodable(err instanceof Error ? err.message : 'decoder failed');
  }
  if (decoded.data.length !== decoded.width * decoded.height * 4) throw undecodable('pixel data size');
  return {
    width: decoded.width,
    height: decoded.height,
    channels: 4,
    order: 'rgb',
    bottomUp: false,
    data: decoded.data,
  };
}

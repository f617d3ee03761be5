import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { Busboy } from '@fastify/busboy';
import { EdgeError, ErrorCodes } from '../errors.js';

/** A board with ad-hoc regions, posted as `multipart/form-data` (README, "Board layouts"). */
export interface MultipartBoard {
  kind: 'multipart-board';
  /** The `frame` part: its bytes and its own Content-Type. */
  frame: Buffer;
  mediaType: string;
  /** The `regions` part, parsed JSON: a region list, or `{"regions": [...]}`. */
  regions: unknown;
}

/** The `regions` part is JSON text; a few thousand regions fit in well under this. */
const MAX_REGIONS_BYTES = 4 * 1024 * 1024;

/**
 * Reads a `multipart/form-data` body with @fastify/busboy: exactly one `frame` file part (at most
 * `frameLimit` bytes) and one `regions` field. Anything else is a 4xx with a code: a frame over the
 * limit is EDGE_ERR_FRAME_TOO_LARGE, a missing part, an unknown part or regions that are not JSON
 * EDGE_ERR_BAD_REQUEST. The frame part's media type is checked by the route like a plain body's.
 */
export function readMultipartBoard(
  headers: IncomingHttpHeaders,
  payload: Readable,
  frameLimit: number,
): Promise<MultipartBoard> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: EdgeError): void => {
      if (settled) return;
      settled = true;
      payload.unpipe();
      payload.resume();
      reject(err);
    };
    let busboy;
    try {
      busboy = Busboy({
        headers: headers as { 'content-type': string } & IncomingHttpHeaders,
        limits: { files: 1, fields: 1, parts: 2, fileSize: frameLimit, fieldSize: MAX_REGIONS_BYTES },
      });
    } catch (err) {
      fail(new EdgeError(ErrorCodes.BAD_REQUEST, `not a multipart body: ${(err as Error).message}`));
      return;
    }
    let frame: Buffer | undefined;
    let mediaType = '';
    let regionsText: string | undefined;
    busboy.on('file', (name, stream, _filename, _encoding, mimeType) => {
      if (name !== 'frame') {
        stream.resume();
        fail(new EdgeError(ErrorCodes.BAD_REQUEST, `unknown part "${name}"; send "frame" and "regions"`));
        return;
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () =>
        fail(new EdgeError(ErrorCodes.FRAME_TOO_LARGE, `the frame part is over ${frameLimit} bytes`)),
      );
      stream.on('end', () => {
        frame = Buffer.concat(chunks);
        mediaType = mimeType.toLowerCase();
      });
    });
    busboy.on('field', (name, value, _nameTruncated, valueTruncated) => {
      if (name !== 'regions') {
        fail(new EdgeError(ErrorCodes.BAD_REQUEST, `unknown part "${name}"; send "frame" and "regions"`));
        return;
      }
      if (valueTruncated) {
        fail(new EdgeError(ErrorCodes.BAD_REQUEST, `the regions part is over ${MAX_REGIONS_BYTES} bytes`));
        return;
      }
      regionsText = value;
    });
    for (const limit of ['partsLimit', 'filesLimit', 'fieldsLimit'] as const) {
      busboy.on(limit, () =>
        fail(new EdgeError(ErrorCodes.BAD_REQUEST, 'a board is one "frame" part and one "regions" part')),
      );
    }
    busboy.on('error', (err: unknown) =>
      fail(new EdgeError(ErrorCodes.BAD_REQUEST, `malformed multipart body: ${(err as Error).message}`)),
    );
    busboy.on('finish', () => {
      if (settled) return;
      if (!frame) return fail(new EdgeError(ErrorCodes.BAD_REQUEST, 'the "frame" part is missing'));
      if (regionsText === undefined)
        return fail(new EdgeError(ErrorCodes.BAD_REQUEST, 'the "regions" part is missing'));
      let regions: unknown;
      try {
        regions = JSON.parse(regionsText);
      } catch {
        return fail(new EdgeError(ErrorCodes.BAD_REQUEST, 'the "regions" part is not JSON'));
      }
      settled = true;
      resolve({ kind: 'multipart-board', frame, mediaType, regions });
    });
    payload.pipe(busboy);
  });
}

import { createHash, timingSafeEqual } from 'node:crypto';
import type { onRequestAsyncHookHandler } from 'fastify';
import { EdgeError, ErrorCodes } from '../errors.js';

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * Bearer-token check for the scoring routes. Both sides are hashed first so the comparison is
 * constant-time and independent of the presented token's length.
 */
export function bearerGuard(token: string): onRequestAsyncHookHandler {
  const expected = digest(token);
  return async (request) => {
    const auth = request.headers.authorization ?? '';
    const presented = auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
    if (!presented || !timingSafeEqual(digest(presented), expected)) {
      throw new EdgeError(ErrorCodes.UNAUTHORIZED, 'a valid bearer token is required');
    }
  };
}

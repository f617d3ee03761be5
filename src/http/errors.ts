import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { EdgeError, ErrorCodes, isEdgeError, type ErrorCode } from '../errors.js';

/** Fastify's own error codes mapped onto ours, so every answer has the same error shape. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: ErrorCodes.BODY_TOO_LARGE,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ErrorCodes.UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_INVALID_TYPE: ErrorCodes.UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_EMPTY_BODY: ErrorCodes.FRAME_UNDECODABLE,
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ErrorCodes.BAD_REQUEST,
  FST_ERR_CTP_EMPTY_JSON_BODY: ErrorCodes.BAD_REQUEST,
};

export function toEdgeError(err: FastifyError | Error): EdgeError {
  if (isEdgeError(err)) return err;
  const code = (err as FastifyError).code;
  const mapped = code ? FASTIFY_CODES[code] : undefined;
  if (mapped) return new EdgeError(mapped, err.message);
  const status = (err as FastifyError).statusCode;
  if (status === 408) return new EdgeError(ErrorCodes.BAD_REQUEST, 'request timed out', { status });
  if (status !== undefined && status >= 400 && status < 500) {
    return new EdgeError(ErrorCodes.BAD_REQUEST, err.message, { status });
  }
  return new EdgeError(ErrorCodes.INTERNAL, 'internal error', {}, { cause: err });
}

export function sendError(reply: FastifyReply, e: EdgeError): FastifyReply {
  const status = typeof e.context.status === 'number' ? e.context.status : e.httpStatus;
  if (e.code === ErrorCodes.QUEUE_FULL)
    reply.header(
      'retry-after',
      String(typeof e.context.retryAfterSeconds === 'number' ? e.context.retryAfterSeconds : 1),
    );
  reply.errorCode = e.code;
  // Internal details stay in the log; clients get the code and a message meant for them.
  const message =
    e.code === ErrorCodes.INTERNAL
      ? 'internal error'
      : e.code === ErrorCodes.INFERENCE_FAILED
        ? 'inference failed for this frame'
        : e.message;
  return reply.code(status).send({ error: { code: e.code, message } });
}

const CLIENT_ERROR_STATUS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout'],
  HPE_HEADERS_TIMEOUT: [408, 'Request Timeout'],
};

/**
 * Errors Node's HTTP parser raises before a request reaches fastify (malformed heads, oversized
 * headers, timeouts) answered in the daemon's error format, without echoing any request bytes.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable || (err.code && ['ECONNRESET', 'EPIPE'].includes(err.code))) {
    socket.destroy();
    return;
  }
  const [status, text] = CLIENT_ERROR_STATUS[err.code ?? ''] ?? [400, 'Bad Request'];
  const body = JSON.stringify({
    error: {
      code: ErrorCodes.BAD_REQUEST,
      message: status === 408 ? 'request timed out' : 'malformed HTTP request',
    },
  });
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.decorateReply('errorCode', undefined);
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const e = toEdgeError(err);
    if (e.httpStatus >= 500 && e.code !== ErrorCodes.NOT_READY) {
      request.log.error({ component: 'http', err, code: e.code, url: request.url }, 'request failed');
    }
    return sendError(reply, e);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(
      reply,
      new EdgeError(ErrorCodes.NOT_FOUND, `no route ${request.method} ${request.url.split('?')[0]}`),
    ),
  );
}

declare module 'fastify' {
  interface FastifyReply {
    /** The error code sent, for metrics and access logs. */
    errorCode: ErrorCode | undefined;
  }
}

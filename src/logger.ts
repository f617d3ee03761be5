import { pino, type Logger, type DestinationStream } from 'pino';
import type { Config } from './config.js';

/** Paths redacted from every log line: tokens, connection strings, SAS signatures. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'apiToken',
  'config.apiToken',
  'connectionString',
  '*.connectionString',
  'sharedAccessSignature',
  '*.sharedAccessSignature',
  'url',
  '*.url',
  // Raw request bytes of a client error hold the Authorization header.
  'err.rawPacket',
  '*.rawPacket',
];

export function createLogger(config: Pick<Config, 'logLevel'>, destination?: DestinationStream): Logger {
  return pino(
    {
      level: config.logLevel,
      base: { service: 'edge-scorer' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // Synchronous writes keep the last lines before an exit complete and in order; the daemon logs
    // events, not frames, so this costs nothing on the scoring path.
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/**
 * Readable lines for a person at a terminal: `npm start` in a terminal prints through pino-pretty
 * (synchronously, like the JSON destination). Anything that is not a TTY — the container, a pipe,
 * a log collector — gets pino's JSON lines. pino-pretty is a devDependency: in a checkout it is
 * there; in the image, where stdout is never a TTY, it is not needed, and without it the daemon
 * logs JSON.
 */
export async function terminalDestination(
  out: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout,
): Promise<DestinationStream | undefined> {
  if (!out.isTTY) return undefined;
  try {
    const { default: pretty } = await import('pino-pretty');
    return pretty({
      destination: out,
      sync: true,
      colorize: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,service',
    });
  } catch {
    return undefined;
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { waitFor } from './lifecycle.js';

/** The built daemon (dist/main.js; `npm test` builds first) as a child process, for crash and signal tests. */
export const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

export interface ChildDaemon {
  child: ChildProcess;
  url: string;
  /** Everything it wrote to stdout/stderr (pino JSON lines). */
  output: () => string;
  /** Resolves with the exit code (or the signal name) once it has exited. */
  exited: Promise<number | string>;
  kill(signal: NodeJS.Signals): void;
}

/** SIGKILLs a daemon that is still running and waits for its exit (test clean-up). */
export async function killIfRunning(d: ChildDaemon | undefined): Promise<void> {
  if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.kill('SIGKILL');
  await d.exited;
}

/** Starts `node dist/main.js` (or `bin`) with `env` on `port` and waits until /v2/health/live answers. */
export async function spawnDaemon(
  env: Record<string, string>,
  port: number,
  bin = MAIN,
): Promise<ChildDaemon> {
  const child = spawn(process.execPath, [bin], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
  const url = `http://127.0.0.1:${port}`;
  await Promise.race([
    waitFor(
      async () => ((await fetch(`${url}/v2/health/live`)).status === 200 ? true : undefined),
      'daemon live',
      30_000,
    ),
    exited.then((code) => {
      throw new Error(`daemon exited (${code}) before it listened:\n${out}`);
    }),
  ]);
  return { child, url, output: () => out, exited, kill: (signal) => child.kill(signal) };
}

/** A free TCP port on loopback. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

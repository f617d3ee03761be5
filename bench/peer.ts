import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Starts and stops the bench's Python peer (bench/peer/: Flask + gunicorn + OpenCV DNN, built like
 * the Azure Video Analyzer HTTP extension samples). Run bench/peer/setup.sh once to install it.
 */

/** Debian's interpreter: python3-opencv, python3-flask and gunicorn are installed for it only. */
export const DEBIAN_PYTHON = '/usr/bin/python3';
const READY_MARKER = /edge-scorer-peer: worker ready pid=(\d+) workers=(\d+)/;
const TAIL_LINES = 40;

export interface PeerOptions {
  /** The static-shape ONNX model; model.json must lie beside it. */
  modelPath: string;
  /** Port on 127.0.0.1. */
  port: number;
  /** Folder holding score.py and gunicorn.conf.py; defaults to bench/peer next to this module. */
  cwd?: string;
  /** How long to wait for every worker to load the net and answer (default 30 s). */
  readyTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before it sends SIGKILL (default 10 s). */
  stopTimeoutMs?: number;
  /** The interpreter (default Debian's, {@link DEBIAN_PYTHON}; the bench's venv for onnxruntime). */
  python?: string;
  /** 'opencv' (score.py, 2 sync workers, default) or 'onnxruntime' (score_ort.py, 2 workers × 2 threads). */
  engine?: 'opencv' | 'onnxruntime';
}

export interface Peer {
  /** Base URL, e.g. http://127.0.0.1:8090 (POST frames to `${url}/score`). */
  url: string;
  /** Pid of the gunicorn master. */
  pid: number;
  /** Pids of the workers as they reported ready. */
  workerPids: number[];
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function startPeer(opts: PeerOptions): Promise<Peer> {
  const cwd = resolve(opts.cwd ?? join(dirname(fileURLToPath(import.meta.url)), 'peer'));
  const modelPath = resolve(opts.modelPath);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  const PYTHON = opts.python ?? DEBIAN_PYTHON;
  const engine = opts.engine ?? 'opencv';
  if (!existsSync(PYTHON)) throw new Error(`peer: ${PYTHON} not found; run bench/peer/setup.sh`);
  if (!existsSync(modelPath)) throw new Error(`peer: model ${modelPath} not found`);
  if (!existsSync(join(dirname(modelPath), 'model.json'))) {
    throw new Error(`peer: no model.json beside ${modelPath}`);
  }

  const url = `http://127.0.0.1:${opts.port}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PEER_MODEL_PATH: modelPath,
    PEER_BIND: `127.0.0.1:${opts.port}`,
    PEER_ENGINE: engine,
    PEER_THREADS: engine === 'onnxruntime' ? '2' : '1',
    PYTHONUNBUFFERED: '1',
    // Keep score.py's __pycache__ out of the source tree.
    PYTHONDONTWRITEBYTECODE: '1',
  };
  // A PYTHONPATH/PYTHONHOME meant for another interpreter (pyenv, a venv) must not leak into
  // Debian's python3 and shadow its cv2/numpy.
  delete env.PYTHONPATH;
  delete env.PYTHONHOME;

  const app = engine === 'onnxruntime' ? 'score_ort:app' : 'score:app';
  const child = spawn(PYTHON, ['-m', 'gunicorn', '-c', join(cwd, 'gunicorn.conf.py'), app], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  const tail: string[] = [];
  const workerPids: number[] = [];
  let expectedWorkers = Infinity;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const exitedPromise = new Promise<void>((r) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      r();
    });
  });
  child.once('error', (err) => {
    spawnError = err;
  });
  const onLine = (line: string): void => {
    if (line.trim() === '') return;
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
    const m = READY_MARKER.exec(line);
    if (m) {
      workerPids.push(Number(m[1]));
      expectedWorkers = Number(m[2]);
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      lines.forEach(onLine);
    });
    stream.on('end', () => onLine(partial));
  }

  // Should the bench die without calling stop(), do not leave gunicorn behind.
  const onProcessExit = (): void => {
    if (!exited) child.kill('SIGTERM');
  };
  process.once('exit', onProcessExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.removeListener('exit', onProcessExit);
      if (!exited && !spawnError) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((r) => {
          timer = setTimeout(() => r('timeout'), stopTimeoutMs);
        });
        const outcome = await Promise.race([exitedPromise, timedOut]);
        clearTimeout(timer);
        if (outcome === 'timeout') {
          for (const pid of [...workerPids, child.pid]) {
            try {
              if (pid !== undefined) process.kill(pid, 'SIGKILL');
            } catch {
              // already gone
            }
          }
          await exitedPromise;
          // The killed workers are reaped by init, not by their (dead) master: give it a moment.
          const until = Date.now() + 2000;
          while (Date.now() < until && workerPids.some(isAlive)) await sleep(50);
        }
      }
    })();
    return stopping;
  };

  const failure = (why: string): Error =>
    new Error(`peer: ${why}\n--- last peer output ---\n${tail.join('\n') || '(none)'}`);

  const deadline = Date.now() + readyTimeoutMs;
  try {
    for (;;) {
      if (spawnError) throw failure(`could not start ${PYTHON}: ${spawnError.message}`);
      if (exited) {
        throw failure(`gunicorn exited (code ${exited.code}, signal ${exited.signal}) before it was ready`);
      }
      if (Date.now() > deadline) throw failure(`not ready after ${readyTimeoutMs} ms`);
      // Ready once every worker has loaded its net and one of ours (not a stale server on the same
      // port) answers the health check.
      if (workerPids.length >= expectedWorkers) {
        try {
          const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
          if (res.ok) {
            const body = (await res.json()) as { pid?: unknown };
            if (typeof body.pid === 'number' && workerPids.includes(body.pid)) break;
            throw failure(`port ${opts.port} is answered by another process (pid ${String(body.pid)})`);
          }
        } catch (err) {
          if (err instanceof Error && err.message.startsWith('peer: ')) throw err;
          // not listening yet
        }
      }
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  return { url, pid: child.pid!, workerPids, stop };
}

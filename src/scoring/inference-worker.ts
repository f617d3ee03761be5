import { Worker } from 'node:worker_threads';
import { EdgeError, ErrorCodes, deserializeError } from '../errors.js';
import type { ModelManifest } from './manifest.js';
import type {
  CutRunRequest,
  LoadRequest,
  LoadedModel,
  RunRequest,
  WorkerReply,
  WorkerRequest,
} from './worker-protocol.js';

type Pending = { resolve: (reply: WorkerReply) => void; reject: (err: Error) => void };

// The built daemon runs dist/scoring/worker.js. Under vitest and tsx the sources are TypeScript:
// the worker thread then registers tsx's loader before importing worker.ts.
const runningFromSource = import.meta.url.endsWith('.ts');

function spawnWorker(name: string): Worker {
  if (!runningFromSource) return new Worker(new URL('./worker.js', import.meta.url), { name });
  const api = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./worker.ts', import.meta.url).href;
  const bootstrap = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(bootstrap, { name, eval: true });
}

/** The "request → reply by id" plumbing of one inference worker thread. */
export class InferenceWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exitError: EdgeError | undefined;
  readonly exited: Promise<void>;

  constructor(name: string) {
    this.worker = spawnWorker(name);
    this.worker.on('message', (msg: WorkerReply) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.type === 'error') p.reject(deserializeError(msg.error));
      else p.resolve(msg);
    });
    this.exited = new Promise((resolve) => {
      this.worker.once('error', (err) => {
        this.fail(new EdgeError(ErrorCodes.INFERENCE_FAILED, `inference worker crashed: ${err.message}`));
      });
      this.worker.once('exit', (code) => {
        this.fail(new EdgeError(ErrorCodes.INFERENCE_FAILED, `inference worker exited with code ${code}`));
        resolve();
      });
    });
  }

  /** True once the thread died; a dead worker is never given work again. */
  get dead(): boolean {
    return this.exitError !== undefined;
  }

  private fail(err: EdgeError): void {
    this.exitError ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private request(msg: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject });
      this.worker.postMessage(msg, transfer);
    });
  }

  async load(opts: Omit<LoadRequest, 'type' | 'id'>): Promise<LoadedModel> {
    const reply = await this.request({ type: 'load', id: this.nextId++, ...opts });
    if (reply.type !== 'loaded')
      throw new EdgeError(ErrorCodes.INTERNAL, `unexpected worker reply ${reply.type}`);
    return reply.model;
  }

  async configure(manifest: ModelManifest): Promise<void> {
    await this.request({ type: 'configure', id: this.nextId++, manifest });
  }

  async run(batch: Omit<RunRequest, 'type' | 'id'>): Promise<Extract<WorkerReply, { type: 'result' }>> {
    const transfer = [batch.data, batch.pngs?.bytes].filter((b) => b !== undefined);
    const reply = await this.request({ type: 'run', id: this.nextId++, ...batch }, transfer);
    if (reply.type !== 'result')
      throw new EdgeError(ErrorCodes.INTERNAL, `unexpected worker reply ${reply.type}`);
    return reply;
  }

  /** Cuts upright regions of a shared board into one batch on this worker's thread and runs it. */
  async cutRun(req: Omit<CutRunRequest, 'type' | 'id'>): Promise<Extract<WorkerReply, { type: 'result' }>> {
    const reply = await this.request({ type: 'cutRun', id: this.nextId++, ...req });
    if (reply.type !== 'result')
      throw new EdgeError(ErrorCodes.INTERNAL, `unexpected worker reply ${reply.type}`);
    return reply;
  }

  /** Releases the session and ends the thread; safe to call on a dead worker. */
  async close(): Promise<void> {
    if (!this.dead) {
      try {
        await this.request({ type: 'close', id: this.nextId++ });
      } catch {
        // a worker that fails to close cleanly is terminated below
      }
    }
    await this.worker.terminate();
    await this.exited;
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EdgeError, ErrorCodes, type ErrorCode } from '../../src/errors.js';
import { defaultTestModel, TEST_LABELS } from '../helpers/daemon.js';
import { parseMetrics } from '../helpers/http.js';
import { writeModelDir } from '../helpers/onnx-builder.js';
import {
  buildCorpus,
  FrameFuzzer,
  fuzzCases,
  fuzzOnly,
  fuzzSeed,
  isSlow,
  runHttpCase,
  runSocketCase,
  type CaseOutcome,
  type Corpus,
  type FuzzCase,
  type FuzzTarget,
  type WireResponse,
} from './frame-fuzzer.js';

/**
 * Frame fuzzing against one real daemon (src/main.ts in a child process, so that a crash is an
 * exit we can see and attribute): ≥ 10 000 hostile requests per run, 8 at a time over keep-alive
 * connections, with a known-good frame and the liveness probe between batches. Replay a run with
 * FUZZ_SEED (and FUZZ_CASES), or single cases with FUZZ_SEED + FUZZ_ONLY=i,j.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SEED = fuzzSeed();
const ONLY = fuzzOnly();
const CASES = fuzzCases();
const CONCURRENCY = 8;
const BATCH = 250;
const TARGET: FuzzTarget = {
  bodyLimitBytes: 256 * 1024,
  maxFramePixels: 100_000_000,
  requestTimeoutMs: 1000,
};
/** Slow senders must be cut off within REQUEST_TIMEOUT_MS plus this (timer granularity, load). */
const SLOW_SLACK_MS = 3000;
const CASE_TIMEOUT_MS = 15_000;

/** Every code the daemon may answer with, and the statuses it may carry (BAD_REQUEST covers fastify's 4xx). */
const STATUS_OF = new Map<string, number[]>(
  Object.values(ErrorCodes).map((code: ErrorCode) => [
    code,
    code === ErrorCodes.BAD_REQUEST
      ? [400, 405, 408, 411, 414, 417, 431]
      : [new EdgeError(code, '').httpStatus],
  ]),
);
const STACK =
  /\n\s+at\s|\bat\s+\S+\s+\(?\S+:\d+:\d+\)?|node_modules|\/src\/|\.(ts|js|cc|cpp|h):\d+|onnxruntime_src|file:\/\//;

interface Failure {
  index: number;
  kind: string;
  description: string;
  problem: string;
  detail: string;
}

interface Daemon {
  url: string;
  child: ChildProcess;
  output: () => string;
  exit: Promise<number | string>;
  exited: () => number | string | undefined;
  dir: string;
}

/** Starts `node --import tsx src/main.ts` on 127.0.0.1 with PORT=0 and reads the port from its log. */
async function startChild(env: Record<string, string>): Promise<Daemon> {
  const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-fuzz-'));
  const m = defaultTestModel();
  const { modelPath } = await writeModelDir(path.join(dir, 'model'), m.model, m.manifest);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOST: '127.0.0.1',
      PORT: '0',
      MODEL_PATH: modelPath,
      DATA_DIR: path.join(dir, 'data'),
      EXECUTION_PROVIDERS: 'cpu',
      INTRA_OP_THREADS: '1',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let exitValue: number | string | undefined;
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exit = once(child, 'exit').then(([code, signal]) => {
    exitValue = (code ?? signal) as number | string;
    return exitValue;
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not listen within 60 s:\n${out}`)), 60_000);
    const onData = (): void => {
      const m2 = /"port":(\d+)[^\n]*edge-scorer listening/.exec(out);
      if (m2) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(Number(m2[1]));
      }
    };
    child.stdout.on('data', onData);
    void exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited (${code}) before it listened:\n${out}`));
    });
  });
  return { url: `http://127.0.0.1:${port}`, child, output: () => out, exit, exited: () => exitValue, dir };
}

async function get(url: string, timeoutMs = 5000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

function json(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** The contract for one answer (README, "HTTP interface" and its error table); returns the problems found. */
function answerProblems(c: FuzzCase, r: WireResponse): { problem: string; detail: string }[] {
  const problems: { problem: string; detail: string }[] = [];
  const body = json(r.body);
  const excerpt = `${r.status} ${r.body.slice(0, 240)}`;
  if (STACK.test(r.body))
    problems.push({ problem: 'stack trace or source path in an answer', detail: excerpt });
  if (r.status >= 500) problems.push({ problem: `5xx answer`, detail: excerpt });
  else if (!c.expect.statuses.includes(r.status))
    problems.push({ problem: `status ${r.status} not in [${c.expect.statuses.join(',')}]`, detail: excerpt });
  if (r.status === 200) {
    if (c.transport === 'http' && c.method === 'HEAD') return problems;
    if (c.transport === 'http' && c.path !== '/v1/score' && c.path !== '/score') return problems;
    const p = body as
      | {
          frameId?: unknown;
          classification?: { label: string; score: number }[];
          inferences?: { type: string; classification?: { tag: { value: string; confidence: number } } }[];
          live?: boolean;
        }
      | undefined;
    const classification = Array.isArray(p?.classification) ? p.classification : undefined;
    const inferences = Array.isArray(p?.inferences) ? p.inferences : [];
    const v1 = classification !== undefined && classification.length > 0 && typeof p?.frameId === 'string';
    if (!v1 && inferences.length === 0 && p?.live !== true)
      problems.push({ problem: '200 without a prediction', detail: excerpt });
    const scores: (readonly [string, number])[] = (classification ?? []).map(
      (x) => [x.label, x.score] as const,
    );
    for (const i of inferences)
      if (i.classification) scores.push([i.classification.tag.value, i.classification.tag.confidence]);
    for (const [label, score] of scores) {
      if (!TEST_LABELS.includes(label) || !(score >= 0 && score <= 1)) {
        problems.push({ problem: '200 with a bad prediction', detail: excerpt });
        break;
      }
    }
    return problems;
  }
  if (r.status === 204 || (c.transport === 'http' && c.method === 'HEAD')) return problems;
  const e = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (!e || typeof e !== 'object' || typeof e.code !== 'string' || typeof e.message !== 'string') {
    problems.push({ problem: `${r.status} without the {"error":{"code","message"}} shape`, detail: excerpt });
    return problems;
  }
  const allowed = STATUS_OF.get(e.code);
  if (!allowed) problems.push({ problem: `unknown error code ${e.code}`, detail: excerpt });
  else if (!allowed.includes(r.status))
    problems.push({ problem: `${e.code} answered with ${r.status}`, detail: excerpt });
  if (c.expect.codes && !c.expect.codes.includes(e.code))
    problems.push({ problem: `code ${e.code} not in [${c.expect.codes.join(',')}]`, detail: excerpt });
  if (!(r.headers['content-type'] ?? '').startsWith('application/json'))
    problems.push({ problem: 'error without a JSON content-type', detail: excerpt });
  if (e.code === ErrorCodes.QUEUE_FULL && !r.headers['retry-after'])
    problems.push({ problem: '429 without Retry-After', detail: excerpt });
  return problems;
}

/** What must hold for a whole exchange, beyond each answer. */
function outcomeProblems(c: FuzzCase, o: CaseOutcome): { problem: string; detail: string }[] {
  const problems = o.responses.flatMap((r) => answerProblems(c, r));
  if (c.transport === 'http') {
    if (o.error) {
      problems.push({
        problem: 'no answer (connection failed)',
        detail: `${o.error} after ${Math.round(o.elapsedMs)} ms`,
      });
    }
    return problems;
  }
  if (o.error) problems.push({ problem: 'socket error', detail: o.error });
  if (c.mode === 'idle' || c.mode === 'trickle') {
    if (!o.closed) {
      problems.push({
        problem: `${c.kind === 'socket' ? 'incomplete request' : c.kind} not cut off within REQUEST_TIMEOUT_MS + ${SLOW_SLACK_MS} ms`,
        detail: `still open after ${Math.round(o.elapsedMs)} ms; answers: ${o.responses.map((r) => r.status).join(',') || 'none'}`,
      });
    }
  } else if (c.mode === 'wait') {
    if (o.responses.length === 0)
      problems.push({ problem: 'socket case got no answer', detail: o.trailing ?? '' });
    if (o.trailing) problems.push({ problem: 'bytes that are not an HTTP response', detail: o.trailing });
  }
  return problems;
}

let daemon: Daemon;
let corpus: Corpus;
let pool: Pool;

beforeAll(async () => {
  [daemon, corpus] = await Promise.all([
    startChild({
      BODY_LIMIT_BYTES: String(TARGET.bodyLimitBytes),
      MAX_FRAME_PIXELS: String(TARGET.maxFramePixels),
      REQUEST_TIMEOUT_MS: String(TARGET.requestTimeoutMs),
    }),
    buildCorpus(),
  ]);
  // Idle keep-alive sockets are closed by the daemon after REQUEST_TIMEOUT_MS (its connection
  // timeout); the client must give them up first, or a request races the close.
  pool = new Pool(daemon.url, {
    connections: CONCURRENCY,
    pipelining: 1,
    keepAliveTimeout: 400,
    keepAliveMaxTimeout: 400,
  });
}, 120_000);

afterAll(async () => {
  await pool?.close();
  if (daemon) {
    if (daemon.exited() === undefined) {
      daemon.child.kill('SIGTERM');
      await daemon.exit;
    }
    await rm(daemon.dir, { recursive: true, force: true });
  }
});

describe('frame fuzzing POST /v1/score and /score', () => {
  it(`survives ${ONLY ? ONLY.length : CASES} hostile requests (seed ${SEED})`, async () => {
    const indices = ONLY ?? Array.from({ length: CASES }, (_, i) => i);
    console.log(
      `[frame-fuzz] seed=${SEED} cases=${indices.length}` +
        `${ONLY ? ` only=${ONLY.join(',')}` : ''} (replay: FUZZ_SEED=${SEED} FUZZ_CASES=${CASES})`,
    );
    const started = Date.now();
    const fuzzer = new FrameFuzzer(SEED, corpus, TARGET);
    const failures: Failure[] = [];
    const inFlight = new Map<number, FuzzCase>();
    const fail = (
      c: Pick<FuzzCase, 'index' | 'kind' | 'description'>,
      problem: string,
      detail: string,
    ): void => {
      failures.push({ index: c.index, kind: c.kind, description: c.description, problem, detail });
    };
    const probeCase = {
      index: -1,
      kind: 'probe',
      description: 'known-good 32×32 PNG and GET /v2/health/live',
    };
    const counts = new Map<number, number>();
    const tally = (o: CaseOutcome): void => {
      for (const r of o.responses) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
      if (o.responses.length === 0) counts.set(0, (counts.get(0) ?? 0) + 1);
    };

    // A crash: the child exits. Every case in flight then is a suspect.
    let crashed = false;
    void daemon.exit.then((code) => {
      crashed = true;
      const suspects = [...inFlight.values()]
        .map((c) => `#${c.index} ${c.kind}: ${c.description}`)
        .join('\n  ');
      fail(
        probeCase,
        `daemon exited (${code})`,
        `cases in flight:\n  ${suspects}\n${daemon.output().slice(-4000)}`,
      );
    });

    // Liveness throughout: /v2/health/live must answer 200 while the fuzzing runs.
    let liveChecks = 0;
    let slowestLiveMs = 0;
    const liveness = setInterval(() => {
      if (crashed) return;
      const sent = performance.now();
      get(`${daemon.url}/v2/health/live`).then(
        (r) => {
          liveChecks++;
          slowestLiveMs = Math.max(slowestLiveMs, performance.now() - sent);
          if (r.status !== 200) fail(probeCase, `live answered ${r.status}`, r.text.slice(0, 200));
        },
        (err: Error) => fail(probeCase, 'live did not answer within 5 s', err.message),
      );
    }, 500);

    const run = async (c: FuzzCase): Promise<void> => {
      inFlight.set(c.index, c);
      try {
        const o =
          c.transport === 'http'
            ? await runHttpCase(pool, c, CASE_TIMEOUT_MS)
            : await runSocketCase(
                daemon.url,
                c,
                c.mode === 'idle' || c.mode === 'trickle'
                  ? TARGET.requestTimeoutMs + SLOW_SLACK_MS
                  : CASE_TIMEOUT_MS,
              );
        tally(o);
        if (!crashed) for (const p of outcomeProblems(c, o)) fail(c, p.problem, p.detail);
      } finally {
        inFlight.delete(c.index);
      }
    };

    const probe = async (after: number): Promise<void> => {
      const o = await runHttpCase(
        pool,
        {
          index: -1,
          kind: 'probe',
          description: `known-good PNG after case ${after}`,
          expect: { statuses: [200] },
          transport: 'http',
          method: 'POST',
          path: '/v1/score',
          headers: { 'content-type': 'image/png' },
          body: corpus.probe,
          chunks: 0,
        },
        CASE_TIMEOUT_MS,
      );
      const r = o.responses[0];
      if (
        !r ||
        r.status !== 200 ||
        !Array.isArray((json(r.body) as { classification?: unknown })?.classification)
      ) {
        fail(
          { ...probeCase, description: `known-good PNG after case ${after}` },
          'a valid frame did not score 200',
          `${r?.status ?? o.error} ${r?.body.slice(0, 200) ?? ''}`,
        );
      }
    };

    const background: Promise<void>[] = [];
    try {
      for (let b = 0; b < indices.length && !crashed; b += BATCH) {
        const batch = indices.slice(b, b + BATCH).map((i) => fuzzer.caseAt(i));
        // Slow senders run beside the batches: they take seconds by design.
        for (const c of batch.filter(isSlow)) background.push(run(c));
        const queue = batch.filter((c) => !isSlow(c));
        await Promise.all(
          Array.from({ length: CONCURRENCY }, async () => {
            for (let c = queue.shift(); c && !crashed; c = queue.shift()) await run(c);
          }),
        );
        if (!crashed) await probe(batch[batch.length - 1]!.index);
      }
    } finally {
      await Promise.allSettled(background);
      clearInterval(liveness);
    }

    // At the end: alive, ready, still the same model, and nothing logged as a failure.
    if (!crashed) {
      await probe(indices[indices.length - 1] ?? 0);
      const live = await get(`${daemon.url}/v2/health/live`).catch((e: Error) => ({
        status: 0,
        text: e.message,
      }));
      if (live.status !== 200) fail(probeCase, 'live is not 200 at the end', `${live.status} ${live.text}`);
      const ready = await get(`${daemon.url}/v2/health/ready`).catch((e: Error) => ({
        status: 0,
        text: e.message,
      }));
      if (ready.status !== 200)
        fail(probeCase, 'ready is not 200 at the end', `${ready.status} ${ready.text}`);
      const samples = parseMetrics((await get(`${daemon.url}/metrics`)).text);
      for (const s of samples) {
        if (s.name !== 'edge_scorer_http_requests_total' || s.value === 0) continue;
        const outcome = s.labels.outcome ?? '';
        if (outcome === '5xx' || outcome === ErrorCodes.INTERNAL || outcome === ErrorCodes.INFERENCE_FAILED) {
          fail(
            probeCase,
            `metrics count ${s.value} answers with outcome ${outcome}`,
            JSON.stringify(s.labels),
          );
        }
      }
    }
    for (const line of daemon.output().split('\n')) {
      const entry = json(line) as { level?: number; msg?: string; err?: { message?: string } } | undefined;
      if (entry?.level !== undefined && entry.level >= 50) {
        fail(probeCase, `daemon logged level ${entry.level}: ${entry.msg ?? ''}`, line.slice(0, 600));
      }
    }

    const seconds = (Date.now() - started) / 1000;
    const histogram = [...counts.entries()]
      .sort(([a], [b]) => a - b)
      .map(([s, n]) => `${s || 'none'}:${n}`)
      .join(' ');
    console.log(
      `[frame-fuzz] seed=${SEED} ${indices.length} cases in ${seconds.toFixed(1)} s ` +
        `(${(indices.length / seconds).toFixed(0)}/s); answers ${histogram}; live checks ${liveChecks} (slowest ${Math.round(slowestLiveMs)} ms); ` +
        `${failures.length} failure(s)`,
    );
    if (failures.length > 0) {
      const groups = new Map<string, Failure[]>();
      for (const f of failures) {
        const key = `${f.kind}: ${f.problem}`;
        groups.set(key, [...(groups.get(key) ?? []), f]);
      }
      const report = [...groups.entries()]
        .map(
          ([key, fs]) =>
            `- ${key} (${fs.length}×; cases ${fs
              .slice(0, 12)
              .map((f) => f.index)
              .join(',')})\n` +
            fs
              .slice(0, 3)
              .map(
                (f) =>
                  `    #${f.index} ${f.description}\n      → ${f.detail.slice(0, f.problem.startsWith('daemon exited') ? 8000 : 400)}`,
              )
              .join('\n'),
        )
        .join('\n');
      const replay = [...new Set(failures.map((f) => f.index).filter((i) => i >= 0))].slice(0, 20).join(',');
      expect.fail(
        `frame fuzzing found ${failures.length} failure(s) in ${groups.size} group(s), seed ${SEED}.\n` +
          `Replay: FUZZ_SEED=${SEED} FUZZ_CASES=${CASES} npx vitest run test/fuzz/frames.fuzz.test.ts` +
          `${replay ? `  (or FUZZ_SEED=${SEED} FUZZ_ONLY=${replay})` : ''}\n${report}`,
      );
    }
  }, 300_000);
});

/**
 * A/B in one run (bench/README.md): the same daemon, the same frame, a setting switched on and off
 * in alternating phases (off-on, then on-off, …) so drift of a shared VM hits both sides alike.
 * Each phase measures the one-connection p50 (sequential requests) and the saturated throughput
 * (closed-loop clients); the summary holds the medians, their on/off ratios, and the spread of the
 * phases with the same setting (the run's own noise, to judge a ratio against).
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

export interface AbOptions {
  /** The scoring URL and the frame posted to it. */
  url: string;
  frame: Buffer;
  mediaType: string;
  rounds: number;
  /** Sequential requests per p50 phase. */
  requests: number;
  /** Seconds per throughput phase. */
  seconds: number;
  clients: number;
  /** Switches the setting under test. */
  apply(on: boolean): Promise<void>;
  /** Waits until the work a phase left behind is done (queues drained), before the next phase. */
  settle?(): Promise<void>;
  /** Extra figures recorded with each phase. */
  probe?(): Promise<Record<string, number>>;
}

export interface AbRow extends Record<string, unknown> {
  round: number;
  setting: 'off' | 'on';
  p50Ms: number;
  framesPerSec: number;
}

export interface AbFigure {
  off: number;
  on: number;
  ratioOnOff: number;
  /** Median of the on/off ratios within each round: robust to the machine drifting between rounds. */
  pairedRatio: number;
  /** Each round's on/off ratio. */
  roundRatios: number[];
  spreadOff: number;
  spreadOn: number;
}

export interface AbSummary {
  p50Ms: AbFigure;
  framesPerSec: AbFigure;
  rows: AbRow[];
}

export async function runAb(o: AbOptions): Promise<AbSummary> {
  const post = async (): Promise<void> => {
    const res = await fetch(o.url, {
      method: 'POST',
      body: o.frame,
      headers: { 'content-type': o.mediaType, 'x-camera-id': 'cam-1' },
    });
    if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
    await res.arrayBuffer();
  };
  const p50 = async (): Promise<number> => {
    const t: number[] = [];
    for (let i = 0; i < o.requests; i++) {
      const s = performance.now();
      await post();
      t.push(performance.now() - s);
    }
    return median(t);
  };
  const throughput = async (): Promise<number> => {
    let n = 0;
    const end = performance.now() + o.seconds * 1000;
    await Promise.all(
      Array.from({ length: o.clients }, async () => {
        while (performance.now() < end) {
          await post();
          n++;
        }
      }),
    );
    return n / o.seconds;
  };
  const rows: AbRow[] = [];
  for (let i = 0; i < 20; i++) await post(); // warm-up
  for (let round = 1; round <= o.rounds; round++) {
    for (const on of round % 2 ? [false, true] : [true, false]) {
      await o.apply(on);
      const p = await p50();
      const fps = await throughput();
      await o.settle?.();
      rows.push({
        round,
        setting: on ? 'on' : 'off',
        p50Ms: Math.round(p * 1000) / 1000,
        framesPerSec: Math.round(fps * 10) / 10,
        ...(await o.probe?.()),
      });
      console.log(JSON.stringify(rows.at(-1)));
    }
  }
  const figure = (k: 'p50Ms' | 'framesPerSec') => {
    const of = (s: 'on' | 'off') => rows.filter((r) => r.setting === s).map((r) => r[k]);
    const spread = (xs: number[]) =>
      Math.round(((Math.max(...xs) - Math.min(...xs)) / median(xs)) * 1000) / 1000;
    const roundRatios = Array.from({ length: o.rounds }, (_, i) => {
      const pick = (s: 'on' | 'off') => rows.find((r) => r.round === i + 1 && r.setting === s)![k];
      return Math.round((pick('on') / pick('off')) * 1000) / 1000;
    });
    return {
      off: median(of('off')),
      on: median(of('on')),
      ratioOnOff: Math.round((median(of('on')) / median(of('off'))) * 1000) / 1000,
      pairedRatio: median(roundRatios),
      roundRatios,
      spreadOff: spread(of('off')),
      spreadOn: spread(of('on')),
    };
  };
  return { p50Ms: figure('p50Ms'), framesPerSec: figure('framesPerSec'), rows };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** The phase sizes of an A/B bench, from `--rounds --requests --seconds --clients`. */
export interface AbArgs {
  rounds: number;
  requests: number;
  seconds: number;
  clients: number;
  /** The command line that reproduces the run, for the results file. */
  command: string;
}

export function abArgs(script: string, defaults: Omit<AbArgs, 'command'>): AbArgs {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: String(defaults.rounds) },
      requests: { type: 'string', default: String(defaults.requests) },
      seconds: { type: 'string', default: String(defaults.seconds) },
      clients: { type: 'string', default: String(defaults.clients) },
    },
  });
  const n = {
    rounds: Number(values.rounds),
    requests: Number(values.requests),
    seconds: Number(values.seconds),
    clients: Number(values.clients),
  };
  return {
    ...n,
    command: `node --import tsx ${script} --rounds ${n.rounds} --requests ${n.requests} --seconds ${n.seconds} --clients ${n.clients}`,
  };
}

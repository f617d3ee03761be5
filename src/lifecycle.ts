import type { Logger } from 'pino';

/**
 * The contract of every long-lived part of the daemon (docs/architecture.md, "Start and stop"):
 * `start(signal)` brings it up and should return promptly once `signal` aborts; `stop()` takes it
 * down, is idempotent, and may be called after a start that failed or was aborted.
 */
export interface Component {
  readonly name: string;
  start(signal: AbortSignal): Promise<void> | void;
  stop(): Promise<void> | void;
}

/** A component from two functions; `stop` is made idempotent (the first call's promise is kept). */
export function component(
  name: string,
  start: (signal: AbortSignal) => Promise<void> | void,
  stop: () => Promise<void> | void = () => undefined,
): Component {
  let stopping: Promise<void> | undefined;
  return {
    name,
    start,
    stop: () => (stopping ??= Promise.resolve().then(stop)),
  };
}

/**
 * Starts an ordered list of components and stops them in reverse. A start that throws aborts the
 * rest of the start-up (and rethrows); stop() aborts a start in progress, waits for the step
 * that was starting to return, then stops every component that began to start, in reverse order,
 * logging a failing step and going on with the next. Both are idempotent.
 */
export class Lifecycle {
  private readonly controller = new AbortController();
  private readonly begun: Component[] = [];
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly components: readonly Component[],
    private readonly logger: Logger,
  ) {}

  /** True once stop() was called: a start in progress opens nothing more. */
  get stopped(): boolean {
    return this.controller.signal.aborted;
  }

  start(): Promise<void> {
    this.starting ??= (async () => {
      const { signal } = this.controller;
      for (const c of this.components) {
        if (signal.aborted) return;
        this.begun.push(c);
        const started = performance.now();
        await c.start(signal);
        this.logger.debug(
          { component: 'app', step: c.name, durationMs: Math.round(performance.now() - started) },
          'start step done',
        );
      }
    })();
    return this.starting;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort();
      // The step that was starting returns promptly once aborted; its failure is start()'s to report.
      await this.starting?.catch(() => undefined);
      for (const c of [...this.begun].reverse()) {
        const started = performance.now();
        try {
          await c.stop();
          this.logger.info(
            { component: 'app', step: c.name, durationMs: Math.round(performance.now() - started) },
            'stop step done',
          );
        } catch (err) {
          this.logger.error({ component: 'app', step: c.name, err }, 'stop step failed');
        }
      }
    })();
    return this.stopping;
  }
}

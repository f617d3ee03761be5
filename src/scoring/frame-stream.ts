import type { Logger } from 'pino';

/** A subscriber's handler; a returned promise holds back only that subscriber's next item. */
export type FrameHandler<T> = (item: T) => void | Promise<void>;

export interface SubscribeOptions {
  /** Items a subscriber may fall behind by; beyond it its oldest waiting item is dropped. */
  maxPending: number;
  /** Bytes (as `sizeOf` counts them) a subscriber may hold waiting; beyond it the oldest go. */
  maxPendingBytes: number;
}

export interface FrameStreamOptions<T> {
  logger: Logger;
  /** The bytes an item keeps alive while it waits (the frame body); bounds a stalled subscriber. */
  sizeOf: (item: T) => number;
  /** Told when a subscriber's waiting item is dropped because it fell behind. */
  onDropped?: (subscriber: string) => void;
  /** Told when a subscriber's handler threw or rejected. */
  onFailed?: (subscriber: string) => void;
}

interface Subscription<T> {
  name: string;
  handler: FrameHandler<T>;
  opts: SubscribeOptions;
  queue: T[];
  bytes: number;
  running: boolean;
  closed: boolean;
  /** Resolves the `idle()` waiters once the queue is empty and no handler runs. */
  idleWaiters: (() => void)[];
}

const DEFAULT_SUBSCRIBE: SubscribeOptions = { maxPending: 256, maxPendingBytes: 64 * 1024 * 1024 };

/**
 * What happens after a frame is scored, as a stream: the engine publishes each scored frame, and
 * any number of subscribers (telemetry, capture, drift, shadow, console) receive them in order,
 * each at its own pace (docs/architecture.md, "The path of a frame").
 *
 * Publishing never waits and never throws: each subscriber has its own bounded queue, drained on
 * a later turn of the event loop, so a subscriber that throws, stalls or falls behind never
 * delays or changes an answer. A subscriber that falls behind loses its oldest waiting items
 * (counted through `onDropped`), never another subscriber's.
 */
export class FrameStream<T> {
  private readonly subs: Subscription<T>[] = [];

  constructor(private readonly opts: FrameStreamOptions<T>) {}

  /** Subscriber names, in subscription order. */
  get subscribers(): string[] {
    return this.subs.map((s) => s.name);
  }

  /** Adds a subscriber; returns a function that removes it (waiting items are discarded). */
  subscribe(name: string, handler: FrameHandler<T>, opts: Partial<SubscribeOptions> = {}): () => void {
    const sub: Subscription<T> = {
      name,
      handler,
      opts: { ...DEFAULT_SUBSCRIBE, ...opts },
      queue: [],
      bytes: 0,
      running: false,
      closed: false,
      idleWaiters: [],
    };
    this.subs.push(sub);
    return () => {
      sub.closed = true;
      sub.queue.length = 0;
      sub.bytes = 0;
      const i = this.subs.indexOf(sub);
      if (i >= 0) this.subs.splice(i, 1);
      for (const w of sub.idleWaiters.splice(0)) w();
    };
  }

  /** Hands `item` to every subscriber. Returns at once. */
  publish(item: T): void {
    if (this.subs.length === 0) return;
    const size = this.opts.sizeOf(item);
    for (const sub of this.subs) {
      sub.queue.push(item);
      sub.bytes += size;
      while (
        sub.queue.length > 1 &&
        (sub.queue.length > sub.opts.maxPending || sub.bytes > sub.opts.maxPendingBytes)
      ) {
        sub.bytes -= this.opts.sizeOf(sub.queue.shift()!);
        this.opts.onDropped?.(sub.name);
      }
      if (!sub.running) {
        sub.running = true;
        setImmediate(() => void this.drain(sub));
      }
    }
  }

  /** Resolves once every subscriber has handled what was published so far (tests, shutdown). */
  idle(): Promise<void> {
    return Promise.all(
      this.subs.map((sub) =>
        sub.running || sub.queue.length > 0
          ? new Promise<void>((resolve) => sub.idleWaiters.push(resolve))
          : Promise.resolve(),
      ),
    ).then(() => undefined);
  }

  private async drain(sub: Subscription<T>): Promise<void> {
    while (!sub.closed && sub.queue.length > 0) {
      const item = sub.queue.shift()!;
      sub.bytes -= this.opts.sizeOf(item);
      try {
        await sub.handler(item);
      } catch (err) {
        this.opts.onFailed?.(sub.name);
        this.opts.logger.warn({ component: 'frame-stream', subscriber: sub.name, err }, 'subscriber failed');
      }
    }
    sub.running = false;
    for (const w of sub.idleWaiters.splice(0)) w();
  }
}

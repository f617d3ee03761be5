import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Message, ModuleClient, Twin } from 'azure-iot-device';
import { EdgeError, ErrorCodes } from '../errors.js';
import { Waker } from '../util/waker.js';
import { sessionAwareMqtt, type TransportCtor } from './session-aware-mqtt.js';

/** A direct method handler: resolves with the status and payload the caller receives. */
export type MethodHandler = (payload: unknown) => Promise<{ status: number; payload: unknown }>;

export interface IotHubConnectionOptions {
  /**
   * Creates a fresh, unopened client (fromEnvironment or fromConnectionString) on `transport`,
   * the SDK's MQTT transport with its CONNACKs reported to this connection.
   */
  createClient: (transport: TransportCtor) => Promise<ModuleClient>;
  /** Extra CA (PEM) for a gateway; passed on every setOptions since setOptions replaces all options. */
  ca?: string | undefined;
  logger: Logger;
  /** Deadline for twin GET/PATCH, method answers and open(). The SDK itself has none for twin requests. */
  requestTimeoutMs: number;
  /** Reconnect backoff: first delay and cap, ms; jittered. */
  backoffInitialMs: number;
  backoffMaxMs: number;
  methods: Record<string, MethodHandler>;
  /**
   * Full twin GET this often while connected. Reconnects the SDK makes on its own (SAS token
   * renewal) emit no event, and a desired change made during one is never delivered.
   */
  refreshIntervalMs: number;
}

interface Events {
  /** The whole desired document (with $version) after a GET or a patch. */
  desired: [doc: Record<string, unknown>];
  connected: [];
  disconnected: [reason: string];
}

export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'stopped';

/** Rejects with IOTHUB_TIMEOUT when `p` does not settle within `ms`. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new EdgeError(ErrorCodes.IOTHUB_TIMEOUT, `${what} got no answer within ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Settles as `p` does, or rejects with NOT_READY once `signal` aborts: a request on a client that
 * has been dropped can never be answered, and the caller should not wait for its deadline.
 */
function unlessAborted<T>(p: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  let onAbort = (): void => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () =>
      reject(new EdgeError(ErrorCodes.NOT_READY, `${what} abandoned: the IoT Hub client was dropped`));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([p, aborted]).finally(() => signal.removeEventListener('abort', onAbort));
}

/**
 * The module's IoT Hub (edgeHub) connection, with the SDK traps the README lists handled here:
 * - the first open() fails fast and is not retried by the SDK: we retry with backoff, forever,
 *   while the daemon already serves frames;
 * - twin requests have no timeout: every one has a deadline;
 * - desired changes made while disconnected are never delivered: after every (re)connect we GET the
 *   full twin and hand the whole desired document to the reconciler, which compares $version;
 * - after a broker restart with an empty session the twin subscriptions are gone and the SDK
 *   does not subscribe again (azure-iot-sdk-node#1255): a reconnect whose CONNACK says the
 *   session is gone makes us drop and recreate the client at once; a twin request that times
 *   out does too, should the CONNACK ever not be readable;
 * - setOptions() replaces all options: `ca` is passed each time.
 * Twin requests and sends pending on a client that is dropped fail at once with NOT_READY, so
 * that reported properties and telemetry go out on the new client without waiting for the old
 * one's deadline (a send abandoned so may still have arrived: delivery is at least once).
 */
export class IotHubConnection extends EventEmitter<Events> {
  private client: ModuleClient | undefined;
  private twin: Twin | undefined;
  /** Aborted when the current client is dropped; its pending requests then fail at once. */
  private dropped = new AbortController();
  private stateValue: ConnectionState = 'disconnected';
  private stopped = false;
  private readonly waker = new Waker();
  private loop: Promise<void> | undefined;
  private generation = 0;
  private refreshTimer: NodeJS.Timeout | undefined;
  private connackUnreadableLogged = false;

  constructor(private readonly opts: IotHubConnectionOptions) {
    super();
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  private setState(s: ConnectionState, reason?: string): void {
    if (this.stateValue === s) return;
    this.stateValue = s;
    this.opts.logger.info({ component: 'iothub', state: s, reason }, 'IoT Hub connection state');
    if (s === 'connected') this.emit('connected');
    if (s === 'disconnected') this.emit('disconnected', reason ?? 'unknown');
  }

  /** Starts connecting in the background; never throws. */
  start(): void {
    this.loop ??= this.run();
  }

  private async run(): Promise<void> {
    let delay = this.opts.backoffInitialMs;
    while (!this.stopped) {
      if (this.stateValue !== 'connected') {
        try {
          await this.connectOnce();
          delay = this.opts.backoffInitialMs;
        } catch (err) {
          this.opts.logger.warn(
            { component: 'iothub', err, retryInMs: Math.round(delay) },
            'IoT Hub connection failed',
          );
          await this.teardown();
          this.setState('disconnected', err instanceof Error ? err.message : String(err));
          await this.sleep(delay * (0.5 + Math.random() * 0.5));
          delay = Math.min(delay * 2, this.opts.backoffMaxMs);
          continue;
        }
      }
      if (this.stopped) break;
      // Connected: wait until something asks for a reconnect (disconnect, twin timeout) or stop.
      await this.waker.sleep();
    }
  }

  private sleep(ms: number): Promise<void> {
    return this.waker.sleep(ms);
  }

  /** Drops the client and reconnects from scratch (used when the twin stops answering). */
  private recreate(reason: string): void {
    if (this.stopped) return;
    this.opts.logger.warn({ component: 'iothub', reason }, 'recreating the IoT Hub client');
    void this.teardown().then(() => {
      this.setState('disconnected', reason);
      this.waker.wake();
    });
  }

  private async connectOnce(): Promise<void> {
    this.setState('connecting');
    const gen = ++this.generation;
    this.dropped = new AbortController();
    const { requestTimeoutMs, logger } = this.opts;
    const client = await this.opts.createClient(sessionAwareMqtt((present) => this.onConnack(gen, present)));
    this.client = client;
    client.on('error', (err: Error) => logger.warn({ component: 'iothub', err }, 'IoT Hub client error'));
    client.on('disconnect', () => {
      if (gen === this.generation) this.recreate('client disconnected');
    });
    client.on('connect', () => {
      // The SDK reconnected by itself: desired changes made meanwhile were not delivered. (After
      // a CONNACK without a session this client is already retired and the generation differs.)
      if (gen === this.generation && this.stateValue === 'connected') void this.refreshTwin('reconnected');
    });
    if (this.opts.ca)
      await withDeadline(client.setOptions({ ca: this.opts.ca }), requestTimeoutMs, 'setOptions');
    await withDeadline(client.open(), requestTimeoutMs, 'open');
    for (const [name, handler] of Object.entries(this.opts.methods)) {
      client.onMethod(name, (request, response) => {
        const answer = (status: number, payload: unknown): void => {
          response!.send(status, payload, (err?: Error) => {
            if (err) logger.warn({ component: 'iothub', method: name, err }, 'method answer failed');
          });
        };
        handler(request!.payload).then(
          (r) => answer(r.status, r.payload),
          (err: unknown) => {
            const e = err instanceof EdgeError ? err : new EdgeError(ErrorCodes.INTERNAL, 'method failed');
            answer(e.httpStatus, { error: { code: e.code, message: e.message } });
          },
        );
      });
    }
    const twin = await withDeadline(client.getTwin(), requestTimeoutMs, 'twin GET');
    this.twin = twin;
    twin.on('properties.desired', () => {
      if (gen === this.generation) this.emit('desired', { ...twin.properties.desired });
    });
    if (this.stopped) return;
    this.setState('connected');
    this.emit('desired', { ...twin.properties.desired });
    this.refreshTimer = setInterval(() => {
      if (gen === this.generation && this.stateValue === 'connected') void this.refreshTwin('periodic');
    }, this.opts.refreshIntervalMs);
    this.refreshTimer.unref();
  }

  /**
   * A CONNACK of the client of generation `gen`, ahead of its 'connect' event. Without a session
   * while we are connected (an SDK reconnect, or its SAS-renewal reconnect) the broker has forgotten
   * the twin subscriptions and the SDK will not make them again (azure-iot-sdk-node#1255): twin
   * responses and desired patches would go nowhere until a twin request timed out. A new client
   * subscribes and reads the whole twin, so it is made at once. The first CONNACK of a client
   * (its open(), while connecting) precedes every subscription and says nothing.
   */
  private onConnack(gen: number, sessionPresent: boolean | undefined): void {
    if (gen !== this.generation) return;
    if (sessionPresent === undefined) {
      if (!this.connackUnreadableLogged) {
        this.connackUnreadableLogged = true;
        this.opts.logger.warn(
          { component: 'iothub' },
          'the IoT Hub SDK did not hand over the CONNACK: a lost session is noticed only when a twin request times out',
        );
      }
      return;
    }
    if (sessionPresent || this.stateValue !== 'connected') return;
    // Retire the client now, so its 'connect' (next) sends no twin GET that cannot be answered;
    // close it once the SDK has finished handling this CONNACK, not from inside its callback.
    this.generation++;
    setImmediate(() => this.recreate('reconnected without a session: twin subscriptions lost'));
  }

  /** Full twin GET and reconcile; a timeout means the subscriptions are gone: recreate. */
  async refreshTwin(reason: string): Promise<void> {
    const twin = this.twin;
    if (!twin) return;
    const gen = this.generation;
    try {
      await unlessAborted(
        withDeadline(twin.get(), this.opts.requestTimeoutMs, 'twin GET'),
        this.dropped.signal,
        'twin GET',
      );
      if (reason !== 'periodic') this.opts.logger.info({ component: 'iothub', reason }, 'twin refreshed');
      this.emit('desired', { ...twin.properties.desired });
    } catch (err) {
      // Only the client that failed is recreated, not one made since.
      if (gen === this.generation) {
        this.recreate(`twin GET failed after ${reason}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  /** Sends a reported-properties patch; throws IOTHUB_TIMEOUT or NOT_READY when it cannot. */
  async updateReported(patch: Record<string, unknown>): Promise<void> {
    const twin = this.twin;
    if (!twin || this.stateValue !== 'connected') {
      throw new EdgeError(ErrorCodes.NOT_READY, 'not connected to IoT Hub');
    }
    // The SDK types `reported` as a plain dictionary; at run time it carries update(patch, done).
    const reported = twin.properties.reported as {
      update: (patch: Record<string, unknown>, done: (err?: Error) => void) => void;
    };
    const sent = new Promise<void>((resolve, reject) => {
      reported.update(patch, (err?: Error) => (err ? reject(err) : resolve()));
    });
    const gen = this.generation;
    try {
      await unlessAborted(
        withDeadline(sent, this.opts.requestTimeoutMs, 'reported PATCH'),
        this.dropped.signal,
        'reported PATCH',
      );
    } catch (err) {
      const timedOut = err instanceof EdgeError && err.code === ErrorCodes.IOTHUB_TIMEOUT;
      if (timedOut && gen === this.generation) this.recreate(err.message);
      throw err;
    }
  }

  /** Sends one message on a module output; the SDK retries for up to 240 s, so we bound it. */
  async sendOutputEvent(output: string, message: Message, timeoutMs: number): Promise<void> {
    const client = this.client;
    if (!client || this.stateValue !== 'connected') {
      throw new EdgeError(ErrorCodes.NOT_READY, 'not connected to IoT Hub');
    }
    const what = `send to output ${output}`;
    await unlessAborted(
      withDeadline(client.sendOutputEvent(output, message), timeoutMs, what),
      this.dropped.signal,
      what,
    );
  }

  private async teardown(): Promise<void> {
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
    const client = this.client;
    this.client = undefined;
    this.dropped.abort();
    this.twin?.removeAllListeners();
    this.twin = undefined;
    this.generation++;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', () => undefined);
    try {
      await withDeadline(client.close(), 5000, 'close');
    } catch {
      // a client that cannot close cleanly is dropped anyway
    }
  }

  /** Closes the connection; idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.waker.wake();
    await this.loop;
    await this.teardown();
    this.stateValue = 'stopped';
  }
}

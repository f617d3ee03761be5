import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Aedes } from 'aedes';
import type { AuthenticateError, Client, PublishPacket } from 'aedes';
import { testPki, type TestPki } from './test-ca.js';

/*
 * An IoT Hub / edgeHub stand-in that the real azure-iot-device-mqtt client talks to: an aedes
 * MQTT broker behind TLS on 127.0.0.1 (ephemeral port), the module twin, direct methods and
 * output-event capture on top of it, plus a fake IoT Edge workload API on a unix socket so
 * `ModuleClient.fromEnvironment(Mqtt)` runs unmodified. Faults are injected on the wire only.
 *
 * Wire facts this relies on (azure-iot-device 1.18 / azure-iot-device-mqtt 1.16):
 * - CONNECT: MQTT 3.1.1, clean=false, clientId `{d}/{m}`, username
 *   `{hub}/{d}/{m}/?api-version=…&DeviceClientType=…`, password
 *   `SharedAccessSignature sr={enc(hub/devices/d/modules/m)}&sig={enc(b64 hmac)}&se={epoch s}`,
 *   signed over `{sr as sent}\n{se}` with the base64-decoded module key.
 * - Twin requests and method calls are QoS 0; telemetry is QoS 1. The SDK subscribes to
 *   `$iothub/twin/res/#` before its first twin request, `$iothub/twin/PATCH/properties/desired/#`
 *   when a desired listener is added and `$iothub/methods/POST/#` on `onMethod`. Like the hub,
 *   this emulator only delivers to a connection that holds a matching subscription.
 * - Output events: `devices/{d}/modules/{m}/messages/events/{bag}/` where the bag is
 *   `querystring.stringify` of the system properties (`%24.on=…&%24.mid=…&%24.ct=…&%24.ce=…`)
 *   followed by `&`-joined `encodeURIComponent(key)=encodeURIComponent(value)` user properties.
 */

/** A JSON object as kept in the twin. */
export type JsonObject = { [key: string]: unknown };

export interface EmulatorOptions {
  /** IOTEDGE_IOTHUBHOSTNAME; only its spelling matters (it is signed into the SAS token). */
  hubHostName?: string;
  deviceId?: string;
  moduleId?: string;
  generationId?: string;
  /** Base64 module key; a random 32-byte key by default. */
  moduleKey?: string;
  /** Initial desired properties (without `$version`; it starts at 1). */
  desired?: JsonObject;
  /** Initial reported properties (without `$version`; it starts at 1). */
  reported?: JsonObject;
}

/** One CONNECT the broker saw, accepted or not. */
export interface ConnectEvent {
  at: number;
  clientId: string;
  username: string;
  clean: boolean;
  accepted: boolean;
  /** The CONNACK return code (0 accepted, 2 identifier rejected, 3 unavailable, 4 bad username, 5 not authorized). */
  returnCode: number;
  /** Why it was refused, for assertion messages. */
  reason?: string;
}

/** A twin request the module published. `answer` says what became of the response. */
export interface TwinRequest {
  at: number;
  kind: 'get' | 'patch-reported';
  rid: string;
  clientId: string;
  body?: unknown;
  /** `delivered`; `no-subscription` (the client is not subscribed to `$iothub/twin/res/#`); `withheld` (twin unresponsive). */
  answer: 'delivered' | 'no-subscription' | 'withheld';
  status?: number;
}

/** One output event (or device-to-cloud message) as captured from the wire. */
export interface CapturedMessage {
  at: number;
  clientId: string;
  topic: string;
  /** `$.on`; undefined for plain `sendEvent`. */
  output: string | undefined;
  /** User (application) properties, decoded. */
  properties: Record<string, string>;
  /** Every `$.…` system property, decoded, keyed without the `$.` prefix (`on`, `mid`, `ct`, …). */
  systemProperties: Record<string, string>;
  contentType: string | undefined;
  contentEncoding: string | undefined;
  messageId: string | undefined;
  correlationId: string | undefined;
  body: Buffer;
  bytes: number;
  qos: number;
  /** MQTT DUP flag (the SDK's own retries are new publishes and do not set it). */
  dup: boolean;
  /** True when the PUBACK for this publish was withheld by the fault switch. */
  pubackWithheld: boolean;
}

export interface MethodResult {
  status: number;
  /** The response body parsed as JSON, the raw text when it is not JSON, null when empty. */
  payload: unknown;
}

export interface DesiredUpdate {
  version: number;
  /** Client ids the patch was written to; empty when nobody connected was subscribed. */
  deliveredTo: string[];
}

const API_VERSION = '2018-06-28';

/** Starts an emulator; `close()` it after the test. */
export async function startIotHubEmulator(opts: EmulatorOptions = {}): Promise<IotHubEmulator> {
  const emulator = new IotHubEmulator(await testPki(), opts);
  try {
    await emulator.start();
  } catch (err) {
    await emulator.close();
    throw err;
  }
  return emulator;
}

interface Waiter {
  probe: () => boolean;
  fail: (err: Error) => void;
}

export class IotHubEmulator {
  readonly hubHostName: string;
  readonly deviceId: string;
  readonly moduleId: string;
  readonly generationId: string;
  readonly moduleKey: string;
  /** The CA that signed the broker's certificate (PEM). */
  readonly caCert: string;
  /** A CA that did not (PEM), for certificate-mismatch tests. */
  readonly otherCaCert: string;

  private readonly pki: TestPki;
  private dir = '';
  private brokerPort = 0;
  private broker: Aedes | undefined;
  private server: tls.Server | undefined;
  /**
   * TLS sockets (destroying one marks it destroyed at once, which liveClients relies on) and the
   * raw TCP ones beneath, so that a connection still in its handshake cannot hold up stop().
   */
  private readonly sockets = new Set<Socket>();
  private readonly clients = new Set<Client>();
  private workload: http.Server | undefined;
  private trustBundle: string;

  private desiredDoc: JsonObject;
  private reportedDoc: JsonObject;
  private desiredVersion = 1;
  private reportedVersion = 1;

  private readonly connectLog: ConnectEvent[] = [];
  private readonly twinLog: TwinRequest[] = [];
  private readonly captured: CapturedMessage[] = [];
  private readonly workloadLog: { method: string; path: string; status: number }[] = [];

  private readonly pendingMethods = new Map<string, (result: MethodResult) => void>();
  private readonly waiters = new Set<Waiter>();
  private nextRid = 1;

  private acceptConnections = true;
  private refuseCode = 3;
  private twinResponsive = true;
  private pubackWithheld = false;
  private readonly pubackReleasers = new Map<Socket, () => void>();
  private unresponsive = false;
  private closing: Promise<void> | undefined;

  constructor(pki: TestPki, opts: EmulatorOptions = {}) {
    this.pki = pki;
    this.hubHostName = opts.hubHostName ?? 'edge-scorer-test.azure-devices.net';
    this.deviceId = opts.deviceId ?? 'aoi-line-1';
    this.moduleId = opts.moduleId ?? 'edge-scorer';
    this.generationId = opts.generationId ?? '638000000000000000';
    this.moduleKey = opts.moduleKey ?? randomBytes(32).toString('base64');
    this.caCert = pki.caCert;
    this.otherCaCert = pki.otherCaCert;
    this.trustBundle = pki.caCert;
    this.desiredDoc = structuredClone(opts.desired ?? {});
    this.reportedDoc = structuredClone(opts.reported ?? {});
  }

  async start(): Promise<void> {
    this.dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-iothub-'));
    await writeFile(this.caFile, this.pki.caCert);
    this.broker = await this.createBroker();
    await this.listen(0);
    this.workload = http.createServer((req, res) => this.onWorkloadRequest(req, res));
    await new Promise<void>((resolve, reject) => {
      this.workload?.once('error', reject).listen(this.workloadSocket, resolve);
    });
  }

  /** The broker's TCP port; stays the same across `stop()` / `restart()`. */
  get port(): number {
    return this.brokerPort;
  }

  get workloadSocket(): string {
    return path.join(this.dir, 'workload.sock');
  }

  /** The CA certificate as a file (for `EdgeModuleCACertificateFile` or `setOptions({ ca: path })`). */
  get caFile(): string {
    return path.join(this.dir, 'ca.pem');
  }

  /**
   * The IoT Edge environment `ModuleClient.fromEnvironment(Mqtt)` reads. It takes this path only
   * when `EdgeHubConnectionString` and `IotHubConnectionString` are both unset.
   */
  env(): Record<string, string> {
    return {
      IOTEDGE_WORKLOADURI: `unix://${this.workloadSocket}`,
      IOTEDGE_DEVICEID: this.deviceId,
      IOTEDGE_MODULEID: this.moduleId,
      IOTEDGE_MODULEGENERATIONID: this.generationId,
      IOTEDGE_IOTHUBHOSTNAME: this.hubHostName,
      IOTEDGE_AUTHSCHEME: 'sasToken',
      IOTEDGE_GATEWAYHOSTNAME: `localhost:${this.brokerPort}`,
    };
  }

  /**
   * A module connection string for `ModuleClient.fromConnectionString(cs, Mqtt)`. The SDK dials
   * `mqtts://{GatewayHostName}`, so a `localhost:PORT` gateway works; the client still needs
   * the CA: `setOptions({ ca })`, or `fromEnvironment` with `EdgeHubConnectionString` plus
   * `EdgeModuleCACertificateFile` (see `connectionStringEnv()`).
   */
  connectionString(opts: { key?: string } = {}): string {
    return (
      `HostName=${this.hubHostName};DeviceId=${this.deviceId};ModuleId=${this.moduleId};` +
      `SharedAccessKey=${opts.key ?? this.moduleKey};GatewayHostName=localhost:${this.brokerPort}`
    );
  }

  /** The environment for `fromEnvironment`'s connection-string path (what edgeHub dev tooling sets). */
  connectionStringEnv(opts: { key?: string } = {}): Record<string, string> {
    return { EdgeHubConnectionString: this.connectionString(opts), EdgeModuleCACertificateFile: this.caFile };
  }

  // ---------------------------------------------------------------- twin

  /** The desired document, `$version` included. */
  desired(): JsonObject {
    return { ...structuredClone(this.desiredDoc), $version: this.desiredVersion };
  }

  /** The reported document, `$version` included. */
  reported(): JsonObject {
    return { ...structuredClone(this.reportedDoc), $version: this.reportedVersion };
  }

  /**
   * Merges `patch` into desired (JSON merge patch: null deletes), bumps `$version` and writes
   * the patch to every connected client subscribed to desired updates — now or never, as on
   * the hub: a client that is offline or unsubscribed misses it and must GET the twin.
   */
  updateDesired(patch: JsonObject): DesiredUpdate {
    this.desiredDoc = mergePatch(this.desiredDoc, patch);
    const version = ++this.desiredVersion;
    const payload = Buffer.from(JSON.stringify({ ...patch, $version: version }));
    const topic = `$iothub/twin/PATCH/properties/desired/?$version=${version}`;
    const deliveredTo: string[] = [];
    for (const client of this.liveClients()) {
      if (this.sendTo(client, topic, payload)) deliveredTo.push(client.id);
    }
    return { version, deliveredTo };
  }

  /** Resolves with the reported document once `predicate` holds for it. */
  waitForReported(predicate: (reported: JsonObject) => boolean, timeoutMs = 10_000): Promise<JsonObject> {
    return this.waitFor(
      () => (predicate(this.reported()) ? this.reported() : undefined),
      timeoutMs,
      () => `reported properties to match; last: ${JSON.stringify(this.reported())}`,
    );
  }

  twinRequests(): TwinRequest[] {
    return this.twinLog.map((r) => ({ ...r }));
  }

  /** Resolves once `predicate` holds for some twin request (past or future). */
  waitForTwinRequest(predicate: (req: TwinRequest) => boolean, timeoutMs = 10_000): Promise<TwinRequest> {
    return this.waitFor(
      () => this.twinRequests().find(predicate),
      timeoutMs,
      () => 'a matching twin request',
    );
  }

  // ---------------------------------------------------------------- methods

  /**
   * Invokes a direct method the way the service would. Hub-like failures resolve rather than
   * reject: 404 (errorCode 404103) when no connected client subscribes to methods, 504
   * (errorCode 504101) when the module does not answer within `timeoutMs`.
   */
  invokeMethod(name: string, payload: unknown, timeoutMs = 10_000): Promise<MethodResult> {
    const rid = String(this.nextRid++);
    const topic = `$iothub/methods/POST/${name}/?$rid=${rid}`;
    const body = Buffer.from(JSON.stringify(payload ?? null));
    const target = this.liveClients().find((c) => subscribed(c, topic));
    if (!target) {
      return Promise.resolve({
        status: 404,
        payload: { errorCode: 404103, message: 'Timed out waiting for device to connect.' },
      });
    }
    return new Promise<MethodResult>((resolve) => {
      const timer = setTimeout(() => {
        this.pendingMethods.delete(rid);
        resolve({
          status: 504,
          payload: { errorCode: 504101, message: 'Timed out waiting for the response from device.' },
        });
      }, timeoutMs);
      this.pendingMethods.set(rid, (result) => {
        clearTimeout(timer);
        this.pendingMethods.delete(rid);
        resolve(result);
      });
      this.sendTo(target, topic, body);
    });
  }

  // ---------------------------------------------------------------- messages

  /** Captured output events, in arrival order; only those of `output` when given. */
  messages(output?: string): CapturedMessage[] {
    return this.captured.filter((m) => output === undefined || m.output === output);
  }

  /**
   * With a number n: resolves with all captured messages once there are at least n. With a
   * predicate: resolves with the matching messages once at least `minCount` match.
   */
  waitForMessages(
    match: number | ((msg: CapturedMessage) => boolean),
    timeoutMs = 10_000,
    minCount = 1,
  ): Promise<CapturedMessage[]> {
    const select = typeof match === 'number' ? () => this.messages() : () => this.captured.filter(match);
    const needed = typeof match === 'number' ? match : minCount;
    return this.waitFor(
      () => {
        const found = select();
        return found.length >= needed ? found : undefined;
      },
      timeoutMs,
      () => `${needed} message(s); have ${select().length} of ${this.captured.length} captured`,
    );
  }

  clearMessages(): void {
    this.captured.length = 0;
  }

  // ---------------------------------------------------------------- connections

  /**
   * Every CONNECT the broker read, in order, recorded when it was judged (before the CONNACK
   * goes out); survives restarts.
   */
  connects(): readonly ConnectEvent[] {
    return [...this.connectLog];
  }

  /** Resolves with the first connect event (index ≥ `fromIndex`) that satisfies `predicate`. */
  waitForConnect(
    predicate: (event: ConnectEvent) => boolean = (e) => e.accepted,
    timeoutMs = 10_000,
    fromIndex = 0,
  ): Promise<ConnectEvent> {
    return this.waitFor(
      () => this.connectLog.slice(fromIndex).find(predicate),
      timeoutMs,
      () => `a matching CONNECT; seen ${JSON.stringify(this.connectLog.slice(fromIndex))}`,
    );
  }

  /** Client ids of the MQTT sessions that are connected now. */
  connectedClients(): string[] {
    return this.liveClients().map((c) => c.id);
  }

  /** Topic filters that connected clients hold now (restored persistent ones included). */
  subscriptions(): string[] {
    return this.liveClients().flatMap((c) => Object.keys(subscriptionsOf(c)));
  }

  /** Resolves once a connected client holds exactly the topic filter `filter`. */
  waitForSubscription(filter: string, timeoutMs = 10_000): Promise<void> {
    return this.waitFor(
      () => (this.subscriptions().includes(filter) ? true : undefined),
      timeoutMs,
      () => `subscription ${filter}; have ${JSON.stringify(this.subscriptions())}`,
    ).then(() => undefined);
  }

  /** Requests the workload API answered, e.g. to count token signings. */
  workloadRequests(): readonly { method: string; path: string; status: number }[] {
    return [...this.workloadLog];
  }

  // ---------------------------------------------------------------- faults

  /**
   * While false, refuses every CONNECT with `returnCode`. The SDK retries 3 (server unavailable,
   * its ServiceUnavailableError) for up to 240 s; 2, 4 and 5 fail `open()` at once (UnauthorizedError).
   */
  setAcceptConnections(accept: boolean, returnCode = 3): void {
    this.acceptConnections = accept;
    this.refuseCode = returnCode;
  }

  /** While false, twin GET and reported PATCH requests are swallowed: neither applied nor answered. */
  setTwinResponsive(responsive: boolean): void {
    this.twinResponsive = responsive;
  }

  /**
   * While true, telemetry is captured but its PUBACKs are held back: the SDK waits, retries after
   * 30 s with a new publish (a duplicate), and even `close()` waits for them. Switching it off
   * does not send the held ones; `releasePubacks()` does (a late ack rather than a lost one).
   */
  setPubackWithheld(withheld: boolean): void {
    this.pubackWithheld = withheld;
  }

  /** Sends every held PUBACK on the connections that are still open. */
  releasePubacks(): void {
    for (const release of this.pubackReleasers.values()) release();
  }

  /**
   * While true the broker reads everything and writes nothing — no CONNACK, SUBACK, PINGRESP,
   * PUBACK, twin or method traffic — on every connection, old and new: a hung edgeHub.
   */
  setUnresponsive(unresponsive: boolean): void {
    this.unresponsive = unresponsive;
  }

  /** What the workload API returns as trust bundle from now on (e.g. `otherCaCert`). */
  setTrustBundle(pem: string): void {
    this.trustBundle = pem;
  }

  /** Destroys every client socket; the broker keeps listening and sessions are kept. */
  dropConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Stops listening and drops every connection (ECONNREFUSED until `restart`). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    this.dropConnections();
    await closed;
  }

  /**
   * Listens again on the same port. `keepSessions: false` starts a fresh broker whose
   * persistence has no sessions, so clean=false clients come back without their subscriptions
   * (azure-iot-sdk-node#1255). Twin state and captured messages always survive.
   */
  async restart(opts: { keepSessions: boolean }): Promise<void> {
    if (this.closing) throw new Error('iothub emulator is closed');
    await this.stop();
    if (!opts.keepSessions) {
      const old = this.broker;
      this.broker = undefined;
      if (old) await new Promise<void>((resolve) => old.close(() => resolve()));
      this.broker = await this.createBroker();
    }
    await this.listen(this.brokerPort);
  }

  /** Stops everything and removes the temp dir; pending waits reject, pending methods get 504. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const waiter of [...this.waiters]) waiter.fail(new Error('iothub emulator closed'));
    for (const [rid, settle] of [...this.pendingMethods]) {
      settle({ status: 504, payload: { errorCode: 504101, message: `emulator closed (rid ${rid})` } });
    }
    await this.stop();
    const broker = this.broker;
    this.broker = undefined;
    if (broker) await new Promise<void>((resolve) => broker.close(() => resolve()));
    const workload = this.workload;
    this.workload = undefined;
    if (workload) {
      const closed = new Promise<void>((resolve) => workload.close(() => resolve()));
      workload.closeAllConnections();
      await closed;
    }
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------- broker

  private async createBroker(): Promise<Aedes> {
    const broker = await Aedes.createBroker({
      authenticate: (client, username, password, done) => this.authenticate(client, username, password, done),
      authorizePublish: (client, packet, done) => {
        if (client) this.onClientPublish(client, packet);
        done(null);
      },
    });
    broker.on('clientReady', (client) => {
      this.clients.add(client);
      this.notify();
    });
    broker.on('clientDisconnect', (client) => {
      this.clients.delete(client);
      this.notify();
    });
    broker.on('subscribe', () => this.notify());
    broker.on('unsubscribe', () => this.notify());
    return broker;
  }

  private listen(port: number): Promise<void> {
    const server = tls.createServer({ key: this.pki.serverKey, cert: this.pki.serverCert }, (socket) => {
      const broker = this.broker;
      if (!broker) {
        socket.destroy();
        return;
      }
      this.track(socket);
      socket.on('error', () => undefined); // aedes reports and closes; a reset must not crash the test
      const release = filterOutgoing(socket, (type) => {
        if (this.unresponsive) return 'drop';
        return this.pubackWithheld && type === PUBACK ? 'hold' : 'send';
      });
      this.pubackReleasers.set(socket, release);
      socket.once('close', () => this.pubackReleasers.delete(socket));
      broker.handle(socket);
    });
    server.on('connection', (socket: Socket) => this.track(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        this.brokerPort = (server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const refusal = this.acceptConnections
      ? this.checkCredentials(client.id, username ?? '', password?.toString('utf8') ?? '')
      : { code: this.refuseCode, reason: 'connections refused by fault switch' };
    this.connectLog.push({
      at: Date.now(),
      clientId: client.id,
      username: username ?? '',
      clean: client.clean,
      accepted: refusal === undefined,
      returnCode: refusal?.code ?? 0,
      ...(refusal ? { reason: refusal.reason } : {}),
    });
    this.notify();
    if (!refusal) {
      done(null, true);
      return;
    }
    const error: AuthenticateError = Object.assign(new Error(refusal.reason), { returnCode: refusal.code });
    done(error, false);
  }

  /** Undefined when the module may connect; otherwise the CONNACK code and why. */
  private checkCredentials(
    clientId: string,
    username: string,
    password: string,
  ): { code: number; reason: string } | undefined {
    const identity = `${this.deviceId}/${this.moduleId}`;
    if (clientId !== identity) return { code: 2, reason: `unknown client id ${clientId}` };
    const [userIdentity, query] = splitOnce(username, '/?');
    if (
      userIdentity !== `${this.hubHostName}/${identity}` ||
      !new URLSearchParams(query).has('api-version')
    ) {
      return { code: 4, reason: `bad username ${username}` };
    }
    const sas = parseSas(password);
    if (!sas) return { code: 5, reason: 'password is not a SharedAccessSignature' };
    const resource = `${this.hubHostName}/devices/${this.deviceId}/modules/${this.moduleId}`;
    if (decodeURIComponent(sas.sr).toLowerCase() !== resource.toLowerCase()) {
      return { code: 5, reason: `token for another resource: ${sas.sr}` };
    }
    if (!(Number(sas.se) > Date.now() / 1000)) return { code: 5, reason: `token expired (se=${sas.se})` };
    const expected = createHmac('sha256', Buffer.from(this.moduleKey, 'base64'))
      .update(`${sas.sr}\n${sas.se}`)
      .digest();
    const given = Buffer.from(decodeURIComponent(sas.sig), 'base64');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return { code: 5, reason: 'signature does not match the module key' };
    }
    return undefined;
  }

  private onClientPublish(client: Client, packet: PublishPacket): void {
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    if (topic.startsWith('$iothub/twin/')) {
      this.onTwinRequest(client, topic, payload);
    } else if (topic.startsWith('$iothub/methods/res/')) {
      this.onMethodResponse(topic, payload);
    } else {
      const message = parseEventTopic(topic, this.deviceId, this.moduleId);
      if (message) {
        this.captured.push({
          ...message,
          at: Date.now(),
          clientId: client.id,
          topic,
          body: payload,
          bytes: payload.length,
          qos: packet.qos,
          dup: packet.dup,
          pubackWithheld: this.pubackWithheld || this.unresponsive,
        });
        this.notify();
      }
    }
  }

  private onTwinRequest(client: Client, topic: string, body: Buffer): void {
    const [resource, query] = splitOnce(topic.slice('$iothub/twin/'.length), '?');
    const rid = new URLSearchParams(query).get('$rid') ?? '';
    const kind =
      resource === 'GET/' ? 'get' : resource === 'PATCH/properties/reported/' ? 'patch-reported' : undefined;
    if (!kind) return;
    const record: TwinRequest = { at: Date.now(), kind, rid, clientId: client.id, answer: 'withheld' };
    this.twinLog.push(record);
    if (kind === 'patch-reported') record.body = parseJson(body);
    if (this.twinResponsive) {
      let status: number;
      let response: Buffer;
      let suffix = '';
      if (kind === 'get') {
        status = 200;
        response = Buffer.from(JSON.stringify({ desired: this.desired(), reported: this.reported() }));
      } else if (isObject(record.body)) {
        this.reportedDoc = mergePatch(this.reportedDoc, record.body);
        status = 204;
        response = Buffer.alloc(0);
        suffix = `&$version=${++this.reportedVersion}`;
      } else {
        status = 400;
        response = Buffer.from(
          JSON.stringify({ errorCode: 400004, message: 'reported patch is not a JSON object' }),
        );
      }
      record.status = status;
      const delivered = this.sendTo(client, `$iothub/twin/res/${status}/?$rid=${rid}${suffix}`, response);
      record.answer = delivered ? 'delivered' : 'no-subscription';
    }
    this.notify();
  }

  private onMethodResponse(topic: string, body: Buffer): void {
    const match = /^\$iothub\/methods\/res\/(\d+)\/\?(.*)$/.exec(topic);
    if (!match) return;
    const rid = new URLSearchParams(match[2]).get('$rid') ?? '';
    this.pendingMethods.get(rid)?.({
      status: Number(match[1]),
      payload: body.length ? parseJson(body) : null,
    });
  }

  /** Writes a QoS 0 publish to `client` if it holds a matching subscription, like the hub. */
  private sendTo(client: Client, topic: string, payload: Buffer): boolean {
    if (!subscribed(client, topic)) return false;
    const packet: PublishPacket = { cmd: 'publish', topic, payload, qos: 0, dup: false, retain: false };
    client.publish(packet, () => undefined);
    return true;
  }

  private liveClients(): Client[] {
    // aedes closes a client a few ticks after its socket dies; until then it still looks connected
    return [...this.clients].filter((c) => c.connected && !c.closed && !c.conn.destroyed);
  }

  // ---------------------------------------------------------------- workload API

  private onWorkloadRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const { status, body } = this.workloadAnswer(req.method ?? '', req.url ?? '', Buffer.concat(chunks));
      this.workloadLog.push({ method: req.method ?? '', path: req.url ?? '', status });
      res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    });
  }

  private workloadAnswer(method: string, url: string, body: Buffer): { status: number; body: unknown } {
    const { pathname, searchParams } = new URL(url, 'http://workload');
    if (searchParams.get('api-version') !== API_VERSION) {
      return { status: 400, body: { message: `unsupported api-version ${searchParams.get('api-version')}` } };
    }
    if (method === 'GET' && pathname === '/trust-bundle') {
      return { status: 200, body: { certificate: this.trustBundle } };
    }
    const sign = /^\/modules\/([^/]+)\/genid\/([^/]+)\/sign$/.exec(pathname);
    if (method === 'POST' && sign) {
      if (
        decodeURIComponent(sign[1] ?? '') !== this.moduleId ||
        decodeURIComponent(sign[2] ?? '') !== this.generationId
      ) {
        return { status: 404, body: { message: `module ${sign[1]} (generation ${sign[2]}) not found` } };
      }
      const request = parseJson(body);
      if (!isObject(request) || request.algo !== 'HMACSHA256' || typeof request.data !== 'string') {
        return { status: 400, body: { message: 'expected {keyId, algo: "HMACSHA256", data: base64}' } };
      }
      // `data` is the base64 of the string to sign (`sr\nse`); the digest covers its bytes.
      const digest = createHmac('sha256', Buffer.from(this.moduleKey, 'base64'))
        .update(Buffer.from(request.data, 'base64'))
        .digest('base64');
      return { status: 200, body: { digest } };
    }
    return { status: 404, body: { message: `no route for ${method} ${pathname}` } };
  }

  // ---------------------------------------------------------------- waiting

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter.probe();
  }

  private waitFor<T>(probe: () => T | undefined, timeoutMs: number, describe: () => string): Promise<T> {
    if (this.closing) return Promise.reject(new Error('iothub emulator closed'));
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        probe: () => {
          const value = probe();
          if (value === undefined) return false;
          settle();
          resolve(value);
          return true;
        },
        fail: (err) => {
          settle();
          reject(err);
        },
      };
      const timer = setTimeout(
        () => waiter.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`)),
        timeoutMs,
      );
      const settle = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      waiter.probe();
    });
  }
}

// ------------------------------------------------------------------ wire helpers

const PUBACK = 4;

/**
 * Routes everything the broker writes to `socket` through `decide(packetType)`, whole MQTT frames
 * at a time: sent, dropped, or held until the returned function releases them. mqtt-packet
 * writes one frame in several `write()` calls (header, length, topic, payload), so bytes are
 * gathered until a frame is complete.
 */
function filterOutgoing(
  socket: tls.TLSSocket,
  decide: (packetType: number) => 'send' | 'drop' | 'hold',
): () => void {
  const write: (chunk: Buffer) => boolean = socket.write.bind(socket);
  const held: Buffer[] = [];
  let pending: Buffer = Buffer.alloc(0);
  const filtered = (chunk: unknown, encodingOrCallback?: unknown, callback?: unknown): boolean => {
    const encoding: BufferEncoding =
      typeof encodingOrCallback === 'string' && Buffer.isEncoding(encodingOrCallback)
        ? encodingOrCallback
        : 'utf8';
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : Buffer.from(chunk as Uint8Array);
    pending = pending.length ? Buffer.concat([pending, bytes]) : bytes;
    let ok = true;
    for (
      let size = frameSize(pending);
      size !== undefined && pending.length >= size;
      size = frameSize(pending)
    ) {
      const frame = pending.subarray(0, size);
      pending = pending.subarray(size);
      const verdict = decide((frame[0] ?? 0) >> 4);
      if (verdict === 'send') ok = write(frame);
      else if (verdict === 'hold') held.push(frame);
    }
    const done = typeof encodingOrCallback === 'function' ? encodingOrCallback : callback;
    if (typeof done === 'function') process.nextTick(done);
    return ok;
  };
  socket.write = filtered;
  return () => {
    for (const frame of held.splice(0)) if (!socket.destroyed) write(frame);
  };
}

/** Length of the MQTT frame at the start of `buf`, or undefined while its header is incomplete. */
function frameSize(buf: Buffer): number | undefined {
  let remaining = 0;
  for (let i = 1, multiplier = 1; i <= 4; i++, multiplier *= 128) {
    const byte = buf[i];
    if (byte === undefined) return undefined;
    remaining += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) return 1 + i + remaining;
  }
  throw new Error('malformed MQTT remaining length');
}

/** The property bag of an event topic, decoded; undefined for topics that are not this module's events. */
export function parseEventTopic(
  topic: string,
  deviceId: string,
  moduleId: string,
):
  | Omit<CapturedMessage, 'at' | 'clientId' | 'topic' | 'body' | 'bytes' | 'qos' | 'dup' | 'pubackWithheld'>
  | undefined {
  const prefixes = [
    `devices/${deviceId}/modules/${moduleId}/messages/events/`,
    `devices/${deviceId}/messages/events/`,
  ];
  const prefix = prefixes.find((p) => topic.startsWith(p));
  if (prefix === undefined) return undefined;
  // Keys and values are percent-encoded, so the bag itself holds no '/'; the SDK ends it with one.
  const bag = topic.slice(prefix.length).replace(/\/$/, '');
  const properties: Record<string, string> = {};
  const systemProperties: Record<string, string> = {};
  for (const pair of bag.split('&')) {
    if (!pair) continue;
    const [rawKey, rawValue] = splitOnce(pair, '=');
    const key = decodeURIComponent(rawKey);
    const value = decodeURIComponent(rawValue);
    if (key.startsWith('$.')) systemProperties[key.slice(2)] = value;
    else properties[key] = value;
  }
  return {
    output: systemProperties.on,
    properties,
    systemProperties,
    contentType: systemProperties.ct,
    contentEncoding: systemProperties.ce,
    messageId: systemProperties.mid,
    correlationId: systemProperties.cid,
  };
}

/** RFC 7396 JSON merge patch: objects merge recursively, null deletes, anything else replaces. */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const result: JsonObject = structuredClone(target);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
    } else if (isObject(value)) {
      const current = result[key];
      result[key] = mergePatch(isObject(current) ? current : {}, value);
    } else {
      result[key] = structuredClone(value);
    }
  }
  return result;
}

function subscriptionsOf(client: Client): Record<string, unknown> {
  // aedes keeps a client's live subscriptions (restored persistent ones too) on this field;
  // it is runtime API but missing from the typings.
  return (client as unknown as { subscriptions?: Record<string, unknown> }).subscriptions ?? {};
}

function subscribed(client: Client, topic: string): boolean {
  return Object.keys(subscriptionsOf(client)).some((filter) => topicMatches(filter, topic));
}

/** MQTT topic-filter matching (`+` one level, `#` the rest; wildcards first never match `$…`). */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('#') || filter.startsWith('+'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

function parseSas(token: string): { sr: string; sig: string; se: string } | undefined {
  const [scheme, fields] = splitOnce(token, ' ');
  if (scheme !== 'SharedAccessSignature') return undefined;
  const parts = new Map(fields.split('&').map((pair) => splitOnce(pair, '=')));
  const sr = parts.get('sr');
  const sig = parts.get('sig');
  const se = parts.get('se');
  return sr && sig && se ? { sr, sig, se } : undefined;
}

function splitOnce(text: string, separator: string): [string, string] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + separator.length)];
}

function parseJson(body: Buffer): unknown {
  const text = body.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Runs `fn` with `vars` applied to process.env (undefined deletes) and restores the previous
 * values afterwards, even when it throws. The SDK reads the environment synchronously at the
 * start of `fromEnvironment`, so the window can be that call alone.
 */
export async function withProcessEnv<T>(
  vars: Record<string, string | undefined>,
  fn: () => Promise<T>,
): Promise<T> {
  const saved = new Map(Object.keys(vars).map((key) => [key, process.env[key]]));
  for (const [key, value] of Object.entries(vars)) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  try {
    return await fn();
  } finally {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

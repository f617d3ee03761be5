import azureIotDevice from 'azure-iot-device';
import type { ModuleClient as ModuleClientType, Twin } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sessionAwareMqtt, type TransportCtor } from '../../src/twin/session-aware-mqtt.js';
import {
  startIotHubEmulator,
  withProcessEnv,
  type IotHubEmulator,
  type JsonObject,
} from '../helpers/iothub-emulator.js';

// azure-iot-device is CommonJS whose index assigns `module.exports = { …: require(…) }`; Node's
// ESM loader cannot see those names, so `import { ModuleClient } from 'azure-iot-device'`
// fails at runtime. Take them from the default export.
const { ModuleClient, Message, SharedAccessKeyAuthenticationProvider } = azureIotDevice;

const DESIRED = '$iothub/twin/PATCH/properties/desired/#';
const METHODS = '$iothub/methods/POST/#';

let hub: IotHubEmulator;
let clients: ModuleClientType[] = [];

beforeEach(async () => {
  hub = await startIotHubEmulator({ desired: { telemetry: { results: 'defects' } } });
  clients = [];
});

afterEach(async () => {
  // close() can stay pending for good (an unacknowledged QoS 1 publish holds mqtt.js's end()),
  // so give each a deadline; the emulator's close destroys whatever is left.
  await Promise.all(clients.map((c) => settleWithin(c.close(), 2_000)));
  await hub.close();
});

/** ModuleClient.fromEnvironment(Mqtt) against the emulator, with process.env restored afterwards. */
async function fromEnvironment(transport: TransportCtor = Mqtt): Promise<ModuleClientType> {
  const client = await withProcessEnv(
    // with either connection-string variable set, fromEnvironment ignores the IOTEDGE_* ones
    { ...hub.env(), EdgeHubConnectionString: undefined, IotHubConnectionString: undefined },
    () => ModuleClient.fromEnvironment(transport),
  );
  clients.push(client);
  return client;
}

async function fromConnectionString(key?: string): Promise<ModuleClientType> {
  const client = ModuleClient.fromConnectionString(hub.connectionString(key ? { key } : {}), Mqtt);
  clients.push(client);
  await client.setOptions({ ca: hub.caCert });
  return client;
}

/** 'pending' when `promise` has not settled within `ms`; otherwise how it settled. */
async function settleWithin<T>(
  promise: Promise<T>,
  ms: number,
): Promise<{ state: 'resolved'; value: T } | { state: 'rejected'; error: Error } | { state: 'pending' }> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<{ state: 'pending' }>((resolve) => {
    timer = setTimeout(() => resolve({ state: 'pending' }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => ({ state: 'resolved' as const, value }),
        (error: unknown) => ({ state: 'rejected' as const, error: error as Error }),
      ),
      pending,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Collects every desired-properties event the SDK's Twin emits. */
function desiredEvents(twin: Twin): JsonObject[] {
  const seen: JsonObject[] = [];
  twin.on('properties.desired', (patch: JsonObject) => seen.push(patch));
  return seen;
}

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Answers direct method `name` with what `reply` returns (nothing when it returns undefined).
 * The SDK hands over the request body already JSON.parse'd, and types both handler arguments
 * as optional.
 */
function handleMethod(
  client: ModuleClientType,
  name: string,
  reply: (payload: unknown) => { status: number; payload: unknown } | undefined,
): void {
  client.onMethod(name, (request, response) => {
    const answer = reply(request?.payload as unknown);
    if (answer && response) void response.send(answer.status, answer.payload);
  });
}

function reportedUpdate(twin: Twin, patch: JsonObject): Promise<void> {
  // the SDK types `reported` as any; this is the one method it has
  const reported = twin.properties.reported as {
    update(patch: JsonObject, done: (err?: Error) => void): void;
  };
  return new Promise((resolve, reject) => {
    reported.update(patch, (err) => (err ? reject(err) : resolve()));
  });
}

describe('IoT Hub emulator with the real azure-iot-device-mqtt client', () => {
  it('serves fromEnvironment: open, twin GET, desired and reported patches, direct methods', async () => {
    const before = { ...process.env };
    const client = await fromEnvironment();
    expect(process.env).toEqual(before);
    expect(hub.workloadRequests()).toEqual([
      { method: 'GET', path: '/trust-bundle?api-version=2018-06-28', status: 200 },
    ]);

    await client.open();
    const [connect] = hub.connects();
    expect(connect).toMatchObject({ clientId: 'aoi-line-1/edge-scorer', clean: false, accepted: true });
    expect(connect?.username).toMatch(
      /^edge-scorer-test\.azure-devices\.net\/aoi-line-1\/edge-scorer\/\?api-version=/,
    );
    // the SAS token was signed by the workload API, not by the client
    expect(hub.workloadRequests().map((r) => r.path)).toContain(
      `/modules/edge-scorer/genid/${hub.generationId}/sign?api-version=2018-06-28`,
    );

    const twin = await client.getTwin();
    expect(twin.properties.desired).toMatchObject({ telemetry: { results: 'defects' }, $version: 1 });

    const seen = desiredEvents(twin);
    await hub.waitForSubscription(DESIRED);
    expect(hub.updateDesired({ scoring: { maxBatchSize: 4 }, telemetry: null })).toEqual({
      version: 2,
      deliveredTo: ['aoi-line-1/edge-scorer'],
    });
    await until(() => seen.some((p) => p.$version === 2));
    expect(seen.at(-1)).toEqual({ scoring: { maxBatchSize: 4 }, telemetry: null, $version: 2 });
    expect(hub.desired()).toEqual({ scoring: { maxBatchSize: 4 }, $version: 2 });

    await reportedUpdate(twin, { model: { version: '7', status: 'active' }, daemon: { version: '0.1.0' } });
    await reportedUpdate(twin, { model: { status: 'failed' }, daemon: null });
    expect(hub.reported()).toEqual({ model: { version: '7', status: 'failed' }, $version: 3 });
    await expect(hub.waitForReported((r) => r.$version === 3, 100)).resolves.toMatchObject({ $version: 3 });

    handleMethod(client, 'ping', (payload) => ({ status: 200, payload: { echo: payload } }));
    handleMethod(client, 'silent', () => undefined);
    await hub.waitForSubscription(METHODS);
    await expect(hub.invokeMethod('ping', { n: 1 })).resolves.toEqual({
      status: 200,
      payload: { echo: { n: 1 } },
    });
    await expect(hub.invokeMethod('silent', {}, 300)).resolves.toMatchObject({
      status: 504,
      payload: { errorCode: 504101 },
    });
  });

  it('captures output events with output name, properties, content type/encoding and message id', async () => {
    const client = await fromEnvironment();
    await client.open();
    const body = JSON.stringify({ frames: [{ frameId: 'f-1', defect: true }] });
    const message = new Message(body);
    message.messageId = 'batch-0001';
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    message.properties.add('type', 'results');
    message.properties.add('defect', 'true');
    message.properties.add('modelVersion', '7');
    message.properties.add('odd key/&=', 'a b/c&d=e+f%$');
    await client.sendOutputEvent('results', message);

    // captured before the PUBACK went out, so there is nothing to wait for
    const [captured] = hub.messages('results');
    expect(captured).toMatchObject({
      output: 'results',
      messageId: 'batch-0001',
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      properties: { type: 'results', defect: 'true', modelVersion: '7', 'odd key/&=': 'a b/c&d=e+f%$' },
      bytes: Buffer.byteLength(body),
      qos: 1,
      pubackWithheld: false,
    });
    expect(captured?.body.toString('utf8')).toBe(body);
    // system properties go through querystring.stringify, user ones through encodeURIComponent
    expect(captured?.topic).toBe(
      'devices/aoi-line-1/modules/edge-scorer/messages/events/' +
        '%24.on=results&%24.mid=batch-0001&%24.ct=application%2Fjson&%24.ce=utf-8' +
        '&type=results&defect=true&modelVersion=7&odd%20key%2F%26%3D=a%20b%2Fc%26d%3De%2Bf%25%24/',
    );

    void client.sendOutputEvent('events', new Message('{"event":"started"}'));
    const events = await hub.waitForMessages((m) => m.output === 'events');
    expect(events[0]).toMatchObject({ properties: {}, messageId: undefined, contentType: undefined });
    expect(hub.messages().map((m) => m.output)).toEqual(['results', 'events']);
  });

  it('refuses a wrong module key (CONNACK 5); the SDK fails fast with UnauthorizedError', async () => {
    const wrong = await fromConnectionString(Buffer.alloc(32, 7).toString('base64'));
    await expect(wrong.open()).rejects.toMatchObject({ name: 'UnauthorizedError' });
    expect(hub.connects()).toEqual([
      expect.objectContaining({
        accepted: false,
        returnCode: 5,
        reason: 'signature does not match the module key',
      }),
    ]);

    // the right key over a connection string with GatewayHostName=localhost:PORT works
    const right = await fromConnectionString();
    await right.open();
    await right.sendOutputEvent('results', new Message('{}'));
    expect(hub.messages('results')).toHaveLength(1);
  });

  it('also serves the connection-string path of fromEnvironment (EdgeHubConnectionString + CA file)', async () => {
    const client = await withProcessEnv(
      { EdgeHubConnectionString: undefined, IotHubConnectionString: undefined, ...hub.connectionStringEnv() },
      () => ModuleClient.fromEnvironment(Mqtt),
    );
    clients.push(client);
    await client.open();
    expect(hub.workloadRequests()).toEqual([]);
    expect(hub.connects().at(-1)?.accepted).toBe(true);
  });

  it('fails open() on the certificate when the trust bundle is another CA', async () => {
    hub.setTrustBundle(hub.otherCaCert);
    const client = await fromEnvironment();
    const failure = client.open();
    // "unable to verify the first certificate", wrapped by the SDK as a non-retried UnauthorizedError
    await expect(failure).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await expect(failure).rejects.toThrow(/unable to verify the first certificate/);
    expect(hub.connects()).toEqual([]);
  });

  it('after dropConnections the SDK reconnects at once and its persistent session keeps the subscriptions', async () => {
    const client = await fromEnvironment();
    await client.open();
    const twin = await client.getTwin();
    const seen = desiredEvents(twin);
    handleMethod(client, 'ping', () => ({ status: 200, payload: 'pong' }));
    await hub.waitForSubscription(DESIRED);
    await hub.waitForSubscription(METHODS);

    const before = hub.connects().length;
    hub.dropConnections();
    await hub.waitForConnect((e) => e.accepted, 5_000, before);
    await hub.waitForSubscription(DESIRED);

    expect(hub.updateDesired({ round: 'after-drop' }).deliveredTo).toHaveLength(1);
    await until(() => seen.some((p) => p.round === 'after-drop'));
    await expect(hub.invokeMethod('ping', null)).resolves.toEqual({ status: 200, payload: 'pong' });
  });

  it('without method or desired listeners the SDK does not reconnect until the next operation', async () => {
    const client = await fromEnvironment();
    await client.open();
    const before = hub.connects().length;
    hub.dropConnections();
    await expect(hub.waitForConnect(undefined, 1_000, before)).rejects.toThrow(/timed out/);
    await client.sendOutputEvent('results', new Message('{}'));
    expect(hub.connects().length).toBe(before + 1);
  });

  it('restart({ keepSessions: true }): reconnects; a desired change made while down is only seen by GET', async () => {
    const client = await fromEnvironment();
    await client.open();
    const twin = await client.getTwin();
    const seen = desiredEvents(twin);
    await hub.waitForSubscription(DESIRED);

    await hub.stop();
    expect(hub.updateDesired({ whileDown: true })).toEqual({ version: 2, deliveredTo: [] });
    const before = hub.connects().length;
    await hub.restart({ keepSessions: true });
    const reconnect = await hub.waitForConnect((e) => e.accepted, 15_000, before);
    expect(reconnect.clean).toBe(false);
    await hub.waitForSubscription(DESIRED); // restored from the broker's session store

    expect(hub.updateDesired({ afterRestart: true }).deliveredTo).toHaveLength(1);
    await until(() => seen.some((p) => p.$version === 3));
    expect(seen.some((p) => p.$version === 2)).toBe(false);
    const fresh = await client.getTwin();
    expect(fresh.properties.desired).toMatchObject({ whileDown: true, afterRestart: true, $version: 3 });
  });

  it('restart({ keepSessions: false }) is azure-iot-sdk-node#1255: methods come back, the twin does not', async () => {
    const client = await fromEnvironment();
    await client.open();
    const twin = await client.getTwin();
    const seen = desiredEvents(twin);
    handleMethod(client, 'ping', () => ({ status: 200, payload: 'pong' }));
    await hub.waitForSubscription(DESIRED);
    await hub.waitForSubscription(METHODS);

    const before = hub.connects().length;
    await hub.restart({ keepSessions: false });
    await hub.waitForConnect((e) => e.accepted, 15_000, before);
    // the SDK re-subscribes methods on every connect, but believes its twin topics still stand
    await hub.waitForSubscription(METHODS);
    await expect(hub.invokeMethod('ping', null)).resolves.toEqual({ status: 200, payload: 'pong' });
    expect(hub.subscriptions()).toEqual([METHODS]);

    expect(hub.updateDesired({ lost: true }).deliveredTo).toEqual([]);
    const get = await settleWithin(client.getTwin(), 1_000);
    expect(get.state).toBe('pending'); // the response has nowhere to go: no timeout in the SDK
    expect(hub.twinRequests().at(-1)).toMatchObject({ kind: 'get', answer: 'no-subscription' });
    expect(seen.some((p) => p.lost === true)).toBe(false);

    // the way out: a new client subscribes again and reads the whole twin
    await settleWithin(client.close(), 2_000);
    const replacement = await fromEnvironment();
    await replacement.open();
    const again = await replacement.getTwin();
    expect(again.properties.desired).toMatchObject({ lost: true, $version: 2 });
  });

  /*
   * The daemon notices #1255 by the CONNACK's sessionPresent, which the SDK hands over only
   * through an internal callback (src/twin/session-aware-mqtt.ts). These two tests fail when an
   * SDK update stops handing it over or reports it wrongly.
   */
  it('sessionAwareMqtt reads each CONNACK: no session at first, kept over dropConnections, gone after restart({ keepSessions: false })', async () => {
    const seen: (boolean | undefined)[] = [];
    const client = await fromEnvironment(sessionAwareMqtt((present) => seen.push(present)));
    await client.open();
    desiredEvents(await client.getTwin());
    await hub.waitForSubscription(DESIRED);
    expect(seen).toEqual([false]); // a fresh broker: no session yet

    let before = hub.connects().length;
    hub.dropConnections();
    await hub.waitForConnect((e) => e.accepted, 5_000, before);
    await until(() => seen.length === 2);
    expect(seen[1]).toBe(true);

    before = hub.connects().length;
    await hub.restart({ keepSessions: false });
    await hub.waitForConnect((e) => e.accepted, 15_000, before);
    await until(() => seen.length === 3);
    expect(seen[2]).toBe(false);
  });

  it('sessionAwareMqtt reads the CONNACK of a SAS renewal reconnect too (same session)', async () => {
    const seen: (boolean | undefined)[] = [];
    // a token valid 6 s, renewed 4 s before it expires: a renewal reconnect every 2 s
    const provider = SharedAccessKeyAuthenticationProvider.fromConnectionString(hub.connectionString(), 6, 4);
    const client = ModuleClient.fromAuthenticationProvider(
      provider,
      sessionAwareMqtt((present) => seen.push(present)),
    );
    clients.push(client);
    await client.setOptions({ ca: hub.caCert });
    await client.open();
    desiredEvents(await client.getTwin());
    await hub.waitForSubscription(DESIRED);
    const before = hub.connects().length;
    await hub.waitForConnect((e) => e.accepted, 5_000, before);
    await until(() => seen.length >= 2);
    expect(seen.slice(0, 2)).toEqual([false, true]);
  });

  it('fault: an unresponsive twin swallows requests; switching back answers new ones', async () => {
    const client = await fromEnvironment();
    await client.open();
    await client.getTwin();
    hub.setTwinResponsive(false);
    const hung = await settleWithin(client.getTwin(), 500);
    expect(hung.state).toBe('pending');
    expect(hub.twinRequests().at(-1)).toMatchObject({ kind: 'get', answer: 'withheld' });

    hub.setTwinResponsive(true);
    await expect(client.getTwin()).resolves.toBeDefined();
  });

  it('fault: withheld PUBACKs leave sends (and close) pending until they are released', async () => {
    const client = await fromEnvironment();
    await client.open();
    hub.setPubackWithheld(true);
    const send = client.sendOutputEvent('results', new Message('{"n":1}'));
    expect((await settleWithin(send, 500)).state).toBe('pending');
    expect(hub.messages('results')).toEqual([expect.objectContaining({ pubackWithheld: true })]);
    // SDK trap: close() waits for the missing PUBACK too (mqtt.js end() waits for in-flight QoS 1)
    const close = client.close();
    expect((await settleWithin(close, 500)).state).toBe('pending');

    hub.releasePubacks();
    await expect(send).resolves.toBeDefined();
    await expect(close).resolves.toBeDefined();
  });

  it('fault: refused CONNECTs — code 5 fails fast, code 3 is retried until accepted again', async () => {
    hub.setAcceptConnections(false, 5);
    const fast = await fromEnvironment();
    await expect(fast.open()).rejects.toMatchObject({ name: 'UnauthorizedError' });

    hub.setAcceptConnections(false, 3);
    const patient = await fromEnvironment();
    const before = hub.connects().length;
    const open = patient.open();
    await hub.waitForConnect((e) => e.returnCode === 3, 5_000, before + 1); // a second, retried attempt
    hub.setAcceptConnections(true);
    await expect(open).resolves.toBeDefined();
    expect(hub.connects().at(-1)).toMatchObject({ accepted: true });
  });

  it('fault: a stopped broker fails the first open() fast', async () => {
    await hub.stop();
    const refused = await fromEnvironment();
    await expect(refused.open()).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await hub.restart({ keepSessions: true });
    await expect(refused.open()).resolves.toBeDefined();
  });

  it('fault: an unresponsive broker answers nothing: methods time out, a new open() hangs', async () => {
    const client = await fromEnvironment();
    await client.open();
    handleMethod(client, 'ping', () => ({ status: 200, payload: 'pong' }));
    await hub.waitForSubscription(METHODS);
    hub.setUnresponsive(true);
    await expect(hub.invokeMethod('ping', null, 300)).resolves.toMatchObject({ status: 504 });
    // the same identity connecting again would take the session over and kick this one
    await settleWithin(client.close(), 1_000);

    const hanging = await fromEnvironment();
    const before = hub.connects().length;
    const open = settleWithin(hanging.open(), 1_000);
    await hub.waitForConnect(undefined, 1_000, before); // the broker read the CONNECT, sent no CONNACK
    expect((await open).state).toBe('pending');
  });
});

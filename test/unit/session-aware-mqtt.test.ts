import { describe, expect, it } from 'vitest';
import { sessionPresentOf } from '../../src/twin/session-aware-mqtt.js';

describe('sessionPresentOf', () => {
  it('reads the flag of the CONNACK that MqttBase passes as results.Connected(connack)', () => {
    expect(sessionPresentOf({ transportObj: { cmd: 'connack', returnCode: 0, sessionPresent: false } })).toBe(
      false,
    );
    expect(sessionPresentOf({ transportObj: { cmd: 'connack', returnCode: 0, sessionPresent: true } })).toBe(
      true,
    );
  });

  it('is undefined when there is no CONNACK to read (already connected, or an SDK that changed)', () => {
    for (const result of [
      undefined,
      null,
      {},
      { transportObj: undefined },
      { transportObj: { sessionPresent: 1 } },
    ]) {
      expect(sessionPresentOf(result)).toBeUndefined();
    }
  });
});

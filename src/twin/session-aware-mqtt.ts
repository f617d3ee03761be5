import { Mqtt } from 'azure-iot-device-mqtt';
import { MqttBase } from 'azure-iot-mqtt-base';

/**
 * Called on every CONNACK the transport receives: its `sessionPresent` flag, or undefined when
 * the SDK no longer hands the CONNACK over (see `sessionPresentOf`).
 */
export type ConnackListener = (sessionPresent: boolean | undefined) => void;

/** A transport constructor as `ModuleClient.fromEnvironment` / `fromConnectionString` take it. */
export type TransportCtor = typeof Mqtt;

/*
 * The SDK internals the daemon relies on are confined to this file. azure-iot-device-mqtt 1.16
 * reconnects on its own and tells the application nothing but a 'connect' event, yet after a
 * broker or edgeHub restart with an empty session its twin subscriptions are gone
 * (azure-iot-sdk-node#1255) and only the CONNACK says so. No public API hands the CONNACK over;
 * MqttBase (azure-iot-mqtt-base 1.13, marked private in its docs) passes it to the callbacks of
 * its connect() and updateSharedAccessSignature() as `results.Connected(connack)`, the mqtt.js
 * CONNACK packet as `transportObj`. If an SDK update changes that, `sessionPresentOf` returns
 * undefined, the daemon logs it and falls back on the twin deadline, and the `sessionAwareMqtt`
 * tests in test/integration/iothub-emulator.test.ts fail.
 */

/** The CONNACK's `sessionPresent` from a MqttBase connect result; undefined when there is none. */
export function sessionPresentOf(result: unknown): boolean | undefined {
  const connack = (result as { transportObj?: { sessionPresent?: unknown } } | null | undefined)
    ?.transportObj;
  return typeof connack?.sessionPresent === 'boolean' ? connack.sessionPresent : undefined;
}

type Done = (err?: Error, result?: unknown) => void;

/**
 * The SDK's MQTT transport with its CONNACKs reported to `onConnack`: both the connects of the
 * transport (open and every reconnect after a lost connection) and the reconnects MqttBase makes
 * itself to renew the SAS token. The watching MqttBase goes in as the transport's second
 * constructor argument, which the transport takes in place of the MqttBase it would make.
 */
export function sessionAwareMqtt(onConnack: ConnackListener): TransportCtor {
  class WatchedMqttBase extends MqttBase {
    override connect(config: Parameters<MqttBase['connect']>[0], done: Done): void {
      super.connect(config, (err, result) => {
        if (!err) onConnack(sessionPresentOf(result));
        done(err, result);
      });
    }

    override updateSharedAccessSignature(sas: string, callback: (err?: Error) => void): void {
      // Typed as (err) only, but after a reconnect MqttBase passes its Connected result as well;
      // while disconnected it renews without a connect and passes none.
      const done: Done = (err, result) => {
        if (!err && result !== undefined) onConnack(sessionPresentOf(result));
        callback(err); // the transport reads the error only
      };
      super.updateSharedAccessSignature(sas, done);
    }
  }
  return class SessionAwareMqtt extends Mqtt {
    constructor(authenticationProvider: ConstructorParameters<typeof Mqtt>[0]) {
      super(authenticationProvider, new WatchedMqttBase());
    }
  };
}

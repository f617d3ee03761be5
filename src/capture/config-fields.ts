/**
 * Capture's environment variables, spread into the one configuration table in `src/config.ts`
 * (which checks them against its `Field` shape and generates the README from them).
 */
export const CAPTURE_FIELDS = {
  captureBlobConnectionString: {
    env: 'CAPTURE_BLOB_CONNECTION_STRING',
    doc: "Blob Storage connection string captures upload to (the local Blob Storage on IoT Edge module: `DefaultEndpointsProtocol=http;BlobEndpoint=http://<module>:11002/<account>;AccountName=<account>;AccountKey=<key>`). The twin's `capture.upload.sasUrl` wins when both are set. Never logged or reported.",
    schema: { type: 'string', minLength: 1 },
    default: undefined,
    secret: true,
  },
  deviceId: {
    env: 'IOTEDGE_DEVICEID',
    doc: 'Set by the IoT Edge runtime: the device id, first segment of capture blob names (the host name when unset).',
    schema: { type: 'string', minLength: 1 },
    default: undefined,
  },
} as const;

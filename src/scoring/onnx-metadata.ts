import protobuf from 'protobufjs/minimal.js';

/** ModelProto field numbers (onnx.proto): metadata_props = 14, producer_name = 2. */
const METADATA_PROPS = 14;
const PRODUCER_NAME = 2;

export interface OnnxMetadata {
  producerName?: string;
  props: Record<string, string>;
}

/**
 * Reads the top-level `metadata_props` of an ONNX ModelProto without decoding the graph:
 * onnxruntime-node does not expose them, and a full decode would copy every weight.
 */
export function readOnnxMetadata(model: Uint8Array): OnnxMetadata {
  const reader = protobuf.Reader.create(model);
  const props: Record<string, string> = {};
  let producerName: string | undefined;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if (field === METADATA_PROPS && (tag & 7) === 2) {
      const entry = protobuf.Reader.create(reader.bytes());
      let key = '';
      let value = '';
      while (entry.pos < entry.len) {
        const t = entry.uint32();
        if (t >>> 3 === 1) key = entry.string();
        else if (t >>> 3 === 2) value = entry.string();
        else entry.skipType(t & 7);
      }
      if (key) props[key] = value;
    } else if (field === PRODUCER_NAME && (tag & 7) === 2) {
      producerName = reader.string();
    } else {
      reader.skipType(tag & 7);
    }
  }
  return producerName === undefined ? { props } : { producerName, props };
}

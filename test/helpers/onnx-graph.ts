import onnxProto from 'onnx-proto';

/**
 * A tiny ONNX graph builder on top of the protobufjs-compiled ONNX definitions. It knows just
 * enough to write the small models of test/helpers/onnx-builder.ts and the bundled default model:
 * graph inputs/outputs with fixed or symbolic dims, float/int64/uint8 initializers, nodes with
 * typed attributes. Everything is deterministic: the same calls give the same bytes.
 */
const { onnx } = onnxProto;
type TensorProto = onnxProto.onnx.ITensorProto;
type NodeProto = onnxProto.onnx.INodeProto;
type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
type AttributeProto = onnxProto.onnx.IAttributeProto;

export type ElemType = 'float32' | 'uint8' | 'int64' | 'bool';
/** A dimension: a number is fixed, a string is symbolic (for example 'N' for a dynamic batch). */
export type Dim = number | string;

const DataType = onnx.TensorProto.DataType;
const ELEM: Record<ElemType, number> = {
  float32: DataType.FLOAT,
  uint8: DataType.UINT8,
  int64: DataType.INT64,
  bool: DataType.BOOL,
};
const AttrType = onnx.AttributeProto.AttributeType;

/** Marks a float attribute (a bare number is an INT attribute). */
export const f = (value: number): { f: number } => ({ f: value });
/** Marks a list-of-floats attribute (a bare number[] is an INTS attribute). */
export const floats = (values: number[]): { floats: number[] } => ({ floats: values });
export type Attr = number | number[] | string | { f: number } | { floats: number[] };

function attribute(name: string, value: Attr): AttributeProto {
  if (typeof value === 'number') return { name, type: AttrType.INT, i: value };
  if (typeof value === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: AttrType.INTS, ints: value };
  if ('f' in value) return { name, type: AttrType.FLOAT, f: value.f };
  return { name, type: AttrType.FLOATS, floats: value.floats };
}

export function valueInfo(name: string, elem: ElemType, dims: Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM[elem],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export function tensor(name: string, elem: ElemType, dims: number[], values: ArrayLike<number>): TensorProto {
  const count = dims.reduce((a, b) => a * b, 1);
  if (values.length !== count) {
    throw new Error(`tensor ${name}: ${values.length} values for dims [${dims.join(', ')}]`);
  }
  let raw: Uint8Array;
  if (elem === 'float32') raw = new Uint8Array(Float32Array.from(values).buffer);
  else if (elem === 'uint8' || elem === 'bool') raw = Uint8Array.from(values);
  else raw = new Uint8Array(BigInt64Array.from(Array.from(values), (v) => BigInt(v)).buffer);
  // rawData is little-endian by definition; typed arrays are little-endian on every target we run on.
  return { name, dataType: ELEM[elem], dims, rawData: raw };
}

export interface ModelOptions {
  opset?: number;
  irVersion?: number;
  metadata?: Record<string, string>;
  docString?: string;
  graphName?: string;
}

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private counter = 0;

  /** Returns a fresh tensor name starting with `prefix`. */
  fresh(prefix: string): string {
    let name = prefix;
    while (this.used.has(name)) name = `${prefix}_${++this.counter}`;
    this.used.add(name);
    return name;
  }

  input(name: string, elem: ElemType, dims: Dim[]): string {
    this.used.add(name);
    this.inputs.push(valueInfo(name, elem, dims));
    return name;
  }

  /** Declares `name` (already produced by a node) as a graph output. */
  output(name: string, elem: ElemType, dims: Dim[]): string {
    this.outputs.push(valueInfo(name, elem, dims));
    return name;
  }

  /** Adds a constant initializer and returns its name. */
  init(prefix: string, dims: number[], values: ArrayLike<number>, elem: ElemType = 'float32'): string {
    const name = this.fresh(prefix);
    this.initializers.push(tensor(name, elem, dims, values));
    return name;
  }

  /** A float32 scalar (rank 0) initializer. */
  scalar(prefix: string, value: number): string {
    return this.init(prefix, [], [value]);
  }

  /** An int64 vector initializer (shapes, axes, indices). */
  ints(prefix: string, values: number[]): string {
    return this.init(prefix, [values.length], values, 'int64');
  }

  /**
   * Adds a node with one output and returns the output's name. `out` names the output (graph
   * outputs need a fixed name); otherwise a fresh name derived from the op type is used.
   */
  node(op: string, inputs: string[], attrs: Record<string, Attr> = {}, out?: string): string {
    const name = out ?? this.fresh(op.toLowerCase());
    if (out !== undefined) this.used.add(out);
    this.addNode(op, inputs, [name], attrs);
    return name;
  }

  /** Adds a node with several outputs (Split) and returns their names. */
  nodeMulti(op: string, inputs: string[], count: number, attrs: Record<string, Attr> = {}): string[] {
    const names = Array.from({ length: count }, () => this.fresh(op.toLowerCase()));
    this.addNode(op, inputs, names, attrs);
    return names;
  }

  private addNode(op: string, inputs: string[], outputs: string[], attrs: Record<string, Attr>): void {
    this.nodes.push({
      opType: op,
      name: `${op}_${this.nodes.length}`,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
  }

  /** Serialises the model. Opset 13 and IR version 7 load in onnxruntime and OpenCV 4.6 alike. */
  build(opts: ModelOptions = {}): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: opts.irVersion ?? 7,
      opsetImport: [{ domain: '', version: opts.opset ?? 13 }],
      producerName: 'edge-scorer-test-helpers',
      producerVersion: '1',
      docString: opts.docString ?? '',
      graph: {
        name: opts.graphName ?? 'graph',
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
      metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/** Deterministic PRNG (mulberry32) with a normal-distribution helper, for seeded weights. */
export class Rng {
  private state: number;
  private spare: number | undefined;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const u = Math.max(this.next(), 1e-12);
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  normals(count: number, std: number, mean = 0): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = mean + std * this.normal();
    return out;
  }

  uniforms(count: number, lo: number, hi: number): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = lo + (hi - lo) * this.next();
    return out;
  }
}

import { parseArgs } from 'node:util';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import type { DesiredModel } from '../models/published-model.js';
import { parseDesired } from '../twin/desired.js';
import { modelBlock } from './model-patch.js';

const USAGE = `usage: edge-scorer rollout <model.onnx> --url <https://…/model.onnx> --version <v>
         --target-condition "<condition>" --priority <n>
         [--candidate --sample-rate <r>] [--module edge-scorer] [--name N]
         [--agreement-bar 0.98] [--min-frames 500] [--allow-prefix P]

Prints an IoT Hub layered deployment that sets this model version on the devices of one ring:
properties.desired.model (or properties.desired.candidate with --candidate, a shadow trial) set by
path so it merges with the base deployment, and metrics queries over the module twin's reported
properties. docs/rollout.md walks through a whole rollout with it.`;

/** The module name the deployment templates give the daemon. */
export const DEFAULT_MODULE = 'edge-scorer';

export interface RolloutOptions {
  module: string;
  targetCondition: string;
  priority: number;
  /** A shadow trial: the block goes to `candidate`, with this share of frames. */
  candidate?: { sampleRate: number };
  /** Candidate agreement below this counts a device in `agreementBelowBar`. */
  agreementBar: number;
  /** …once its trial has compared at least this many frames. */
  minFrames: number;
}

/** An IoT Hub layered deployment (the shape `az iot edge deployment create --layered` takes). */
export interface LayeredDeployment {
  content: { modulesContent: Record<string, Record<string, unknown>> };
  targetCondition: string;
  priority: number;
  metrics: { queries: Record<string, string> };
}

const quoted = (what: string, v: string): string => {
  if (/['\\]/.test(v))
    throw new EdgeError(ErrorCodes.BAD_REQUEST, `${what} may not contain quotes or backslashes`);
  return `'${v}'`;
};

/**
 * The layered deployment of `model` for one ring. The desired block is set by path
 * (`properties.desired.model`), which merges with what the base deployment sets; a whole
 * `properties.desired` would replace it. `$edgeAgent` is present, empty, as IoT Hub requires of a
 * layered deployment. Every metrics query reads reported paths the daemon writes (README, "Model
 * lifecycle" and "Shadow trial").
 */
export function layeredDeployment(model: DesiredModel, opts: RolloutOptions): LayeredDeployment {
  if (!model.version) throw new EdgeError(ErrorCodes.BAD_REQUEST, 'the model needs a version (--version)');
  if (!opts.targetCondition.trim())
    throw new EdgeError(ErrorCodes.BAD_REQUEST, '--target-condition is empty');
  if (!Number.isInteger(opts.priority) || opts.priority < 0) {
    throw new EdgeError(ErrorCodes.BAD_REQUEST, '--priority must be a non-negative integer');
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(opts.module))
    throw new EdgeError(ErrorCodes.BAD_REQUEST, '--module is not a module name');
  const version = quoted('--version', model.version);
  const from = `SELECT deviceId FROM devices.modules WHERE moduleId='${opts.module}'`;
  const block = opts.candidate ? { ...model, sampleRate: opts.candidate.sampleRate } : model;
  // The block must be one the daemon accepts, or every device of the ring would reject it.
  parseDesired(opts.candidate ? { candidate: block } : { model: block });
  const queries: Record<string, string> = opts.candidate
    ? {
        candidateActive: `${from} AND properties.reported.candidate.version=${version} AND properties.reported.candidate.status='active'`,
        candidateFailed: `${from} AND properties.reported.candidate.version=${version} AND properties.reported.candidate.status='failed'`,
        agreementBelowBar: `${from} AND properties.reported.candidate.version=${version} AND properties.reported.candidate.frames >= ${opts.minFrames} AND properties.reported.candidate.agreement < ${opts.agreementBar}`,
        promoted: `${from} AND properties.reported.model.version=${version} AND properties.reported.model.status='active'`,
      }
    : {
        active: `${from} AND properties.reported.model.version=${version} AND properties.reported.model.status='active'`,
        failed: `${from} AND properties.desired.model.version=${version} AND properties.reported.model.status='failed'`,
        pending: `${from} AND properties.desired.model.version=${version} AND properties.reported.model.status IN ['downloading', 'verifying', 'loading', 'warming']`,
      };
  return {
    content: {
      modulesContent: {
        $edgeAgent: {},
        [opts.module]: { [`properties.desired.${opts.candidate ? 'candidate' : 'model'}`]: block },
      },
    },
    targetCondition: opts.targetCondition,
    priority: opts.priority,
    metrics: { queries },
  };
}

/** `edge-scorer rollout`: returns the process exit code. */
export async function rolloutCli(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        version: { type: 'string' },
        name: { type: 'string' },
        'target-condition': { type: 'string' },
        priority: { type: 'string' },
        candidate: { type: 'boolean' },
        'sample-rate': { type: 'string' },
        module: { type: 'string' },
        'agreement-bar': { type: 'string' },
        'min-frames': { type: 'string' },
        'allow-prefix': { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    err(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(`${USAGE}\n`);
    return 0;
  }
  const file = positionals[0];
  if (
    !file ||
    positionals.length > 1 ||
    !values.url ||
    !values.version ||
    values['target-condition'] === undefined ||
    values.priority === undefined ||
    (values['sample-rate'] !== undefined && !values.candidate)
  ) {
    err(`${USAGE}\n`);
    return 2;
  }
  try {
    const number = (flag: string, raw: string | undefined, fallback: number): number => {
      const v = raw === undefined ? fallback : Number(raw);
      if (!Number.isFinite(v)) throw new EdgeError(ErrorCodes.BAD_REQUEST, `${flag} must be a number`);
      return v;
    };
    const model = await modelBlock(file, {
      url: values.url,
      version: values.version,
      ...(values.name ? { name: values.name } : {}),
      allowPrefix: values['allow-prefix'] ?? [],
    });
    const deployment = layeredDeployment(model, {
      module: values.module ?? DEFAULT_MODULE,
      targetCondition: values['target-condition'],
      priority: number('--priority', values.priority, NaN),
      ...(values.candidate
        ? { candidate: { sampleRate: number('--sample-rate', values['sample-rate'], 0.25) } }
        : {}),
      agreementBar: number('--agreement-bar', values['agreement-bar'], 0.98),
      minFrames: number('--min-frames', values['min-frames'], 500),
    });
    out(`${JSON.stringify(deployment, null, 2)}\n`);
    return 0;
  } catch (e) {
    const message = isEdgeError(e) ? `${e.code}: ${e.message}` : String(e);
    err(`edge-scorer rollout: ${message}\n`);
    return 1;
  }
}

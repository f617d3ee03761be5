import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ajvDraft04 from 'ajv-draft-04';
import { describe, expect, it } from 'vitest';
import { FIELDS, loadConfig } from '../../src/config.js';
import { OUTPUTS } from '../../src/telemetry/buffer.js';
import { parseDesired } from '../../src/twin/desired.js';
import { checkModelUrl } from '../../src/models/fetcher.js';
import { lintDockerfile, lintRepository, parseDockerfile } from '../../scripts/lint-dockerfiles.js';

/**
 * The IoT Edge deployment templates and the Dockerfiles, checked against the IoT Edge schemas, the
 * rules the IoT Edge dev tool applies when it generates a deployment, and the daemon's own code:
 * module and output names, environment variables, desired properties, ports and paths.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// JSON schemas for IoT Edge deployments from SchemaStore (github.com/SchemaStore/schemastore,
// src/schemas/json/, Apache License 2.0), kept in ../shared/schemas beside the repository.
const SCHEMAS = new URL('../../../shared/schemas/', import.meta.url);

const MODULE = 'edge-scorer';
/** The local Blob Storage on IoT Edge module that captures upload to (docs/capture.md). */
const BLOB_MODULE = 'aoiblobstore';
const TEMPLATES = ['deployment.template.json', 'deployment.gpu.template.json'] as const;

type Json = Record<string, unknown>;

interface ModuleSpec {
  type: string;
  status?: string;
  restartPolicy?: string;
  env?: Record<string, { value: string | number | boolean }>;
  settings: { image: string; createOptions?: Json | string; [k: string]: unknown };
}

interface Template {
  $schemaTemplate?: string;
  modulesContent: {
    $edgeAgent: {
      'properties.desired': {
        systemModules: Record<string, ModuleSpec>;
        modules: Record<string, ModuleSpec>;
      };
    };
    $edgeHub: { 'properties.desired': { routes: Record<string, string | { route: string }> } };
    [module: string]: unknown;
  };
}

interface CreateOptions {
  HostConfig: {
    Binds: string[];
    PortBindings: Record<string, { HostIp?: string; HostPort: string }[]>;
    DeviceRequests?: unknown[];
    LogConfig?: { Type: string; Config?: Record<string, string> };
  };
  StopTimeout?: number;
}

const readJson = async <T = Json>(file: URL | string): Promise<T> =>
  JSON.parse(await readFile(file, 'utf8')) as T;
const template = (name: string): Promise<Template> => readJson<Template>(path.join(ROOT, name));
const agentOf = (t: Template) => t.modulesContent.$edgeAgent['properties.desired'];
const scorerOf = (t: Template): ModuleSpec => agentOf(t).modules[MODULE]!;
const envOf = (t: Template): Record<string, string> =>
  Object.fromEntries(Object.entries(scorerOf(t).env ?? {}).map(([k, v]) => [k, String(v.value)]));
const createOptionsOf = (t: Template): CreateOptions =>
  scorerOf(t).settings.createOptions as unknown as CreateOptions;
const desiredOf = (t: Template): Json =>
  (t.modulesContent[MODULE] as { 'properties.desired': Json })['properties.desired'];

async function validator(): Promise<InstanceType<typeof ajvDraft04.default>> {
  const ajv = new ajvDraft04.default({ allErrors: true, strictTypes: false });
  // Annotations SchemaStore uses that draft-04 does not define.
  ajv.addVocabulary(['examples', 'contentMediaType']);
  // The template schema $refs these by their ids (https://json.schemastore.org/…).
  ajv.addSchema(await readJson(new URL('azure-iot-edgeagent-deployment-1.1.json', SCHEMAS)));
  ajv.addSchema(await readJson(new URL('azure-iot-edgehub-deployment-1.2.json', SCHEMAS)));
  ajv.addSchema(await readJson(new URL('azure-iot-edge-deployment-template-4.0.json', SCHEMAS)));
  ajv.addSchema(await readJson(new URL('azure-iot-edge-deployment-2.0.json', SCHEMAS)));
  return ajv;
}

/** IoT Hub keeps each twin value under 512 characters: the tooling splits createOptions into ≤ 8 chunks. */
const CHUNK = 512;
const MAX_CHUNKS = 8;

/**
 * createOptions as the IoT Edge dev tool writes them (iotedgedev deploymentmanifest.py,
 * convert_create_options): Python's json.dumps with compact separators (non-ASCII escaped),
 * split every 512 characters into createOptions, createOptions01, … createOptions07.
 */
function chunkCreateOptions(options: Json | string): string[] {
  const text =
    typeof options === 'string'
      ? options
      : JSON.stringify(options).replace(
          /[\u0080-\uffff]/g,
          (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
        );
  return text.match(/[\s\S]{1,512}/g) ?? [];
}

/**
 * The deployment manifest `iotedgedev genconfig` generates from a template: environment
 * variables expanded like Python's os.path.expandvars (unknown ones left as they are), image
 * placeholders replaced, createOptions stringified and chunked, `$schema-template` removed.
 */
function generate(raw: string, vars: Record<string, string>, images: Record<string, string>): Json {
  const expanded = raw.replace(/\$(\w+|\{[^}]*\})/g, (m, name: string) => {
    const key = name.startsWith('{') ? name.slice(1, -1) : name;
    return vars[key] ?? m;
  });
  const t = JSON.parse(expanded) as Template & Json;
  delete t['$schema-template'];
  const agent = agentOf(t);
  for (const m of [...Object.values(agent.systemModules), ...Object.values(agent.modules)]) {
    m.settings.image = images[m.settings.image] ?? m.settings.image;
    if (m.settings.createOptions === undefined) continue;
    const chunks = chunkCreateOptions(m.settings.createOptions);
    delete m.settings.createOptions;
    chunks.forEach(
      (c, i) => (m.settings[i === 0 ? 'createOptions' : `createOptions${String(i).padStart(2, '0')}`] = c),
    );
  }
  return t;
}

const ROUTE = /^FROM \/messages\/modules\/([^/\s]+)\/outputs\/([^/\s]+) INTO \$upstream$/;

describe.each(TEMPLATES)('%s', (name) => {
  it('validates against the IoT Edge deployment template 4.0 schema', async () => {
    const ajv = await validator();
    const t = await template(name);
    const validate = ajv.getSchema(
      'https://json.schemastore.org/azure-iot-edge-deployment-template-4.0.json',
    )!;
    expect(validate(t), ajv.errorsText(validate.errors)).toBe(true);
    expect((t as unknown as Json)['$schema-template']).toBe('4.0.0');
    expect(agentOf(t).systemModules.edgeAgent!.settings.image).toBe(
      'mcr.microsoft.com/azureiotedge-agent:1.5',
    );
    expect(agentOf(t).systemModules.edgeHub!.settings.image).toBe('mcr.microsoft.com/azureiotedge-hub:1.5');
  });

  it('generates a deployment manifest that validates against the 2.0 schema', async () => {
    const ajv = await validator();
    const raw = await readFile(path.join(ROOT, name), 'utf8');
    const manifest = generate(
      raw,
      {
        CONTAINER_REGISTRY_SERVER: 'myregistry.azurecr.io',
        CONTAINER_REGISTRY_USERNAME: 'myregistry',
        CONTAINER_REGISTRY_PASSWORD: 'secret',
      },
      {
        [scorerOf(JSON.parse(raw) as Template).settings.image]:
          'myregistry.azurecr.io/edge-scorer:0.1.0-amd64',
      },
    );
    const validate = ajv.getSchema('https://json.schemastore.org/azure-iot-edge-deployment-2.0.json')!;
    expect(validate(manifest), ajv.errorsText(validate.errors)).toBe(true);
    expect(JSON.stringify(manifest)).not.toMatch(/\$\{|\$CONTAINER_REGISTRY/);
  });

  it('keeps every createOptions within the IoT Edge limits, and they parse back unchanged', async () => {
    const agent = agentOf(await template(name));
    for (const [m, spec] of Object.entries({ ...agent.systemModules, ...agent.modules })) {
      const options = spec.settings.createOptions ?? {};
      const chunks = chunkCreateOptions(options);
      expect(chunks.length, `${m}: createOptions chunks`).toBeLessThanOrEqual(MAX_CHUNKS);
      for (const c of chunks) expect(c.length, `${m}: chunk length`).toBeLessThanOrEqual(CHUNK);
      expect(JSON.parse(chunks.join('')), m).toEqual(
        typeof options === 'string' ? JSON.parse(options) : options,
      );
    }
    // Lean: the scorer's options fit one twin value.
    expect(chunkCreateOptions(scorerOf(await template(name)).settings.createOptions!)).toHaveLength(1);
  });

  it('routes exactly the outputs the daemon publishes, of a module that exists', async () => {
    const t = await template(name);
    const pkg = await readJson<{ name: string; bin: Record<string, string> }>(
      path.join(ROOT, 'package.json'),
    );
    expect(MODULE).toBe(pkg.name);
    expect(Object.keys(pkg.bin)).toContain(MODULE);
    const modules = Object.keys(agentOf(t).modules);
    expect(modules).toEqual([MODULE, BLOB_MODULE]);
    const routes = Object.values(t.modulesContent.$edgeHub['properties.desired'].routes).map((r) =>
      typeof r === 'string' ? r : r.route,
    );
    const routed = routes.map((r) => {
      const m = ROUTE.exec(r);
      expect(m, `route "${r}"`).not.toBeNull();
      expect(m![1]).toBe(MODULE);
      return m![2];
    });
    expect([...routed].sort()).toEqual([...OUTPUTS].sort());
    // The module's desired properties are addressed to the same module.
    const twins = Object.keys(t.modulesContent).filter((k) => !k.startsWith('$'));
    expect(twins).toEqual([MODULE, BLOB_MODULE]);
  });

  it('runs Blob Storage on IoT Edge for captures, and points the scorer at it', async () => {
    const t = await template(name);
    const blob = agentOf(t).modules[BLOB_MODULE]!;
    expect(BLOB_MODULE).toMatch(/^[a-z0-9]+$/);
    expect(blob).toMatchObject({ status: 'running', restartPolicy: 'always', type: 'docker' });
    expect(blob.settings.image).toBe('mcr.microsoft.com/azure-blob-storage:latest');
    const opts = blob.settings.createOptions as unknown as CreateOptions;
    expect(opts.HostConfig.Binds.filter((b) => b.endsWith(':/blobroot'))).toHaveLength(1);
    expect(Object.keys(blob.env!).sort()).toEqual([
      'LOCAL_STORAGE_ACCOUNT_KEY',
      'LOCAL_STORAGE_ACCOUNT_NAME',
    ]);
    // The scorer's connection string names the module, its port, and the same account and key.
    const cs = String(envOf(t).CAPTURE_BLOB_CONNECTION_STRING);
    const account = String(blob.env!.LOCAL_STORAGE_ACCOUNT_NAME!.value);
    expect(cs).toBe(
      `DefaultEndpointsProtocol=http;BlobEndpoint=http://${BLOB_MODULE}:11002/${account};AccountName=${account};AccountKey=${String(blob.env!.LOCAL_STORAGE_ACCOUNT_KEY!.value)}`,
    );
    const desired = (t.modulesContent[BLOB_MODULE] as { 'properties.desired': Json })['properties.desired'];
    const capture = parseDesired(desiredOf(t)).capture!;
    expect(desired).toMatchObject({
      deviceToCloudUploadProperties: {
        uploadOn: true,
        storageContainersForUpload: {
          [capture.upload!.container!]: { target: expect.any(String) as string },
        },
        // The day's JSONL is merged with what the module holds: it must not vanish on tiering.
        deleteAfterUpload: false,
      },
      deviceAutoDeleteProperties: { deleteOn: true, retainWhileUploading: true },
    });
    expect(capture.enabled).toBe(true);
  });

  it('sets only environment variables the daemon reads, with values it accepts', async () => {
    const t = await template(name);
    const env = envOf(t);
    const known = new Set<string>(Object.values(FIELDS).map((f) => f.env));
    for (const k of Object.keys(env)) {
      expect(known.has(k) || k.startsWith('IOTEDGE_'), `${k} is not read by src/config.ts`).toBe(true);
    }
    const config = loadConfig(env);
    expect(config).toMatchObject({ host: '0.0.0.0', port: 8080, dataDir: '/data' });
  });

  it('binds DATA_DIR to a host folder, publishes the port on loopback only, stops after SHUTDOWN_TIMEOUT_MS', async () => {
    const t = await template(name);
    const env = envOf(t);
    const config = loadConfig(env);
    const { HostConfig, StopTimeout } = createOptionsOf(t);

    const dataBinds = HostConfig.Binds.filter((b) => b.split(':')[1] === config.dataDir);
    expect(dataBinds).toEqual(['/var/lib/edge-scorer:/data']);

    expect(Object.keys(HostConfig.PortBindings)).toEqual([`${config.port}/tcp`]);
    for (const b of Object.values(HostConfig.PortBindings).flat()) {
      expect(b).toEqual({ HostIp: '127.0.0.1', HostPort: String(config.port) });
    }
    // docker stop waits StopTimeout seconds before SIGKILL: the daemon's own deadline must come
    // first, with room for the forced exit and the last log lines.
    expect(StopTimeout).toBeDefined();
    expect(StopTimeout! * 1000).toBeGreaterThanOrEqual(config.shutdownTimeoutMs + 5000);
    expect(HostConfig.LogConfig?.Config).toMatchObject({ 'max-size': expect.any(String) as string });
    expect(scorerOf(t)).toMatchObject({ status: 'running', restartPolicy: 'always', type: 'docker' });
  });

  it("has desired properties the daemon's own parser accepts, describing the bundled demo model", async () => {
    const t = await template(name);
    const desired = parseDesired(desiredOf(t));
    const model = desired.model!;
    expect(model).toBeDefined();
    expect(checkModelUrl(model.url, []).protocol).toBe('https:');
    // The sample names the demo model: upload models/default/model.onnx and it verifies.
    const onnx = await readFile(path.join(ROOT, 'models/default/model.onnx'));
    expect(model.sha256).toBe(createHash('sha256').update(onnx).digest('hex'));
    expect(model.sizeBytes).toBe(onnx.length);
    const { url: _u, sha256: _s, sizeBytes: _b, ...manifest } = model;
    expect(manifest).toEqual(await readJson(path.join(ROOT, 'models/default/model.json')));
    // The twin's providers say the same as the environment.
    expect(desired.scoring.executionProviders).toEqual(loadConfig(envOf(t)).scoring.executionProviders);
    expect(Object.keys(desired.telemetry).sort()).toEqual([
      'flushIntervalMs',
      'maxBatchMessages',
      'results',
      'statsIntervalSec',
    ]);
  });
});

describe('the GPU variant', () => {
  it('differs from the CPU template only in GPU access, providers and image platform', async () => {
    const cpu = await template('deployment.template.json');
    const gpu = await template('deployment.gpu.template.json');
    expect(createOptionsOf(cpu).HostConfig.DeviceRequests).toBeUndefined();
    expect(createOptionsOf(gpu).HostConfig.DeviceRequests).toEqual([
      { Driver: 'nvidia', Count: -1, Capabilities: [['gpu']] },
    ]);
    expect(envOf(cpu).EXECUTION_PROVIDERS).toBe('cpu');
    expect(envOf(gpu).EXECUTION_PROVIDERS).toBe('tensorrt,cuda,cpu');
    expect(scorerOf(cpu).settings.image).toBe('${MODULES.edge-scorer}');
    expect(scorerOf(gpu).settings.image).toBe('${MODULES.edge-scorer.amd64.gpu}');

    // Everything else is the same document.
    const normalise = (t: Template): Template => {
      const c = structuredClone(t);
      const s = scorerOf(c);
      delete createOptionsOf(c).HostConfig.DeviceRequests;
      delete s.env!.EXECUTION_PROVIDERS;
      s.settings.image = '';
      delete (desiredOf(c).scoring as Json).executionProviders;
      return c;
    };
    expect(normalise(gpu)).toEqual(normalise(cpu));
  });
});

describe('Dockerfiles', () => {
  it('pass the Dockerfile lint (npm run lint:docker)', () => {
    expect(lintRepository(ROOT)).toEqual([]);
  });

  it('agree with the deployment: port, data directory, non-root uid, init, command', async () => {
    const env = envOf(await template('deployment.template.json'));
    for (const file of ['Dockerfile.amd64', 'Dockerfile.arm64']) {
      const instructions = parseDockerfile(await readFile(path.join(ROOT, file), 'utf8'));
      const args = (k: string): string[] => instructions.filter((i) => i.keyword === k).map((i) => i.args);
      expect(
        args('EXPOSE').every((a) => a === env.PORT),
        file,
      ).toBe(true);
      expect(
        args('VOLUME').every((a) => a === env.DATA_DIR),
        file,
      ).toBe(true);
      expect(
        args('USER').every((a) => a === '10001:10001'),
        file,
      ).toBe(true);
      expect(
        args('ENTRYPOINT').every((a) => a === '["tini", "--"]'),
        file,
      ).toBe(true);
      expect(
        args('CMD').every((a) => a === '["node", "dist/main.js"]'),
        file,
      ).toBe(true);
      for (const e of args('ENV').filter((a) => a.includes('DATA_DIR='))) {
        expect(e).toContain(`HOST=${env.HOST}`);
        expect(e).toContain(`DATA_DIR=${env.DATA_DIR}`);
        expect(e).toContain(`PORT=${env.PORT}`);
      }
      expect(
        args('HEALTHCHECK').every((a) => a.includes('/v2/health/live')),
        file,
      ).toBe(true);
    }
  });

  it('the lint reports each rule it enforces', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-lint-'));
    try {
      await writeFile(path.join(dir, '.dockerignore'), '*\n!app.js\n');
      await writeFile(path.join(dir, 'app.js'), '');
      await writeFile(path.join(dir, 'notes.txt'), '');
      const dockerfile = [
        'FROM node AS build',
        'RUN apt-get install curl',
        'FROM ubuntu:latest',
        'COPY --from=build /usr/local/bin/node /usr/local/bin/',
        'ADD https://example.com/tool.tgz /opt/',
        'COPY notes.txt missing.txt /app/',
        'COPY app.js /app/',
        'CMD node /app/app.js',
      ].join('\n');
      const rules = lintDockerfile(dockerfile, { file: 'Dockerfile', contextDir: dir }).map(
        (p) => `${p.line} ${p.rule}`,
      );
      expect(new Set(rules)).toEqual(
        new Set([
          '1 pinned-base-image',
          '2 apt-get',
          '3 pinned-base-image',
          '3 non-root-user',
          '3 healthcheck',
          '5 no-add',
          '6 copy-source',
          '8 exec-form',
        ]),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

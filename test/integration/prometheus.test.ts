import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/child-daemon.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { solidFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { waitFor } from '../helpers/lifecycle.js';

/**
 * What operators see (README, "Upstream telemetry and metrics"): the /metrics exposition checked by promtool, a real Prometheus
 * scraping a real daemon, the alert rules (checked and unit-tested by promtool) and the Grafana
 * dashboard's queries against the metrics the daemon really exposes. promtool and prometheus come
 * from Debian's `prometheus` package (.ci/run installs it); a missing binary fails, never skips.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ALERTS = path.join(ROOT, 'deploy', 'prometheus', 'alerts.yml');
const ALERT_TESTS = path.join(ROOT, 'deploy', 'prometheus', 'alerts.test.yml');
const PROMETHEUS_EXAMPLE = path.join(ROOT, 'deploy', 'prometheus', 'prometheus.example.yml');
const DASHBOARD = path.join(ROOT, 'deploy', 'grafana', 'edge-scorer-dashboard.json');

/** The absolute path of `name` on PATH; throws when it is not there, so the test fails. */
async function requireBinary(name: 'promtool' | 'prometheus'): Promise<string> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      await access(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  throw new Error(
    `${name} is not on PATH: install Debian's prometheus package ` +
      '(DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus), as .ci/run does',
  );
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion in the repository root, `stdin` written to it. */
async function run(bin: string, args: string[], stdin = ''): Promise<Run> {
  const child = spawn(bin, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.end(stdin);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

const RAW = { 'x-frame-format': 'rgb8', 'x-frame-width': '32', 'x-frame-height': '32' };

/** Scores `n` raw frames of varied grey levels (the test classifier answers both defect and ok). */
async function scoreFrames(url: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const frame = solidFrame(32, 32, 3, (i * 41) % 256);
    const res = await postFrame(`${url}/v1/score`, frame, 'application/octet-stream', RAW);
    expect(res.status, res.text).toBe(200);
  }
}

/**
 * Sample names an exposition can carry, from its `# TYPE` lines: labelled counters never
 * incremented expose no sample yet but are declared all the same. Histograms expose
 * `_bucket`/`_sum`/`_count`; a counter family declared without `_total` (OpenMetrics style) exposes
 * `<family>_total`.
 */
function exposedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const [, family, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    if (!family) continue;
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(family + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) names.add(family + s);
    else if (type === 'counter' && !family.endsWith('_total')) names.add(`${family}_total`);
    else names.add(family);
  }
  return names;
}

interface Target {
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
}
interface Dashboard {
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Variable[] };
  annotations: { list: { expr?: string }[] };
}

async function loadDashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

/** Every panel, rows' nested panels included. */
function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** The PromQL of every panel target and annotation (not the variables' label_values()). */
function panelQueries(d: Dashboard): string[] {
  const exprs = allPanels(d).flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
  return [...exprs, ...d.annotations.list.flatMap((a) => (a.expr ? [a.expr] : []))];
}

function variableQueries(d: Dashboard): string[] {
  return d.templating.list.flatMap((v) => {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    return v.type === 'query' && q ? [q] : [];
  });
}

const metricNames = (expr: string): string[] => expr.match(/edge_scorer_[a-z0-9_]+/g) ?? [];

/** Grafana's variables, replaced as Grafana would for "All" over a short range. */
const asPromQL = (expr: string): string =>
  expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('$__range', '5m')
    .replaceAll('$instance', '.+');

describe("the daemon's /metrics", () => {
  let daemon: Daemon | undefined;
  let exposition = '';

  beforeAll(async () => {
    daemon = await startDaemon();
    await scoreFrames(daemon.url, 6);
    // Other routes and an error outcome, so every labelled family the daemon serves has samples.
    expect((await request(`${daemon.url}/v1/model`)).status).toBe(200);
    expect((await request(`${daemon.url}/no-such-route`)).status).toBe(404);
    const res = await request(`${daemon.url}/metrics`);
    expect(res.status).toBe(200);
    exposition = res.text;
  });

  afterAll(async () => {
    await daemon?.stop();
  });

  it('passes `promtool check metrics` without a word', async () => {
    const promtool = await requireBinary('promtool');
    expect(exposition).toMatch(/^edge_scorer_frames_total\{defect="(true|false)"\} \d+$/m);
    expect(exposition).toMatch(/^edge_scorer_inference_duration_seconds_bucket\{le="\+Inf"\} [1-9]\d*$/m);
    const { code, stdout, stderr } = await run(promtool, ['check', 'metrics'], exposition);
    expect({ code, output: stdout + stderr }).toEqual({ code: 0, output: '' });
  });

  it('exposes every metric the Grafana dashboard queries', async () => {
    const dashboard = await loadDashboard();
    const exposed = exposedNames(exposition);
    const queried = new Set([...panelQueries(dashboard), ...variableQueries(dashboard)].flatMap(metricNames));
    expect([...queried].filter((name) => !exposed.has(name))).toEqual([]);
    // The panels the operators rely on are there (a dropped panel would pass the check above).
    for (const name of [
      'edge_scorer_frames_total',
      'edge_scorer_http_request_duration_seconds_bucket',
      'edge_scorer_inference_duration_seconds_bucket',
      'edge_scorer_predictions_total',
      'edge_scorer_queue_depth',
      'edge_scorer_queue_rejections_total',
      'edge_scorer_batch_size_bucket',
      'edge_scorer_model_info',
      'edge_scorer_model_loads_total',
      'edge_scorer_model_swaps_total',
      'edge_scorer_telemetry_buffer_items',
      'edge_scorer_telemetry_items_dropped_total',
      'edge_scorer_iothub_connected',
      'edge_scorer_process_resident_memory_bytes',
      'edge_scorer_process_cpu_user_seconds_total',
    ]) {
      expect(queried, name).toContain(name);
    }
  });
});

describe('the Grafana dashboard', () => {
  it('is importable JSON with a templated datasource and an instance variable', async () => {
    const d = await loadDashboard();
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    const vars = new Map(d.templating.list.map((v) => [v.name, v]));
    expect(vars.get('DS_PROMETHEUS')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.get('instance')).toMatchObject({ type: 'query' });
    const panels = allPanels(d);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels.filter((p) => p.type !== 'row')) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${DS_PROMETHEUS}' });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        expect(t.datasource, p.title).toEqual({ type: 'prometheus', uid: '${DS_PROMETHEUS}' });
        expect(t.expr, p.title).toMatch(/edge_scorer_|\bup\{/);
        expect(t.expr, p.title).toContain('instance=~"$instance"');
      }
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
  });
});

describe('the alert rules', () => {
  it('pass `promtool check rules`', async () => {
    const promtool = await requireBinary('promtool');
    const res = await run(promtool, ['check', 'rules', ALERTS]);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('fire as their unit tests expect (`promtool test rules`)', async () => {
    const promtool = await requireBinary('promtool');
    const res = await run(promtool, ['test', 'rules', ALERT_TESTS]);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toContain('SUCCESS');
    // At least the alerts the operators care most about are proven to fire on synthetic series.
    const tests = await readFile(ALERT_TESTS, 'utf8');
    for (const alert of ['EdgeScorerNotReady', 'EdgeScorerTelemetryDropping', 'EdgeScorerIotHubDisconnected'])
      expect(tests).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels:`));
  });

  it('and the example scrape configuration pass `promtool check config`', async () => {
    const promtool = await requireBinary('promtool');
    const res = await run(promtool, ['check', 'config', PROMETHEUS_EXAMPLE]);
    expect(res.code, res.stdout + res.stderr).toBe(0);
  });
});

interface Vector {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}
interface RulesAnswer {
  status: string;
  data: { groups: { rules: { name: string; health: string; state?: string; lastError?: string }[] }[] };
}

interface Prometheus {
  url: string;
  query(promql: string): Promise<Vector>;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts the real `prometheus` on a free loopback port with a temp TSDB, scraping `target` every
 * second as job edge-scorer and evaluating deploy/prometheus/alerts.yml. stop() kills it and
 * removes the temp dir.
 */
async function startPrometheus(bin: string, target: string): Promise<Prometheus> {
  const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-prometheus-'));
  const port = await freePort();
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'rule_files:',
    `  - ${JSON.stringify(ALERTS)}`,
    'scrape_configs:',
    '  - job_name: edge-scorer',
    '    static_configs:',
    `      - targets: [${JSON.stringify(target)}]`,
    '',
  ].join('\n');
  await writeFile(path.join(dir, 'prometheus.yml'), config);
  const child = spawn(
    bin,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out = (out + s).slice(-20_000)));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (out = (out + s).slice(-20_000)));
  const exited = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(err.message));
    child.once('exit', (code, signal) => resolve(String(code ?? signal)));
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    })());
  const url = `http://127.0.0.1:${port}`;
  try {
    await Promise.race([
      waitFor(
        async () => ((await request(`${url}/-/ready`)).status === 200 ? true : undefined),
        'prometheus ready',
      ),
      exited.then((why) => {
        throw new Error(`prometheus exited (${why}) before it was ready:\n${out}`);
      }),
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    async query(promql) {
      return (await request(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`)).json as Vector;
    },
    output: () => out,
    stop,
  };
}

describe('a real Prometheus scraping the daemon', () => {
  let daemon: Daemon | undefined;
  let prometheus: Prometheus | undefined;
  // A failed setup (no prometheus binary, say) fails each test with its reason instead of leaving
  // them reported as skipped.
  let setupError: unknown;

  beforeAll(async () => {
    try {
      const bin = await requireBinary('prometheus');
      daemon = await startDaemon();
      prometheus = await startPrometheus(bin, new URL(daemon.url).host);
    } catch (err) {
      setupError = err;
    }
  });

  afterAll(async () => {
    await prometheus?.stop();
    await daemon?.stop();
  });

  /** The running Prometheus and daemon; throws what went wrong when they could not be started. */
  function started(): { prometheus: Prometheus; daemon: Daemon } {
    if (setupError !== undefined || !prometheus || !daemon) throw setupError;
    return { prometheus, daemon };
  }

  /** The single value of an instant vector, or undefined when it is empty. */
  async function scalar(promql: string): Promise<number | undefined> {
    const answer = await started().prometheus.query(promql);
    if (answer.status !== 'success') throw new Error(`${promql}: ${answer.error}`);
    const [sample, ...more] = answer.data!.result;
    if (more.length > 0) throw new Error(`${promql} returned ${answer.data!.result.length} series`);
    return sample ? Number(sample.value[1]) : undefined;
  }

  it('sees exactly the frames posted in sum(edge_scorer_frames_total)', async () => {
    const { daemon } = started();
    await waitFor(
      async () => ((await scalar('up{job="edge-scorer"}')) === 1 ? true : undefined),
      'first scrape',
    );
    // Nothing scored yet: the labelled counter has no series.
    expect(await scalar('sum(edge_scorer_frames_total{job="edge-scorer"})')).toBeUndefined();

    const N = 12;
    await scoreFrames(daemon.url, N);
    const seen = await waitFor(
      async () => {
        const v = await scalar('sum(edge_scorer_frames_total{job="edge-scorer"})');
        return v !== undefined && v >= N ? v : undefined;
      },
      `sum(edge_scorer_frames_total) to reach ${N}`,
      20_000,
    );
    expect(seen).toBe(N);
    expect(await scalar('sum(edge_scorer_predictions_total{job="edge-scorer"})')).toBe(N);
  }, 45_000);

  it('evaluates every alert rule without error, and none fires for a healthy standalone daemon', async () => {
    const { prometheus } = started();
    const defined = [...(await readFile(ALERTS, 'utf8')).matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]);
    const rules = await waitFor(
      async () => {
        const answer = (await request(`${prometheus.url}/api/v1/rules`)).json as RulesAnswer;
        const all = answer.data.groups.flatMap((g) => g.rules);
        // Evaluated at least once since a scrape saw the target (absent(up) is pending before that).
        return all.length > 0 && all.every((r) => r.health === 'ok' && r.state === 'inactive')
          ? all
          : undefined;
      },
      'every rule evaluated and inactive',
      20_000,
    ).catch(async (err: Error) => {
      const answer = (await request(`${prometheus.url}/api/v1/rules`)).json as RulesAnswer;
      throw new Error(
        `${err.message}\n${JSON.stringify(
          answer.data.groups.flatMap((g) => g.rules),
          null,
          1,
        )}`,
      );
    });
    expect(rules.map((r) => r.name).sort()).toEqual([...defined].sort());
  }, 30_000);

  it('answers every dashboard query (valid PromQL over the real series)', async () => {
    const { prometheus } = started();
    const dashboard = await loadDashboard();
    const failures: string[] = [];
    for (const expr of panelQueries(dashboard)) {
      const answer = await prometheus.query(asPromQL(expr));
      if (answer.status !== 'success') failures.push(`${expr}: ${answer.error}`);
    }
    expect(failures).toEqual([]);
    // The model table shows the model this daemon serves.
    const table = allPanels(dashboard).find((p) => p.type === 'table');
    const info = await waitFor(async () => {
      const answer = await prometheus.query(asPromQL(table!.targets![0]!.expr!));
      return answer.data?.result[0]?.metric;
    }, 'the model info series');
    expect(info).toMatchObject({
      name: 'test-classifier',
      version: '1',
      provider: 'cpu',
      job: 'edge-scorer',
    });
  });
});

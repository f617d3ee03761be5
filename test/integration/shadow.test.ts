import { createHash } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { CandidateReport } from '../../src/shadow/trial.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame, solidFrame } from '../helpers/frames.js';
import { metricValue, postFrame, request, scrape } from '../helpers/http.js';
import { desiredModel, versionedModel, waitFor, type VersionedModel } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';
import { buildClassifier, buildSlowModel } from '../helpers/onnx-builder.js';

let server: ModelServer | undefined;
let daemon: Daemon | undefined;
let desiredFile: string | undefined;

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await server?.close();
  if (desiredFile) await rm(desiredFile, { force: true });
});

/**
 * A classifier like the test one (logits −20·(m − c_k)² + const, m the frame's mean level), with
 * class centres chosen by the test: the class whose centre is nearest the frame's level wins.
 */
function classifierWithCentres(version: string, centres: number[]): VersionedModel {
  const base = versionedModel(version);
  const S = 20;
  const bytes = buildClassifier({
    batch: 'dynamic',
    channels: 3,
    height: 32,
    width: 32,
    classes: centres.length,
    output: 'logits',
    weights: Array.from({ length: 3 }, () => centres.map((c) => (2 * S * c) / 3)),
    bias: centres.map((c) => -S * c * c),
    metadata: { version },
  });
  return { ...base, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

async function startWithDesired(desired: object, env: Record<string, string> = {}): Promise<Daemon> {
  desiredFile = path.join(tmpdir(), `edge-scorer-shadow-${process.pid}-${Date.now()}.json`);
  await writeFile(desiredFile, JSON.stringify(desired));
  return startDaemon({
    env: {
      DESIRED_PROPERTIES_FILE: desiredFile,
      DESIRED_PROPERTIES_POLL_MS: '50',
      MODEL_URL_ALLOWLIST: `${server!.origin}/`,
      REPORTED_MIN_INTERVAL_MS: '50',
      WARMUP_RUNS: '1',
      ...env,
    },
  });
}

const candidateOf = (d: Daemon): CandidateReport | null | undefined =>
  d.app.reported.document.candidate as CandidateReport | null | undefined;

const waitForCandidate = (d: Daemon, status: string): Promise<CandidateReport> =>
  waitFor(
    () => {
      const c = candidateOf(d);
      return c?.status === status ? c : undefined;
    },
    `candidate ${status}`,
    30_000,
  );

const activeVersion = async (d: Daemon): Promise<string | undefined> =>
  ((await request(`${d.url}/v1/model`)).json as { model?: { manifest: { version: string } } }).model?.manifest
    .version;

describe('shadow trial', () => {
  it('reports exact figures for a candidate that disagrees on a known subset of frames', async () => {
    server = await startModelServer();
    const active = versionedModel('7'); // centres ok 0, bridge 0.5, missing 1
    // The candidate calls black frames `bridge`, mid-grey `ok`, and agrees on white (`missing`).
    const candidate = classifierWithCentres('8', [0.5, 0, 1]);
    const block = { ...desiredModel(server, candidate), sampleRate: 1 };
    const d = (daemon = await startWithDesired({ model: desiredModel(server, active), candidate: block }));
    await waitFor(async () => ((await activeVersion(d)) === '7' ? true : undefined), 'active model');
    await waitForCandidate(d, 'active');

    const png = (level: number): Promise<Buffer> =>
      encodeFrame(solidFrame(32, 32, 3, level), 32, 32, 3, 'png');
    const frames = [
      ...Array.from({ length: 4 }, () => 0),
      ...Array.from({ length: 3 }, () => 128),
      ...Array.from({ length: 5 }, () => 255),
    ];
    const seen: string[] = [];
    for (const level of frames) {
      const r = await postFrame(`${d.url}/v1/score`, await png(level), 'image/png');
      expect(r.status).toBe(200);
      seen.push((r.json as { classification: { label: string }[] }).classification[0]!.label);
      // One frame at a time reaches the candidate, so none is shed and the figures are exact.
      await d.app.engine.frames.idle();
      await d.app.shadow.idle();
    }
    expect(seen).toEqual([...frames.map((l) => (l === 0 ? 'ok' : l === 128 ? 'bridge' : 'missing'))]);

    const report = d.app.shadow.report!;
    expect(report).toMatchObject({
      name: 'line-classifier',
      version: '8',
      sha256: candidate.sha256,
      status: 'active',
      frames: 12,
      agreement: Math.round((5 / 12) * 10000) / 10000,
      flips: { okToDefect: 4, defectToOk: 3 },
      confusion: { ok: { bridge: 4 }, bridge: { ok: 3 }, missing: { missing: 5 } },
      boxAgreement: null,
      shed: 0,
    });
    expect(report.latencyMs.active.p50).toBeGreaterThan(0);
    expect(report.latencyMs.candidate.p99).toBeGreaterThanOrEqual(report.latencyMs.candidate.p50!);
    expect(Date.parse(report.since!)).not.toBeNaN();
    // The reported property and the metrics carry the same figures.
    await waitFor(() => (candidateOf(d)?.frames === 12 ? true : undefined), 'reported figures');
    expect(candidateOf(d)).toMatchObject({ agreement: report.agreement, flips: report.flips });
    const samples = await scrape(d.url);
    expect(metricValue(samples, 'edge_scorer_shadow_frames_total', { outcome: 'compared' })).toBe(12);
    expect(metricValue(samples, 'edge_scorer_shadow_flips_total', { direction: 'ok_to_defect' })).toBe(4);
    expect(metricValue(samples, 'edge_scorer_shadow_flips_total', { direction: 'defect_to_ok' })).toBe(3);
    expect(metricValue(samples, 'edge_scorer_shadow_agreement_ratio')).toBeCloseTo(5 / 12, 6);

    // A new sample rate keeps the runtime and the figures: half of the next 4 frames are compared.
    await writeFile(
      desiredFile!,
      JSON.stringify({ model: desiredModel(server, active), candidate: { ...block, sampleRate: 0.5 } }),
    );
    await waitFor(() => (candidateOf(d)?.sampleRate === 0.5 ? true : undefined), 'new sample rate');
    for (let i = 0; i < 4; i++) {
      await postFrame(`${d.url}/v1/score`, await png(255), 'image/png');
      await d.app.engine.frames.idle();
      await d.app.shadow.idle();
    }
    expect(d.app.shadow.report).toMatchObject({ frames: 14, confusion: { missing: { missing: 7 } } });

    // `null` ends the trial: the candidate's runtime is released and the report removed.
    await writeFile(desiredFile!, JSON.stringify({ model: desiredModel(server, active), candidate: null }));
    await waitFor(() => (candidateOf(d) === null ? true : undefined), 'trial ended');
    expect(d.app.engine.runtimeOf('candidate')).toBeUndefined();
  }, 90_000);

  it('refuses a bad candidate block and keeps serving', async () => {
    server = await startModelServer();
    const active = versionedModel('7');
    const d = (daemon = await startWithDesired({ model: desiredModel(server, active) }));
    await waitFor(async () => ((await activeVersion(d)) === '7' ? true : undefined), 'active model');
    const bad = { ...desiredModel(server, versionedModel('8')), sampleRate: 1.5 };
    await writeFile(desiredFile!, JSON.stringify({ model: desiredModel(server, active), candidate: bad }));
    const desired = await waitFor(() => {
      const s = d.app.reported.document.desired as {
        status: string;
        lastError: { code: string; message: string } | null;
      };
      return s.status === 'rejected' ? s : undefined;
    }, 'rejection');
    expect(desired.lastError?.code).toBe('EDGE_ERR_DESIRED_INVALID');
    expect(desired.lastError?.message).toContain('/candidate/sampleRate');
    expect(d.app.engine.runtimeOf('candidate')).toBeUndefined();
    const frame = await encodeFrame(gradientFrame(32, 32), 32, 32, 3, 'png');
    expect((await postFrame(`${d.url}/v1/score`, frame, 'image/png')).status).toBe(200);
  }, 90_000);

  it('sheds its own work while the line is busy and fails no live frame', async () => {
    server = await startModelServer();
    const slow = (depth: number): VersionedModel => {
      const bytes = buildSlowModel({ batch: 'dynamic', size: 64, depth, channels: 16 });
      return {
        version: String(depth),
        bytes,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        manifest: {
          name: 'slow',
          version: String(depth),
          task: 'classification',
          labels: ['ok', 'defect'],
          defectLabels: ['defect'],
          input: { width: 64, height: 64, resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
          output: { format: 'logits', topK: 1 },
        },
      };
    };
    const d = (daemon = await startWithDesired(
      {
        model: desiredModel(server, slow(6)),
        candidate: { ...desiredModel(server, slow(7)), sampleRate: 1 },
      },
      { MAX_QUEUE: '256', MAX_BATCH_SIZE: '4' },
    ));
    await waitFor(async () => ((await activeVersion(d)) === '6' ? true : undefined), 'active model');
    await waitForCandidate(d, 'active');
    const frame = await encodeFrame(gradientFrame(64, 64), 64, 64, 3, 'png');
    const failures: string[] = [];
    let ok = 0;
    const client = async (): Promise<void> => {
      for (let i = 0; i < 12; i++) {
        const r = await postFrame(`${d.url}/v1/score`, frame, 'image/png');
        if (r.status === 200) ok++;
        else failures.push(`${r.status} ${r.text}`);
      }
    };
    await Promise.all(Array.from({ length: 12 }, client));
    await d.app.engine.frames.idle();
    await d.app.shadow.idle();
    expect(failures).toEqual([]);
    expect(ok).toBe(144);
    const samples = await scrape(d.url);
    const compared = metricValue(samples, 'edge_scorer_shadow_frames_total', { outcome: 'compared' });
    const shedBusy = metricValue(samples, 'edge_scorer_shadow_frames_total', { outcome: 'shed_busy' });
    const shedQueue = metricValue(samples, 'edge_scorer_shadow_frames_total', { outcome: 'shed_queue' });
    expect(shedBusy).toBeGreaterThan(0);
    expect(compared).toBeLessThan(144);
    // Every frame offered is either compared or shed (the stream dropped none at this rate).
    expect(metricValue(samples, 'edge_scorer_frame_stream_dropped_total', { subscriber: 'shadow' })).toBe(0);
    expect(compared + shedBusy + shedQueue).toBe(144);
    expect(d.app.shadow.report?.shed).toBe(shedBusy + shedQueue);
  }, 90_000);

  it('promote swaps the candidate in under load with no failed frame', async () => {
    server = await startModelServer();
    const a = versionedModel('7');
    const b = versionedModel('8');
    const desired = {
      model: desiredModel(server, a),
      candidate: { ...desiredModel(server, b), sampleRate: 0.25 },
    };
    const d = (daemon = await startWithDesired(desired, { MAX_QUEUE: '256' }));
    await waitFor(async () => ((await activeVersion(d)) === '7' ? true : undefined), 'active model');
    await waitForCandidate(d, 'active');

    const frame = await encodeFrame(gradientFrame(320, 240), 320, 240, 3, 'jpeg');
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const versions: string[] = [];
    /** When each answered request was sent, and the version that answered it. */
    const answered: { sentAt: number; version: string }[] = [];
    const client = async (): Promise<void> => {
      while (!stop) {
        const sentAt = performance.now();
        const r = await postFrame(`${d.url}/v1/score`, frame, 'image/jpeg');
        if (r.status === 200) {
          ok++;
          const { version } = (r.json as { model: { version: string } }).model;
          versions.push(version);
          answered.push({ sentAt, version });
        } else failures.push(`${r.status} ${r.text}`);
      }
    };
    const clients = Array.from({ length: 8 }, client);
    await waitFor(() => (ok > 20 ? true : undefined), 'load');
    const answer = await d.app.methods.promote!({});
    const promotedAt = performance.now();
    const before = ok;
    await waitFor(() => (ok > before + 20 ? true : undefined), 'frames after the promotion');
    stop = true;
    await Promise.all(clients);

    expect(failures).toEqual([]);
    expect(answer.status).toBe(200);
    expect(answer.payload).toMatchObject({ model: { version: '8', status: 'active', previousVersion: '7' } });
    expect(versions[0]).toBe('7');
    expect(versions.at(-1)).toBe('8');
    // Every frame sent once the promotion answered is answered by 8. (Frames already admitted to 7
    // finish on 7, and may answer after a later frame answered by 8: the clients run side by side.)
    const after = answered.filter((a) => a.sentAt > promotedAt);
    expect(after.length).toBeGreaterThan(20);
    expect(after.filter((a) => a.version !== '8')).toEqual([]);
    expect(d.app.manager.status).toMatchObject({ version: '8', status: 'active' });
    await waitFor(() => (candidateOf(d)?.status === 'promoted' ? true : undefined), 'candidate promoted');
    expect(d.app.engine.runtimeOf('candidate')).toBeUndefined();
    // The normal swap: an `activated` lifecycle event names both versions.
    expect(
      d.logs.some(
        (l) =>
          l.event === 'activated' &&
          (l.model as { version?: string }).version === '8' &&
          l.previousVersion === '7',
      ),
    ).toBe(true);

    // The twin still names 7: a desired change elsewhere keeps the promoted model serving...
    await writeFile(desiredFile!, JSON.stringify({ ...desired, telemetry: { statsIntervalSec: 30 } }));
    await waitFor(
      () => ((d.app.reported.document.desired as { version: number }).version >= 2 ? true : undefined),
      'second document',
    );
    await d.app.reconciler.settled();
    expect(await activeVersion(d)).toBe('8');
    expect(d.app.engine.runtimeOf('candidate')).toBeUndefined();
    // ...and a new twin model replaces it, as any model change does.
    const c = versionedModel('9');
    await writeFile(desiredFile!, JSON.stringify({ model: desiredModel(server, c) }));
    await waitFor(async () => ((await activeVersion(d)) === '9' ? true : undefined), 'twin model 9');
  }, 90_000);

  it('promote without a warmed candidate answers 404 and changes nothing', async () => {
    server = await startModelServer();
    const d = (daemon = await startWithDesired({ model: desiredModel(server, versionedModel('7')) }));
    await waitFor(() => (d.app.manager.status.version === '7' ? true : undefined), 'active model');
    const answer = await d.app.methods.promote!({});
    expect(answer.status).toBe(404);
    expect(answer.payload).toMatchObject({ error: { code: 'EDGE_ERR_NOT_FOUND' }, model: { version: '7' } });
  }, 90_000);
});

import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EdgeError, ErrorCodes } from '../../src/errors.js';
import { ModelStore, toStorageError, type StoreState } from '../../src/models/store.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const logger = pino({ level: 'silent' });

let dataDir: string;

beforeEach(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'model-store-'));
});

afterEach(async () => {
  await chmod(path.join(dataDir, 'models'), 0o755).catch(() => undefined);
  await rm(dataDir, { recursive: true, force: true });
});

async function newStore(keep = 2): Promise<ModelStore> {
  const store = new ModelStore({ dataDir, keep, logger });
  await store.init();
  return store;
}

/** Stores random model bytes the way the reconciler does: download to tempPath, then put. */
async function putModel(
  store: ModelStore,
  manifest: object = {},
): Promise<{ sha256: string; bytes: Buffer; file: string }> {
  const bytes = randomBytes(4096);
  const temp = store.tempPath();
  await writeFile(temp, bytes);
  const file = await store.put(temp, sha(bytes), manifest);
  return { sha256: sha(bytes), bytes, file };
}

describe('ModelStore', () => {
  it('does no I/O in the constructor', () => {
    new ModelStore({ dataDir: path.join(dataDir, 'not-yet'), keep: 2, logger });
    expect(existsSync(path.join(dataDir, 'not-yet'))).toBe(false);
  });

  it('puts a verified download atomically under its sha256, with its manifest and without the URL', async () => {
    const store = await newStore();
    const bytes = randomBytes(10_000);
    const temp = store.tempPath();
    await writeFile(temp, bytes);
    const manifest = {
      name: 'pcb-aoi',
      version: '7',
      url: 'https://blob/m.onnx?sig=SECRET',
      sha256: sha(bytes),
    };
    const file = await store.put(temp, sha(bytes).toUpperCase(), manifest);

    expect(file).toBe(path.join(dataDir, 'models', sha(bytes), 'model.onnx'));
    expect(store.modelPath(sha(bytes))).toBe(file);
    expect(await store.has(sha(bytes))).toBe(true);
    expect(await readFile(file)).toEqual(bytes);
    expect(existsSync(temp)).toBe(false);
    const stored = await readFile(path.join(dataDir, 'models', sha(bytes), 'model.json'), 'utf8');
    expect(stored).not.toContain('SECRET');
    expect(await store.readManifest(sha(bytes))).toEqual({
      name: 'pcb-aoi',
      version: '7',
      sha256: sha(bytes),
    });
    expect(await readdir(path.join(dataDir, 'models'))).toEqual([sha(bytes)]);
  });

  it('discards the temp file when the model is already cached', async () => {
    const store = await newStore();
    const { sha256, bytes } = await putModel(store);
    const temp = store.tempPath();
    await writeFile(temp, bytes);
    await store.put(temp, sha256, { version: 'again' });
    expect(existsSync(temp)).toBe(false);
    expect(await store.readManifest(sha256)).toEqual({});
    expect(await readdir(path.join(dataDir, 'models'))).toEqual([sha256]);
  });

  it('init() empties tmp and removes junk and incomplete model dirs, keeping complete ones', async () => {
    const store = await newStore();
    const { sha256 } = await putModel(store);
    const other = sha(randomBytes(8));
    await writeFile(path.join(dataDir, 'tmp', 'leftover.download'), 'partial');
    await mkdir(path.join(dataDir, 'tmp', 'nested'));
    await mkdir(path.join(dataDir, 'models', 'not-a-hash'));
    await mkdir(path.join(dataDir, 'models', `${other}.partial-abc`));
    await writeFile(path.join(dataDir, 'models', `${other}.partial-abc`, 'model.onnx'), 'x');
    await mkdir(path.join(dataDir, 'models', other)); // a hash dir without its model file
    await writeFile(path.join(dataDir, 'models', 'stray.onnx'), 'x');
    await writeFile(path.join(dataDir, 'state.json.tmp-123'), '{');

    const again = await newStore();
    expect(await readdir(path.join(dataDir, 'tmp'))).toEqual([]);
    expect(await readdir(path.join(dataDir, 'models'))).toEqual([sha256]);
    expect(existsSync(path.join(dataDir, 'state.json.tmp-123'))).toBe(false);
    expect(await again.has(sha256)).toBe(true);
    expect(await again.has(other)).toBe(false);
  });

  it('never answers has()/modelPath() for a temp path, whatever its name', async () => {
    const store = await newStore();
    const a = store.tempPath();
    const b = store.tempPath();
    expect(a).not.toBe(b);
    expect(path.dirname(a)).toBe(path.join(dataDir, 'tmp'));
    await writeFile(a, 'bytes');
    expect(await store.has(path.basename(a))).toBe(false);
    expect(() => store.modelPath(path.basename(a))).toThrow(EdgeError);
    expect(() => store.modelPath('../tmp/x')).toThrow(EdgeError);
    // Even a download that happens to be named like a hash is not a cached model.
    const bytes = randomBytes(100);
    await writeFile(path.join(dataDir, 'tmp', sha(bytes)), bytes);
    expect(await store.has(sha(bytes))).toBe(false);
    expect(await store.has('../tmp/whatever')).toBe(false);
  });

  it('rejects a malformed sha256 in put() without touching the cache', async () => {
    const store = await newStore();
    const temp = store.tempPath();
    await writeFile(temp, 'x');
    await expect(store.put(temp, '../../etc', {})).rejects.toMatchObject({
      code: ErrorCodes.DESIRED_INVALID,
    });
    expect(await readdir(path.join(dataDir, 'models'))).toEqual([]);
  });

  it.skipIf(process.getuid?.() === 0)('maps a read-only cache to STORAGE_FAILED', async () => {
    const store = await newStore();
    await chmod(path.join(dataDir, 'models'), 0o555);
    const temp = store.tempPath();
    await writeFile(temp, 'x');
    await expect(store.put(temp, sha(Buffer.from('x')), {})).rejects.toMatchObject({
      code: ErrorCodes.STORAGE_FAILED,
    });
    expect(existsSync(temp)).toBe(false);
  });

  it('maps disk errors to STORAGE_FAILED and others to INTERNAL', () => {
    const errno = (code: string): Error => Object.assign(new Error(code), { code });
    for (const code of ['ENOSPC', 'EDQUOT', 'EACCES', 'EROFS']) {
      expect(toStorageError(errno(code), 'x').code).toBe(ErrorCodes.STORAGE_FAILED);
    }
    expect(toStorageError(errno('ENOENT'), 'x').code).toBe(ErrorCodes.INTERNAL);
  });

  describe('state.json', () => {
    it('round-trips the last known good model and the history', async () => {
      const store = await newStore();
      const a = await putModel(store, { name: 'pcb', version: '1', labels: ['ok', 'bridge'] });
      const b = await putModel(store);
      expect(await store.lastKnownGood()).toBeUndefined();
      expect(await store.previous()).toBeUndefined();
      await store.markActive(a.sha256, { name: 'pcb', version: '1', labels: ['ok', 'bridge'] });
      await store.markActive(b.sha256, { name: 'pcb', version: '2' });

      const raw = JSON.parse(await readFile(path.join(dataDir, 'state.json'), 'utf8')) as StoreState;
      expect(raw.lastKnownGood).toMatchObject({ sha256: b.sha256, manifest: { version: '2' } });
      expect(raw.history.map((h) => [h.sha256, h.version, h.name])).toEqual([
        [b.sha256, '2', 'pcb'],
        [a.sha256, '1', 'pcb'],
      ]);
      expect(Number.isNaN(Date.parse(raw.history[0]?.activatedAt ?? ''))).toBe(false);
      expect((await readdir(dataDir)).filter((n) => n.startsWith('state.json'))).toEqual(['state.json']);

      const reopened = await newStore();
      expect(await reopened.lastKnownGood()).toMatchObject({
        sha256: b.sha256,
        manifest: { name: 'pcb', version: '2' },
      });
      // The rollback target carries the manifest stored beside its model.
      expect(await reopened.previous()).toMatchObject({
        sha256: a.sha256,
        version: '1',
        manifest: { name: 'pcb', version: '1', labels: ['ok', 'bridge'] },
      });
    });

    it('keeps the history unique by sha256, most recent first', async () => {
      const store = await newStore();
      const a = await putModel(store);
      const b = await putModel(store);
      await store.markActive(a.sha256, { version: '1' });
      await store.markActive(b.sha256, { version: '2' });
      await store.markActive(a.sha256, { version: '1' }); // rollback
      expect(store.history().map((h) => h.sha256)).toEqual([a.sha256, b.sha256]);
      expect((await store.previous())?.sha256).toBe(b.sha256);
    });

    it('serialises concurrent writes so the file holds the last state', async () => {
      const store = await newStore();
      const models = await Promise.all([putModel(store), putModel(store), putModel(store)]);
      await Promise.all(models.map((m, i) => store.markActive(m.sha256, { version: String(i) })));
      const reopened = await newStore();
      expect((await reopened.lastKnownGood())?.sha256).toBe(models[2]?.sha256);
      expect(reopened.history()).toHaveLength(3);
    });

    it('never persists the model URL', async () => {
      const store = await newStore();
      const a = await putModel(store);
      await store.markActive(a.sha256, { version: '1', url: 'https://x/m.onnx?sig=SECRET' } as never);
      expect(await readFile(path.join(dataDir, 'state.json'), 'utf8')).not.toContain('SECRET');
    });

    it('starts without history when state.json is corrupt, keeping the file aside', async () => {
      await newStore();
      await writeFile(path.join(dataDir, 'state.json'), '{"lastKnownGood": ');
      const store = await newStore();
      expect(await store.lastKnownGood()).toBeUndefined();
      expect(store.history()).toEqual([]);
      expect((await readdir(dataDir)).some((n) => n.startsWith('state.json.corrupt-'))).toBe(true);
    });

    it('forgets a last known good model whose files are gone', async () => {
      const store = await newStore();
      const a = await putModel(store);
      await store.markActive(a.sha256, { version: '1' });
      await rm(path.join(dataDir, 'models', a.sha256), { recursive: true });
      const reopened = await newStore();
      expect(await reopened.lastKnownGood()).toBeUndefined();
    });
  });

  describe('prune()', () => {
    it('keeps the current model and the `keep` most recent, deleting the rest', async () => {
      const store = await newStore(2);
      const [a, b, c, d] = [
        await putModel(store),
        await putModel(store),
        await putModel(store),
        await putModel(store),
      ];
      const pending = await putModel(store);
      for (const m of [a, b, c, d]) await store.markActive(m.sha256, {});

      const removed = await store.prune([pending.sha256]);
      expect(removed.sort()).toEqual([a.sha256, b.sha256].sort());
      expect((await readdir(path.join(dataDir, 'models'))).sort()).toEqual(
        [c.sha256, d.sha256, pending.sha256].sort(),
      );
      expect((await store.previous())?.sha256).toBe(c.sha256);
      expect(await store.has(c.sha256)).toBe(true);

      // Not protected any more: a model never activated goes at the next prune.
      expect(await store.prune()).toEqual([pending.sha256]);
    });

    it("keeps a pinned model (a shadow trial's candidate) until every pin is released", async () => {
      const store = await newStore(1);
      const active = await putModel(store);
      await store.markActive(active.sha256, {});
      const candidate = await putModel(store);
      const unpinA = store.pin(candidate.sha256.toUpperCase());
      const unpinB = store.pin(candidate.sha256);
      expect(await store.prune()).toEqual([]);
      unpinA();
      unpinA(); // idempotent: the other pin still holds
      expect(await store.prune()).toEqual([]);
      expect(await store.has(candidate.sha256)).toBe(true);
      unpinB();
      expect(await store.prune()).toEqual([candidate.sha256]);
    });

    it('always keeps the current model, even with keep 0', async () => {
      const store = await newStore(0);
      const a = await putModel(store);
      const b = await putModel(store);
      await store.markActive(a.sha256, {});
      await store.markActive(b.sha256, {});
      expect(await store.prune()).toEqual([a.sha256]);
      expect(await store.has(b.sha256)).toBe(true);
    });
  });
});

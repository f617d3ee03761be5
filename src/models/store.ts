import { randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import { parsePartialManifest, type PartialManifest } from '../scoring/manifest.js';

/**
 * The model cache under DATA_DIR (README, "Model lifecycle: the module twin"), addressed by content hash:
 *
 *   <dataDir>/models/<sha256>/model.onnx   the verified model
 *   <dataDir>/models/<sha256>/model.json   its manifest (without the URL: it may carry a SAS token)
 *   <dataDir>/tmp/                         downloads in progress; emptied by init()
 *   <dataDir>/state.json                   last known good model and activation history
 *
 * A model directory appears by one rename of a fully written and fsynced `.partial-` directory,
 * so a directory with a hash name is complete. Paths are only ever built from a validated
 * sha256, never from anything the twin sends.
 */

export interface ModelStoreOptions {
  /** DATA_DIR: a directory the daemon owns (a volume, so the cache survives container updates). */
  dataDir: string;
  /** How many of the most recently activated models prune() keeps on disk (the current one always). */
  keep: number;
  logger: Logger;
}

export interface LastKnownGood {
  sha256: string;
  manifest: PartialManifest;
  /** ISO 8601. */
  activatedAt: string;
}

export interface HistoryEntry {
  sha256: string;
  version?: string;
  name?: string;
  /** ISO 8601. */
  activatedAt: string;
}

/** A history entry with the manifest stored beside its model: what a rollback activates. */
export interface RollbackTarget extends HistoryEntry {
  manifest: PartialManifest;
}

/** The shape of state.json. */
export interface StoreState {
  lastKnownGood: LastKnownGood | null;
  /** Most recent first, unique by sha256. */
  history: HistoryEntry[];
}

const MODEL_FILE = 'model.onnx';
const MANIFEST_FILE = 'model.json';
const STATE_FILE = 'state.json';
/** Bounds state.json; model directories are bounded by prune(), not by this. */
const MAX_HISTORY = 50;
const SHA256_RE = /^[0-9a-f]{64}$/;
/** Errors that mean the disk, not the daemon, is the problem. */
const STORAGE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EIO']);

/** Validates a sha256 (64 hex characters, any case) and returns it in lower case. */
export function normalizeSha256(value: string): string {
  if (!/^[0-9a-fA-F]{64}$/.test(value)) {
    throw new EdgeError(ErrorCodes.DESIRED_INVALID, 'sha256 must be 64 hexadecimal characters');
  }
  return value.toLowerCase();
}

/** Maps a file-system error to STORAGE_FAILED when the disk is at fault; others become INTERNAL. */
export function toStorageError(err: unknown, message: string): EdgeError {
  if (isEdgeError(err)) return err;
  const code = errnoCode(err);
  return new EdgeError(
    code !== undefined && STORAGE_CODES.has(code) ? ErrorCodes.STORAGE_FAILED : ErrorCodes.INTERNAL,
    message,
    { reason: code },
    { cause: err },
  );
}

export class ModelStore {
  private readonly dataDir: string;
  private readonly modelsDir: string;
  private readonly tmpDir: string;
  private readonly statePath: string;
  private readonly keep: number;
  private readonly log: Logger;
  private state: StoreState = { lastKnownGood: null, history: [] };
  /** Models kept out of prune() by pin(), with their pin counts. */
  private readonly pinned = new Map<string, number>();
  /** state.json writes run one after another; each writes the newest snapshot. */
  private writeChain: Promise<void> = Promise.resolve();

  constructor(opts: ModelStoreOptions) {
    this.dataDir = opts.dataDir;
    this.modelsDir = path.join(opts.dataDir, 'models');
    this.tmpDir = path.join(opts.dataDir, 'tmp');
    this.statePath = path.join(opts.dataDir, STATE_FILE);
    this.keep = Math.max(0, Math.floor(opts.keep));
    this.log = opts.logger.child({ component: 'model-store' });
  }

  /**
   * Creates the layout, empties tmp/ (a download of a killed process is never resumed or used),
   * removes anything in models/ that is not a complete hash-named model directory (including
   * `.partial-` directories of an interrupted put), and loads state.json.
   */
  async init(): Promise<void> {
    const removed: string[] = [];
    try {
      await mkdir(this.modelsDir, { recursive: true });
      await mkdir(this.tmpDir, { recursive: true });
      for (const name of await readdir(this.tmpDir)) {
        await rm(path.join(this.tmpDir, name), { recursive: true, force: true });
      }
      for (const name of await readdir(this.dataDir)) {
        if (name.startsWith(`${STATE_FILE}.tmp-`)) await rm(path.join(this.dataDir, name), { force: true });
      }
      for (const entry of await readdir(this.modelsDir, { withFileTypes: true })) {
        const complete =
          entry.isDirectory() &&
          SHA256_RE.test(entry.name) &&
          (await isFile(path.join(this.modelsDir, entry.name, MODEL_FILE)));
        if (!complete) {
          await rm(path.join(this.modelsDir, entry.name), { recursive: true, force: true });
          removed.push(entry.name);
        }
      }
    } catch (err) {
      throw toStorageError(err, 'cannot prepare the model store');
    }
    if (removed.length > 0)
      this.log.warn({ removed }, 'removed incomplete or foreign entries from the model store');
    await this.loadState();
  }

  /** A fresh, unique path in tmp/ for a download. Never a name that has() or modelPath() accepts. */
  tempPath(): string {
    return path.join(this.tmpDir, `${randomUUID()}.download`);
  }

  /** Whether a complete model with this sha256 is cached. False for anything not a sha256. */
  async has(sha256: string): Promise<boolean> {
    if (!/^[0-9a-fA-F]{64}$/.test(sha256)) return false;
    return isFile(this.modelPath(sha256));
  }

  /** `<dataDir>/models/<sha256>/model.onnx`; throws DESIRED_INVALID for anything not a sha256. */
  modelPath(sha256: string): string {
    return path.join(this.dirOf(normalizeSha256(sha256)), MODEL_FILE);
  }

  /** The manifest stored beside a cached model, or undefined when there is none or it is unreadable. */
  async readManifest(sha256: string): Promise<Record<string, unknown> | undefined> {
    const file = path.join(this.dirOf(normalizeSha256(sha256)), MANIFEST_FILE);
    try {
      const value: unknown = JSON.parse(await readFile(file, 'utf8'));
      return isRecord(value) ? value : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Moves a verified download into the cache under its sha256, with its manifest, atomically; the
   * temp file is consumed either way. When the model is already cached the temp is discarded.
   * Returns the model's path. Throws STORAGE_FAILED when the disk is full or not writable.
   */
  async put(tempFile: string, sha256: string, manifest: object): Promise<string> {
    const sha = normalizeSha256(sha256);
    const finalDir = this.dirOf(sha);
    const modelPath = path.join(finalDir, MODEL_FILE);
    if (await this.has(sha)) {
      await rm(tempFile, { force: true }).catch(() => undefined);
      this.log.debug({ sha256: sha }, 'model already cached; download discarded');
      return modelPath;
    }
    const partial = path.join(this.modelsDir, `${sha}.partial-${randomBytes(6).toString('hex')}`);
    try {
      await mkdir(partial);
      const target = path.join(partial, MODEL_FILE);
      await moveFile(tempFile, target);
      await fsyncFile(target);
      await writeDurable(
        path.join(partial, MANIFEST_FILE),
        `${JSON.stringify(withoutUrl(manifest), null, 2)}\n`,
      );
      await fsyncDir(partial);
      try {
        await rename(partial, finalDir);
      } catch (err) {
        const code = errnoCode(err);
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        // A concurrent put of the same content won; its copy is as good as ours.
        await rm(partial, { recursive: true, force: true });
        return modelPath;
      }
      await fsyncDir(this.modelsDir);
      this.log.info({ sha256: sha }, 'model stored');
      return modelPath;
    } catch (err) {
      await rm(partial, { recursive: true, force: true }).catch(() => undefined);
      await rm(tempFile, { force: true }).catch(() => undefined);
      throw toStorageError(err, 'cannot store the model');
    }
  }

  /**
   * Records a model as active: it becomes the last known good (served at the next start before IoT
   * Hub is reachable) and the head of the history. Writes state.json atomically.
   */
  async markActive(sha256: string, manifest: PartialManifest): Promise<void> {
    const sha = normalizeSha256(sha256);
    const activatedAt = new Date().toISOString();
    const entry: HistoryEntry = { sha256: sha, activatedAt };
    if (typeof manifest.version === 'string') entry.version = manifest.version;
    if (typeof manifest.name === 'string') entry.name = manifest.name;
    this.state = {
      lastKnownGood: { sha256: sha, manifest: withoutUrl(manifest), activatedAt },
      history: [entry, ...this.state.history.filter((h) => h.sha256 !== sha)].slice(0, MAX_HISTORY),
    };
    const snapshot = JSON.stringify(this.state, null, 2);
    const write = this.writeChain.then(() => this.writeState(snapshot));
    this.writeChain = write.catch(() => undefined);
    return write;
  }

  /** The model to serve at start-up, if one was ever activated and its files were there at init(). */
  async lastKnownGood(): Promise<LastKnownGood | undefined> {
    return this.state.lastKnownGood ?? undefined;
  }

  /**
   * The model active before the current one (the rollback target), with the manifest from its
   * model.json; undefined when there is none or its files are gone (pruned, keep < 2).
   */
  async previous(): Promise<RollbackTarget | undefined> {
    const entry = this.state.history[1];
    if (entry === undefined || !(await this.has(entry.sha256))) return undefined;
    const stored = await this.readManifest(entry.sha256);
    let manifest: PartialManifest = {};
    try {
      manifest = parsePartialManifest(stored ?? {}, MANIFEST_FILE);
    } catch (err) {
      this.log.warn({ err, sha256: entry.sha256 }, 'stored manifest is invalid; rolling back without it');
    }
    return { ...entry, manifest };
  }

  /** Activation history, most recent first. */
  history(): readonly HistoryEntry[] {
    return this.state.history;
  }

  /**
   * Deletes cached models other than the current one, the `keep` most recently activated, and
   * `protect` (a model being downloaded or loaded that is not active yet). Returns the deleted
   * sha256s. Failures are logged; pruning is housekeeping and never fails the caller.
   */
  /**
   * Keeps a model out of prune() until the returned function is called: a model in use outside the
   * active model's history (a shadow trial's candidate) must not vanish between put and load.
   */
  pin(sha256: string): () => void {
    const sha = sha256.toLowerCase();
    this.pinned.set(sha, (this.pinned.get(sha) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.pinned.get(sha) ?? 1) - 1;
      if (n > 0) this.pinned.set(sha, n);
      else this.pinned.delete(sha);
    };
  }

  async prune(protect: Iterable<string> = []): Promise<string[]> {
    const keep = new Set(this.state.history.slice(0, this.keep).map((h) => h.sha256));
    for (const sha of this.pinned.keys()) keep.add(sha);
    const current = this.state.lastKnownGood?.sha256 ?? this.state.history[0]?.sha256;
    if (current !== undefined) keep.add(current);
    for (const sha of protect) if (/^[0-9a-fA-F]{64}$/.test(sha)) keep.add(sha.toLowerCase());
    const removed: string[] = [];
    let names: string[];
    try {
      names = await readdir(this.modelsDir);
    } catch (err) {
      this.log.warn({ err }, 'cannot list the model store');
      return removed;
    }
    for (const name of names) {
      // `.partial-` directories may belong to a put in progress; init() clears leftovers.
      if (!SHA256_RE.test(name) || keep.has(name)) continue;
      try {
        await rm(path.join(this.modelsDir, name), { recursive: true, force: true });
        removed.push(name);
      } catch (err) {
        this.log.warn({ err, sha256: name }, 'cannot delete a cached model');
      }
    }
    if (removed.length > 0) this.log.info({ removed }, 'pruned cached models');
    return removed;
  }

  private dirOf(sha: string): string {
    return path.join(this.modelsDir, sha);
  }

  private async loadState(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.statePath, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw toStorageError(err, 'cannot read state.json');
    }
    const parsed = parseState(text);
    if (parsed === undefined) {
      // Kept aside for whoever investigates; the daemon starts as if it had no history.
      const aside = `${this.statePath}.corrupt-${Date.now()}`;
      await rename(this.statePath, aside).catch(() => undefined);
      this.log.warn({ movedTo: path.basename(aside) }, 'state.json is unreadable; starting without history');
      return;
    }
    const lkg = parsed.lastKnownGood;
    if (lkg !== null && !(await this.has(lkg.sha256))) {
      this.log.warn({ sha256: lkg.sha256 }, 'last known good model is missing from the store');
      parsed.lastKnownGood = null;
    }
    this.state = parsed;
  }

  private async writeState(text: string): Promise<void> {
    const tmp = `${this.statePath}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      await writeDurable(tmp, `${text}\n`);
      await rename(tmp, this.statePath);
      await fsyncDir(this.dataDir);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw toStorageError(err, 'cannot write state.json');
    }
  }
}

function parseState(text: string): StoreState | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(value) || !Array.isArray(value.history)) return undefined;
  let lastKnownGood: LastKnownGood | null = null;
  const raw = value.lastKnownGood;
  if (raw !== null && raw !== undefined) {
    if (!isRecord(raw) || !isSha(raw.sha256) || typeof raw.activatedAt !== 'string') return undefined;
    let manifest: PartialManifest;
    try {
      manifest = parsePartialManifest(raw.manifest, STATE_FILE);
    } catch {
      return undefined;
    }
    lastKnownGood = { sha256: raw.sha256, manifest, activatedAt: raw.activatedAt };
  }
  const history: HistoryEntry[] = [];
  for (const h of value.history as unknown[]) {
    if (!isRecord(h) || !isSha(h.sha256) || typeof h.activatedAt !== 'string') continue;
    if (history.some((e) => e.sha256 === h.sha256)) continue;
    const entry: HistoryEntry = { sha256: h.sha256, activatedAt: h.activatedAt };
    if (typeof h.version === 'string') entry.version = h.version;
    if (typeof h.name === 'string') entry.name = h.name;
    history.push(entry);
  }
  return { lastKnownGood, history };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isSha(value: unknown): value is string {
  return typeof value === 'string' && SHA256_RE.test(value);
}

/** The twin's model block carries `url`, possibly with a SAS token: never persisted. */
function withoutUrl(manifest: object): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...(manifest as Record<string, unknown>) };
  delete copy.url;
  return copy;
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    // tmp/ on another file system (a separate mount): copy, then drop the original.
    if (errnoCode(err) !== 'EXDEV') throw err;
    await copyFile(from, to);
    await rm(from, { force: true });
  }
}

async function writeDurable(file: string, text: string): Promise<void> {
  const handle = await open(file, 'w');
  try {
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a rename durable. Some file systems refuse fsync on directories; that is not an error. */
async function fsyncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (err) {
    const code = errnoCode(err);
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF') throw err;
  } finally {
    await handle?.close();
  }
}

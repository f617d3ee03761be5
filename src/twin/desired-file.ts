import { watchFile, unwatchFile, type Stats } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { ReportedSink } from './reported.js';

/**
 * Standalone mode: DESIRED_PROPERTIES_FILE plays the module twin. The file holds the same shape as
 * the desired properties; every change is handed to the same reconciler as a twin document, with
 * a local version counter. Polling (stat) rather than fs.watch: editors and config tools replace
 * files by rename, which inotify watches on the file itself miss.
 */
export class DesiredFileWatcher {
  private version = 0;
  private lastText: string | undefined;
  private started = false;

  constructor(
    private readonly opts: {
      file: string;
      intervalMs: number;
      logger: Logger;
      onDesired: (doc: Record<string, unknown>, version: number) => void;
      onInvalid: (err: EdgeError, version: number) => void;
    },
  ) {}

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.check();
    watchFile(this.opts.file, { interval: this.opts.intervalMs, persistent: false }, this.onStat);
  }

  private readonly onStat = (_curr: Stats, _prev: Stats): void => {
    void this.check();
  };

  /** Reads the file; a change in content is a new desired version. */
  async check(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.opts.file, 'utf8');
    } catch (err) {
      if (this.lastText !== undefined) {
        this.opts.logger.warn(
          { component: 'twin', err },
          'desired properties file unreadable; keeping the current state',
        );
      }
      return;
    }
    if (text === this.lastText) return;
    this.lastText = text;
    const version = ++this.version;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      this.opts.onInvalid(
        new EdgeError(ErrorCodes.DESIRED_INVALID, 'desired properties file is not valid JSON'),
        version,
      );
      return;
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      this.opts.onInvalid(
        new EdgeError(ErrorCodes.DESIRED_INVALID, 'desired properties must be a JSON object'),
        version,
      );
      return;
    }
    this.opts.onDesired(doc as Record<string, unknown>, version);
  }

  stop(): void {
    if (this.started) unwatchFile(this.opts.file, this.onStat);
    this.started = false;
  }
}

/** Standalone reported properties: the whole document, written atomically to a JSON file. */
export class ReportedFileSink implements ReportedSink {
  private doc: Record<string, unknown> = {};

  constructor(private readonly file: string) {}

  async send(patch: Record<string, unknown>): Promise<void> {
    this.doc = { ...this.doc, ...patch };
    const tmp = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${process.pid}.tmp`);
    await writeFile(tmp, JSON.stringify(this.doc, null, 2) + '\n');
    await rename(tmp, this.file);
  }
}

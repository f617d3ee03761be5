import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { EdgeError, ErrorCodes } from '../errors.js';
import { LAYOUT_NAME, parseLayout, type Layout } from './schema.js';

/** Reported `layouts` (README, "Board layouts"): the twin's layouts in force and the last refusal. */
export interface LayoutReport {
  /** Layouts the twin's `layouts` block put in force, by name. */
  fromTwin: string[];
  /** Layouts stored in all (the twin's and those put over HTTP). */
  stored: number;
  /** The last layout of the twin that was refused (the others still apply); null when none. */
  lastError: { layout: string; code: string; message: string; at: string } | null;
}

export interface LayoutStoreOptions {
  dataDir: string;
  maxRegions: number;
  logger: Logger;
}

/**
 * Board layouts kept under `DATA_DIR/layouts`, one JSON file per layout, written atomically; the
 * one owner of the registered layouts. Loaded at start, so a restart scores the same boards.
 */
export class LayoutStore {
  private readonly layouts = new Map<string, Layout>();
  /** Names the twin's `layouts` block owns: removed again when the block no longer names them. */
  private readonly fromTwin = new Set<string>();
  private applying: Promise<unknown> = Promise.resolve();
  private readonly dir: string;

  constructor(private readonly opts: LayoutStoreOptions) {
    this.dir = path.join(opts.dataDir, 'layouts');
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (const file of await readdir(this.dir)) {
      const name = file.replace(/\.json$/, '');
      if (!file.endsWith('.json') || !LAYOUT_NAME.test(name)) continue;
      try {
        const body = JSON.parse(await readFile(path.join(this.dir, file), 'utf8')) as { source?: string };
        const { source, ...layout } = body;
        this.layouts.set(name, parseLayout(name, layout, this.opts.maxRegions));
        if (source === 'twin') this.fromTwin.add(name);
      } catch (err) {
        this.opts.logger.warn({ component: 'layouts', layout: name, err }, 'skipping an unreadable layout');
      }
    }
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  get(name: string): Layout {
    const layout = this.layouts.get(name);
    if (!layout)
      throw new EdgeError(ErrorCodes.LAYOUT_NOT_FOUND, `no layout named ${name}`, { layout: name });
    return layout;
  }

  list(): { name: string; regions: number }[] {
    return [...this.layouts.values()]
      .map((l) => ({ name: l.name, regions: l.regions.length }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Validates and stores a layout (replacing one of the same name). Returns whether it was new.
   * A layout put over HTTP is the line's own, even under a name the twin used before.
   */
  async put(
    name: string,
    body: unknown,
    source: 'http' | 'twin' = 'http',
  ): Promise<{ layout: Layout; created: boolean }> {
    const layout = parseLayout(name, body, this.opts.maxRegions);
    const file = path.join(this.dir, `${name}.json`);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await writeFile(
        tmp,
        JSON.stringify({ regions: layout.regions, ...(source === 'twin' ? { source } : {}) }),
      );
      await rename(tmp, file);
    } catch (err) {
      throw new EdgeError(ErrorCodes.STORAGE_FAILED, 'the layout could not be stored', {}, { cause: err });
    }
    const created = !this.layouts.has(name);
    this.layouts.set(name, layout);
    if (source === 'twin') this.fromTwin.add(name);
    else this.fromTwin.delete(name);
    this.opts.logger.info(
      { component: 'layouts', layout: name, regions: layout.regions.length },
      'layout stored',
    );
    return { layout, created };
  }

  /**
   * Puts the twin's `layouts` block in force (README, "Board layouts"): each named layout is
   * stored (unchanged ones are left alone), layouts the twin put before and no longer names are
   * removed, and those put over HTTP are untouched. A refused layout is reported and skipped; the
   * rest still apply, and a refused layout's previous version stays. Calls run one at a time.
   */
  applyTwin(block: Readonly<Record<string, unknown>> | undefined): Promise<LayoutReport> {
    const run = this.applying.then(() => this.applyTwinNow(block ?? {}));
    this.applying = run.catch(() => undefined);
    return run;
  }

  private async applyTwinNow(block: Readonly<Record<string, unknown>>): Promise<LayoutReport> {
    let lastError: LayoutReport['lastError'] = null;
    for (const [name, body] of Object.entries(block)) {
      const current = this.layouts.get(name);
      const same =
        current &&
        this.fromTwin.has(name) &&
        JSON.stringify(current.regions) === JSON.stringify((body as { regions?: unknown }).regions);
      if (same) continue;
      try {
        await this.put(name, body, 'twin');
      } catch (err) {
        const e = err instanceof EdgeError ? err : new EdgeError(ErrorCodes.LAYOUT_INVALID, String(err));
        lastError = { layout: name, code: e.code, message: e.message, at: new Date().toISOString() };
        this.opts.logger.warn(
          { component: 'layouts', layout: name, code: e.code, reason: e.message },
          'twin layout refused',
        );
      }
    }
    for (const name of [...this.fromTwin]) {
      if (name in block) continue;
      await rm(path.join(this.dir, `${name}.json`), { force: true });
      this.layouts.delete(name);
      this.fromTwin.delete(name);
      this.opts.logger.info(
        { component: 'layouts', layout: name },
        'layout removed: the twin no longer names it',
      );
    }
    return { fromTwin: [...this.fromTwin].sort(), stored: this.layouts.size, lastError };
  }
}

import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { EdgeError, ErrorCodes } from '../errors.js';
import { LAYOUT_NAME, parseLayout, type Layout } from './schema.js';

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
        const body: unknown = JSON.parse(await readFile(path.join(this.dir, file), 'utf8'));
        this.layouts.set(name, parseLayout(name, body, this.opts.maxRegions));
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

  /** Validates and stores a layout (replacing one of the same name). Returns whether it was new. */
  async put(name: string, body: unknown): Promise<{ layout: Layout; created: boolean }> {
    const layout = parseLayout(name, body, this.opts.maxRegions);
    const file = path.join(this.dir, `${name}.json`);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify({ regions: layout.regions }));
      await rename(tmp, file);
    } catch (err) {
      throw new EdgeError(ErrorCodes.STORAGE_FAILED, 'the layout could not be stored', {}, { cause: err });
    }
    const created = !this.layouts.has(name);
    this.layouts.set(name, layout);
    this.opts.logger.info(
      { component: 'layouts', layout: name, regions: layout.regions.length },
      'layout stored',
    );
    return { layout, created };
  }
}

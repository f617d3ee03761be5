import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The layout shows the architecture (docs/architecture.md, "Where things live"): folders depend on
 * each other without a loop, telemetry knows nothing of the twin or the model lifecycle, and no
 * source file grows past 500 lines.
 */

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function sources(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** A file's node in the dependency graph: its top folder under src/, or the root file itself. */
function nodeOf(file: string): string {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length > 1 ? `${rel[0]}/` : rel[0]!;
}

/** Relative imports and re-exports (type-only ones too: they tie the folders as much). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/gm)].map((m) => m[1]!);
  return specs.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

const files = sources();
const edges = new Map<string, Set<string>>();
for (const f of files) {
  const from = nodeOf(f);
  for (const target of importsOf(f)) {
    const to = nodeOf(target);
    if (to === from) continue;
    if (!edges.has(from)) edges.set(from, new Set());
    edges.get(from)!.add(to);
  }
}

/** Every cycle's path, found by depth-first search (empty when the graph has none). */
function cycles(): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of edges.get(n) ?? []) {
      if (state.get(m) === 'open') found.push([...stack.slice(stack.indexOf(m)), m]);
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of edges.keys()) if (!state.has(n)) visit(n);
  return found;
}

describe('source layout', () => {
  it('reads the imports it checks (the graph is not empty)', () => {
    expect(files.length).toBeGreaterThan(20);
    expect(edges.get('app.ts')).toContain('scoring/');
    expect(edges.get('twin/')).toContain('models/');
  });

  it('has no import cycle between folders', () => {
    expect(cycles().map((c) => c.join(' → '))).toEqual([]);
  });

  it('telemetry imports nothing from the twin or the model lifecycle', () => {
    expect([...(edges.get('telemetry/') ?? [])].filter((t) => t === 'twin/' || t === 'models/')).toEqual([]);
  });

  it('scoring depends on neither the twin nor the model lifecycle', () => {
    expect([...(edges.get('scoring/') ?? [])].filter((t) => t === 'twin/' || t === 'models/')).toEqual([]);
  });

  it('keeps every source file under 500 lines', () => {
    const long = files
      .map((f) => ({ f: path.relative(SRC, f), lines: readFileSync(f, 'utf8').split('\n').length }))
      .filter((x) => x.lines > 500);
    expect(long).toEqual([]);
  });

  it('cites only documents that are in the repository', () => {
    const outside = files.filter((f) => readFileSync(f, 'utf8').includes('DESIGN.md'));
    expect(outside.map((f) => path.relative(SRC, f))).toEqual([]);
  });
});

/**
 * A small evaluator of the IoT Hub query WHERE clauses that `edge-scorer rollout` writes, over a
 * module twin held as plain documents: `a AND b AND …` of `path = 'x'`, `path < n`, `path >= n`,
 * `path IN ['a', 'b']`. Enough to check a deployment's metrics against what a daemon reports; it
 * refuses anything else rather than guess.
 */
export interface ModuleTwin {
  moduleId: string;
  desired: Record<string, unknown>;
  reported: Record<string, unknown>;
}

/** Every twin path (`properties.reported.model.version`, …) a query reads. */
export function pathsOf(query: string): string[] {
  return [...query.matchAll(/properties\.(?:reported|desired)(?:\.[A-Za-z0-9_$]+)+/g)].map((m) => m[0]);
}

/** The value at a twin path; undefined where the twin has none. */
export function valueAt(twin: ModuleTwin, path: string): unknown {
  const [root, section, ...rest] = path.split('.');
  if (root !== 'properties' || (section !== 'reported' && section !== 'desired')) {
    throw new Error(`not a twin property path: ${path}`);
  }
  let v: unknown = twin[section];
  for (const key of rest) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

function literal(raw: string): unknown {
  const s = raw.trim();
  if (/^'[^']*'$/.test(s)) return s.slice(1, -1);
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  if (/^\[.*\]$/.test(s))
    return s
      .slice(1, -1)
      .split(',')
      .map((x) => literal(x));
  throw new Error(`unsupported literal: ${raw}`);
}

/** Whether the module matches the query's WHERE clause. */
export function matches(query: string, twin: ModuleTwin): boolean {
  const m = /^SELECT deviceId FROM devices\.modules WHERE (.+)$/.exec(query);
  if (!m) throw new Error(`unsupported query: ${query}`);
  return m[1]!.split(' AND ').every((cond) => {
    const c = /^([A-Za-z0-9_.$]+)\s*(=|<|>=|IN)\s*(.+)$/.exec(cond.trim());
    if (!c) throw new Error(`unsupported condition: ${cond}`);
    const [, path, op, raw] = c;
    const actual = path === 'moduleId' ? twin.moduleId : valueAt(twin, path!);
    const expected = literal(raw!);
    if (actual === undefined) return false;
    switch (op) {
      case '=':
        return actual === expected;
      case '<':
        return typeof actual === 'number' && actual < (expected as number);
      case '>=':
        return typeof actual === 'number' && actual >= (expected as number);
      default:
        return (expected as unknown[]).includes(actual);
    }
  });
}

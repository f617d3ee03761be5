/**
 * Lints the Dockerfiles (`npm run lint:docker`): dockerfile-utils' validator (the checks of the VS
 * Code Docker extension) plus hadolint-style rules that matter for this image, since no Docker
 * engine builds them in CI:
 *
 * - `pinned-base-image`: every base image has a tag or digest, never `:latest` (DL3006/DL3007);
 * - `non-root-user`: every final stage (one no other stage builds on) runs as a non-root USER (DL3002);
 * - `healthcheck`: every final stage has a HEALTHCHECK, so IoT Edge sees a hung daemon;
 * - `apt-get`: `apt-get install -y --no-install-recommends` after an `apt-get update` in the same
 *   RUN, which also removes /var/lib/apt/lists (DL3009, DL3015);
 * - `no-add`: no ADD of URLs (unverified downloads) and no ADD where COPY does (DL3020);
 * - `exec-form`: CMD and ENTRYPOINT in JSON form, so SIGTERM reaches tini and the daemon (DL3025);
 * - `copy-source`: every COPY source exists in the build context and .dockerignore lets it in.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { validate } from 'dockerfile-utils';

export interface Problem {
  file: string;
  line: number;
  rule: string;
  message: string;
}

/** One instruction with its continuation lines joined; `line` is 1-based. */
export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

interface Stage {
  index: number;
  name: string | undefined;
  line: number;
  /** The index of the stage this one is built FROM, when it is a stage of this file. */
  parent: number | undefined;
  instructions: Instruction[];
}

export interface LintOptions {
  /** Name used in messages. */
  file: string;
  /** The build context: COPY sources are checked against it and its .dockerignore. */
  contextDir?: string;
}

const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;

/** Splits a Dockerfile into instructions: parser directives, comments and blank lines skipped. */
export function parseDockerfile(text: string): Instruction[] {
  const lines = text.split(/\r?\n/);
  let escape = '\\';
  let i = 0;
  // Parser directives are only recognised before anything else, comments included.
  for (; i < lines.length; i++) {
    const m = DIRECTIVE.exec(lines[i]!);
    if (!m) break;
    if (m[1]!.toLowerCase() === 'escape') escape = m[2]!;
  }
  const out: Instruction[] = [];
  let current: Instruction | undefined;
  for (; i < lines.length; i++) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    // Inside a continuation, comment and empty lines are dropped; outside they end nothing.
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const continues = trimmed.endsWith(escape);
    const body = continues ? trimmed.slice(0, -escape.length) : trimmed;
    if (current) {
      current.args += ` ${body}`;
    } else {
      const m = /^(\S+)\s*(.*)$/.exec(body)!;
      current = { keyword: m[1]!.toUpperCase(), args: m[2]!, line: i + 1 };
    }
    if (!continues) {
      current.args = current.args.trim();
      out.push(current);
      current = undefined;
    }
  }
  if (current) out.push({ ...current, args: current.args.trim() });
  return out;
}

/** Splits instruction arguments into words, honouring quotes; flags (`--x=y`) are words too. */
function words(args: string): string[] {
  return [...args.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

function jsonArray(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(args) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}

/** `${NAME}`, `${NAME:-default}` and `$NAME` from the given values; undefined when one is unset. */
function expand(value: string, vars: Map<string, string>): string | undefined {
  let unresolved = false;
  const out = value.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (_m, braced: string | undefined, fallback: string | undefined, bare: string | undefined) => {
      const v = vars.get((braced ?? bare)!);
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      unresolved = true;
      return '';
    },
  );
  return unresolved ? undefined : out;
}

function argDefault(args: string): [string, string | undefined] {
  const [w] = words(args);
  const eq = (w ?? '').indexOf('=');
  return eq < 0 ? [w ?? '', undefined] : [w!.slice(0, eq), w!.slice(eq + 1)];
}

function splitStages(instructions: Instruction[]): { globals: Map<string, string>; stages: Stage[] } {
  const globals = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const w = words(ins.args).filter((x) => !x.startsWith('--'));
      const name = w[1]?.toUpperCase() === 'AS' ? w[2]?.toLowerCase() : undefined;
      const base = (expand(w[0] ?? '', globals) ?? w[0] ?? '').toLowerCase();
      const parent = stages.find((s) => s.name !== undefined && s.name === base)?.index;
      stages.push({ index: stages.length, name, line: ins.line, parent, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword === 'ARG') {
        const [k, v] = argDefault(ins.args);
        if (v !== undefined) globals.set(k, v.replace(/^["']|["']$/g, ''));
      }
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { globals, stages };
}

/** Whether `image` (after ARG expansion) names a tag other than latest, or a digest. */
function pinProblem(image: string): string | undefined {
  if (image.includes('@sha256:')) return undefined;
  const lastSlash = image.lastIndexOf('/');
  const colon = image.indexOf(':', lastSlash + 1);
  if (colon < 0) return `base image ${image} has no tag: it means :latest; pin a version`;
  const tag = image.slice(colon + 1);
  if (tag === 'latest') return `base image ${image} uses :latest; pin a version`;
  return undefined;
}

function fromOf(stage: Stage, stages: Stage[], key: 'USER' | 'HEALTHCHECK'): Instruction | undefined {
  for (let s: Stage | undefined = stage; s; s = s.parent === undefined ? undefined : stages[s.parent]) {
    const found = s.instructions.filter((i) => i.keyword === key).at(-1);
    if (found) return found;
  }
  return undefined;
}

const clip = (s: string): string => (s.length > 60 ? `${s.slice(0, 59)}…` : s);

const APT_INSTALL = /\bapt(?:-get)?\s+(?:\S+\s+)*?install\b/;

function aptProblems(run: Instruction): string[] {
  const problems: string[] = [];
  const text = jsonArray(run.args)?.join(' ') ?? run.args;
  const commands = text.split(/&&|\|\||;|\|/).map((c) => c.trim());
  const installs = commands.filter((c) => APT_INSTALL.test(c));
  if (installs.length === 0) return problems;
  for (const c of installs) {
    if (!/--no-install-recommends\b|APT::Install-Recommends=(?:false|0)/.test(c)) {
      problems.push(`"${clip(c)}" lacks --no-install-recommends`);
    }
    if (!/(?:^|\s)(?:-y|--yes|--assume-yes|-qq|-q=2|-[a-z]*y[a-z]*)(?=\s|$)/.test(c)) {
      problems.push(`"${clip(c)}" lacks -y`);
    }
  }
  const firstInstall = commands.findIndex((c) => APT_INSTALL.test(c));
  if (!commands.slice(0, firstInstall).some((c) => /\bapt(?:-get)?\s+(?:\S+\s+)*?update\b/.test(c))) {
    problems.push('apt-get install without an apt-get update earlier in the same RUN (stale package lists)');
  }
  if (!/\brm\s+-(?:rf|fr)\s+\/var\/lib\/apt\/lists\/?\*?/.test(text)) {
    problems.push('apt-get install without rm -rf /var/lib/apt/lists/* in the same RUN');
  }
  return problems;
}

/** A .dockerignore pattern list, with Docker's semantics: last match wins, parents count. */
export class DockerIgnore {
  private readonly patterns: { re: RegExp; exclude: boolean }[];

  constructor(text: string) {
    this.patterns = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => {
        const exclude = !l.startsWith('!');
        const p = path.posix.normalize((exclude ? l : l.slice(1)).trim()).replace(/^\/+|\/+$/g, '');
        return { re: DockerIgnore.toRegExp(p), exclude };
      });
  }

  private static toRegExp(pattern: string): RegExp {
    let re = '';
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i]!;
      if (c === '*' && pattern[i + 1] === '*') {
        // `**/` matches any number of directories, including none.
        if (pattern[i + 2] === '/') {
          re += '(?:.*/)?';
          i += 2;
        } else {
          re += '.*';
          i += 1;
        }
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    return new RegExp(`^${re}$`);
  }

  /** Whether `file` (relative to the context, `/`-separated) is left out of the build context. */
  excludes(file: string): boolean {
    const parts = file.split('/');
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const p of this.patterns) {
      if (candidates.some((c) => p.re.test(c))) excluded = p.exclude;
    }
    return excluded;
  }
}

function filesUnder(root: string, rel: string): string[] {
  const abs = path.join(root, rel);
  if (!statSync(abs).isDirectory()) return [rel];
  return readdirSync(abs).flatMap((name) => filesUnder(root, path.posix.join(rel, name)));
}

function copyProblems(ins: Instruction, contextDir: string, ignore: DockerIgnore): string[] {
  const w = jsonArray(ins.args) ?? words(ins.args);
  const args = w.filter((x) => !x.startsWith('--'));
  if (w.some((x) => x.startsWith('--from='))) return [];
  const problems: string[] = [];
  for (const src of args.slice(0, -1)) {
    if (/[*?[]/.test(src) || src.includes('://')) continue;
    const rel =
      path.posix
        .normalize(src)
        .replace(/^\.?\/+/, '')
        .replace(/\/+$/, '') || '.';
    if (!existsSync(path.join(contextDir, rel))) {
      problems.push(`COPY source ${src} does not exist in the build context`);
    } else if (filesUnder(contextDir, rel).every((f) => ignore.excludes(f))) {
      problems.push(`COPY source ${src} is excluded by .dockerignore`);
    }
  }
  return problems;
}

/** Lints one Dockerfile's text. */
export function lintDockerfile(text: string, opts: LintOptions): Problem[] {
  const problems: Problem[] = [];
  const add = (line: number, rule: string, message: string): void => {
    problems.push({ file: opts.file, line, rule, message });
  };

  for (const d of validate(text)) {
    const message = typeof d.message === 'string' ? d.message : d.message.value;
    add(d.range.start.line + 1, `dockerfile-utils/${String(d.code)}`, message);
  }

  const instructions = parseDockerfile(text);
  const { globals, stages } = splitStages(instructions);
  if (stages.length === 0) {
    add(1, 'pinned-base-image', 'no FROM instruction');
    return problems;
  }

  const referenced = new Set<number>();
  const stageByRef = (ref: string): Stage | undefined =>
    /^\d+$/.test(ref) ? stages[Number(ref)] : stages.find((s) => s.name === ref.toLowerCase());
  for (const s of stages) {
    if (s.parent !== undefined) referenced.add(s.parent);
    for (const ins of s.instructions) {
      const from = /--from=(\S+)/.exec(ins.args)?.[1];
      if ((ins.keyword === 'COPY' || ins.keyword === 'ADD') && from) {
        const target = stageByRef(from);
        if (target) referenced.add(target.index);
      }
    }
  }

  for (const s of stages) {
    const fromIns = instructions.find((i) => i.line === s.line)!;
    if (s.parent === undefined) {
      const image = words(fromIns.args).find((x) => !x.startsWith('--')) ?? '';
      const expanded = expand(image, globals);
      if (expanded === undefined) {
        add(s.line, 'pinned-base-image', `base image ${image} uses an ARG without a default`);
      } else if (expanded.toLowerCase() !== 'scratch') {
        const problem = pinProblem(expanded);
        if (problem) add(s.line, 'pinned-base-image', problem);
      }
    }

    const label = s.name ?? `#${s.index}`;
    if (!referenced.has(s.index)) {
      const user = fromOf(s, stages, 'USER');
      const who = user ? words(user.args)[0]!.split(':')[0]! : 'root';
      if (who === 'root' || who === '0') {
        add(user?.line ?? s.line, 'non-root-user', `final stage ${label} runs as root: add a non-root USER`);
      }
      const hc = fromOf(s, stages, 'HEALTHCHECK');
      if (!hc || /^NONE$/i.test(hc.args)) {
        add(s.line, 'healthcheck', `final stage ${label} has no HEALTHCHECK`);
      }
    }

    for (const ins of s.instructions) {
      if (ins.keyword === 'RUN') {
        for (const m of aptProblems(ins)) add(ins.line, 'apt-get', m);
      } else if (ins.keyword === 'ADD') {
        const w = jsonArray(ins.args) ?? words(ins.args).filter((x) => !x.startsWith('--'));
        const sources = w.slice(0, -1);
        if (sources.some((x) => /^[a-z][a-z0-9+.-]*:\/\/|^git@/i.test(x))) {
          add(ins.line, 'no-add', 'ADD of a URL: download with a verified checksum in RUN, or COPY');
        } else if (!sources.every((x) => /\.(?:tar|tar\.gz|tgz|tar\.xz|txz|tar\.bz2|tbz2?)$/.test(x))) {
          add(ins.line, 'no-add', 'ADD of local files: use COPY');
        }
      } else if (ins.keyword === 'CMD' || ins.keyword === 'ENTRYPOINT') {
        if (!jsonArray(ins.args)) {
          add(ins.line, 'exec-form', `${ins.keyword} in shell form: signals go to /bin/sh, not the daemon`);
        }
      }
      if (opts.contextDir && (ins.keyword === 'COPY' || ins.keyword === 'ADD')) {
        const ignoreFile = path.join(opts.contextDir, '.dockerignore');
        const ignore = new DockerIgnore(existsSync(ignoreFile) ? readFileSync(ignoreFile, 'utf8') : '');
        for (const m of copyProblems(ins, opts.contextDir, ignore)) add(ins.line, 'copy-source', m);
      }
    }
  }
  return problems.sort((a, b) => a.line - b.line);
}

/** The Dockerfiles of this repository, linted with the repository as build context. */
export const DOCKERFILES = ['Dockerfile.amd64', 'Dockerfile.arm64'];

export function lintRepository(root: string, files: string[] = DOCKERFILES): Problem[] {
  return files.flatMap((file) => {
    const abs = path.resolve(root, file);
    // The build context is the Dockerfile's directory: the repository root for ours.
    return lintDockerfile(readFileSync(abs, 'utf8'), { file, contextDir: path.dirname(abs) });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const files = process.argv.slice(2);
  const problems = lintRepository(root, files.length > 0 ? files : DOCKERFILES);
  for (const p of problems) process.stderr.write(`${p.file}:${p.line} ${p.rule}: ${p.message}\n`);
  if (problems.length > 0) process.exit(1);
  process.stdout.write(`${(files.length > 0 ? files : DOCKERFILES).join(', ')}: ok\n`);
}

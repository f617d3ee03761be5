import type { HistoryEntry, ModelView as ModelDoc } from '../types.js';
import { getJson, Unauthorized } from './api.js';
import { el, fmtTime, type View } from './dom.js';

const REFRESH_MS = 3000;

function row(label: string, value: string): HTMLTableRowElement {
  return el('tr', {}, [el('th', { text: label }), el('td', { text: value })]);
}

function historyRow(h: HistoryEntry): HTMLTableRowElement {
  const tr = el('tr', { className: h.error ? 'failed' : '' }, [
    el('td', { text: fmtTime(h.at) }),
    el('td', { text: h.event }),
    el('td', { text: [h.model.name, h.model.version].filter(Boolean).join(' ') || '—' }),
    el('td', { text: h.previousVersion ?? '—' }),
    el('td', { text: h.error ? h.error.code : 'ok' }),
    el('td', {
      text: h.error?.message ?? (h.durationMs !== undefined ? `${Math.round(h.durationMs)} ms` : ''),
    }),
  ]);
  return tr;
}

function json(value: unknown): HTMLElement {
  return el('pre', {
    className: 'json',
    text: value === undefined || value === null ? '—' : JSON.stringify(value, null, 2),
  });
}

/**
 * The model view: the model that answers, the history of changes with their outcome and error
 * codes, and the twin's desired document beside what the daemon reports. Candidate and drift
 * figures appear when the daemon reports them (its `candidate` and `drift` sections).
 */
export class ModelView implements View {
  private timer: number | undefined;
  private root: HTMLElement | undefined;

  constructor(private readonly onUnauthorized: () => void) {}

  mount(root: HTMLElement): void {
    this.root = root;
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  unmount(): void {
    window.clearInterval(this.timer);
    this.root = undefined;
  }

  private async refresh(): Promise<void> {
    let doc: ModelDoc;
    try {
      doc = await getJson<ModelDoc>('/v1/console/model');
    } catch (err) {
      if (err instanceof Unauthorized) this.onUnauthorized();
      return;
    }
    const root = this.root;
    if (!root) return;
    const m = doc.model;
    const active = el('table', { className: 'kv', attrs: { id: 'active-model' } }, [
      row('status', doc.status),
      row('name', m?.name ?? '—'),
      row('version', m?.version ?? '—'),
      row('task', m?.task ?? '—'),
      row('sha256', m?.sha256 ?? '—'),
      row('provider', m?.executionProvider ?? '—'),
      row('loaded at', fmtTime(m?.loadedAt)),
      row('last error', doc.lastError ? `${doc.lastError.code}: ${doc.lastError.message}` : '—'),
      ...(doc.reason ? [row('waiting', doc.reason)] : []),
    ]);
    const history = el('table', { className: 'list', attrs: { id: 'model-history' } }, [
      el(
        'tr',
        {},
        ['at', 'event', 'model', 'previous', 'outcome', 'detail'].map((h) => el('th', { text: h })),
      ),
      ...doc.history.map(historyRow),
    ]);
    const reported = (doc.reported ?? {}) as Record<string, unknown>;
    const trial = ['candidate', 'drift'].filter((k) => k in reported);
    const drift = reported.drift as
      | { state: string; worst: { feature: string; camera: string; psi: number; baseline: number } | null }
      | undefined;
    const driftLine = drift
      ? el('p', {
          attrs: { id: 'drift-state' },
          text: `Drift: ${drift.state}${
            drift.worst
              ? ` — furthest: ${drift.worst.feature} on ${drift.worst.camera}, PSI ${drift.worst.psi.toFixed(3)} (chance alone reads ${drift.worst.baseline.toFixed(3)})`
              : ''
          }`,
        })
      : undefined;
    root.replaceChildren(
      el('section', {}, [el('h2', { text: 'Active model' }), active]),
      el('section', {}, [
        el('h2', { text: 'Changes' }),
        doc.history.length
          ? history
          : el('p', { className: 'muted', text: 'No model change since the daemon started.' }),
      ]),
      el('section', { className: 'twin' }, [
        el('div', {}, [
          el('h2', {
            text: `Desired${doc.desired ? ` (version ${doc.desired.version}, ${fmtTime(doc.desired.at)})` : ''}`,
          }),
          doc.desired
            ? json(doc.desired.document)
            : el('p', { className: 'muted', text: 'No desired document received.' }),
        ]),
        el('div', {}, [el('h2', { text: 'Reported' }), json(reported)]),
      ]),
      el('section', {}, [
        el('h2', { text: 'Candidate and drift' }),
        ...(driftLine ? [driftLine] : []),
        trial.length
          ? json(Object.fromEntries(trial.map((k) => [k, reported[k]])))
          : el('p', { className: 'muted', text: 'This daemon reports no shadow trial or drift figures.' }),
      ]),
    );
  }
}

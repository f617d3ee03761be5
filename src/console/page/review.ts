import type { CaptureRecord, CaptureSummary, HumanLabel } from '../../capture/record.js';
import { getBlob, getJson, putJson, Unauthorized } from './api.js';
import { el, fmtTime, type View } from './dom.js';

/** A capture's sidecar as `GET /v1/captures/{id}/meta` answers it. */
type CaptureMeta = Omit<CaptureRecord, 'upload'> & { upload: { state: string; blob: string | null } };
type Box = NonNullable<HumanLabel['boxes']>[number];
type Filter = 'unlabelled' | 'labelled' | 'all';

/** Who the page says labelled a frame (the sidecar's `label.by`). */
export const REVIEWER = 'console';
const MODEL_BOX = '#ffb020';
const HUMAN_BOX = '#4da3ff';

const LABELLED: Record<Filter, string> = {
  unlabelled: '&labelled=false',
  labelled: '&labelled=true',
  all: '',
};

/**
 * The review view (README, "Operator console"): captured frames waiting for a human verdict, one
 * key each, written through the captures API (`PUT /v1/captures/{id}/label`, by `console`):
 * `o` ok; `d` then a digit a defect of that label (`d` Enter: the model's label); `b` draws
 * corrected boxes (drag on the frame, a digit sets the last box's label, Enter saves, Esc drops
 * them); `j`/`k` (or ↓/↑) move through the list. The model's answer is drawn in amber, the human's
 * boxes in blue.
 */
export class ReviewView implements View {
  private items: CaptureSummary[] = [];
  private selected = 0;
  private meta: CaptureMeta | undefined;
  private image: ImageBitmap | undefined;
  /** Labels to pick from with digits: the active model's, else those seen in the answer. */
  private labels: string[] = [];
  private mode: 'idle' | 'defect' | 'box' = 'idle';
  private boxes: Box[] = [];
  private drag: { x: number; y: number } | undefined;
  private filter: Filter = 'unlabelled';
  /** Counts open() calls, so an overtaken one drops its result. */
  private opening = 0;
  private readonly abort = new AbortController();
  private readonly list = el('ol', { className: 'review-list', attrs: { id: 'review-list' } });
  private readonly canvas = el('canvas', { attrs: { id: 'review-frame' } });
  private readonly info = el('div', { className: 'review-info', attrs: { id: 'review-info' } });
  private readonly hint = el('p', { className: 'muted', attrs: { id: 'review-hint' } });
  private readonly status = el('span', { className: 'muted', attrs: { id: 'review-status' } });
  private readonly onKey = (e: KeyboardEvent): void => this.key(e);

  constructor(private readonly onUnauthorized: () => void) {}

  mount(root: HTMLElement): void {
    const select = el('select', { attrs: { 'aria-label': 'which captures', id: 'review-filter' } }, [
      el('option', { text: 'to review', attrs: { value: 'unlabelled' } }),
      el('option', { text: 'labelled', attrs: { value: 'labelled' } }),
      el('option', { text: 'all', attrs: { value: 'all' } }),
    ]);
    select.onchange = () => {
      this.filter = select.value as Filter;
      void this.load();
    };
    const refresh = el('button', { text: 'Refresh', attrs: { type: 'button' } });
    refresh.onclick = () => void this.load();
    this.canvas.onmousedown = (e) => this.mouse('down', e);
    this.canvas.onmouseup = (e) => this.mouse('up', e);
    root.append(
      el('div', { className: 'toolbar' }, [select, refresh, this.status]),
      el('div', { className: 'review' }, [this.list, el('div', {}, [this.canvas, this.info, this.hint])]),
    );
    document.addEventListener('keydown', this.onKey);
    void this.loadLabels().then(() => this.load());
  }

  unmount(): void {
    document.removeEventListener('keydown', this.onKey);
    this.abort.abort();
    this.image?.close();
  }

  private fail(err: unknown): void {
    if (err instanceof Unauthorized) this.onUnauthorized();
    else if (!this.abort.signal.aborted)
      this.status.textContent = err instanceof Error ? err.message : String(err);
  }

  private async loadLabels(): Promise<void> {
    try {
      const m = await getJson<{ model: { manifest: { labels: string[] } } | null }>(
        '/v1/model',
        this.abort.signal,
      );
      this.labels = m.model?.manifest.labels ?? [];
    } catch (err) {
      this.fail(err);
    }
  }

  private async load(): Promise<void> {
    try {
      const page = await getJson<{ items: CaptureSummary[] }>(
        `/v1/captures?limit=200${LABELLED[this.filter]}`,
        this.abort.signal,
      );
      this.items = page.items;
      this.selected = 0;
      this.status.textContent =
        this.items.length === 0
          ? this.filter === 'unlabelled'
            ? 'Nothing to review: no unlabelled captures (capture rules come from the twin or desired file).'
            : 'No captures.'
          : `${this.items.length} capture${this.items.length === 1 ? '' : 's'}`;
      this.renderList();
      await this.open();
    } catch (err) {
      this.fail(err);
    }
  }

  private renderList(): void {
    this.list.replaceChildren(
      ...this.items.map((c, i) => {
        const li = el('li', { attrs: { 'data-id': c.id, 'data-frame-id': c.frameId } }, [
          el('strong', { text: c.cameraId ?? 'default' }),
          ` ${c.reason} · ${c.defect ? 'defect' : 'ok'} · ${new Date(c.capturedAt).toLocaleTimeString()}`,
          el('span', { className: 'verdict', text: c.label ? verdictText(c.label) : '' }),
        ]);
        li.classList.toggle('selected', i === this.selected);
        li.onclick = () => {
          this.selected = i;
          this.renderList();
          void this.open().catch((err: unknown) => this.fail(err));
        };
        return li;
      }),
    );
  }

  /**
   * Shows the selected capture. Opens can overlap (a key press while a list reloads): only the
   * latest one shows what it fetched; an earlier one drops its result.
   */
  private async open(): Promise<void> {
    const seq = ++this.opening;
    this.mode = 'idle';
    this.boxes = [];
    const c = this.items[this.selected];
    if (!c) {
      this.show(undefined, undefined);
      return;
    }
    const meta = await getJson<CaptureMeta>(`/v1/captures/${c.id}/meta`, this.abort.signal);
    const image = c.frameKept
      ? await createImageBitmap(await getBlob(`/v1/captures/${c.id}`, this.abort.signal))
      : undefined;
    if (seq !== this.opening) {
      image?.close();
      return;
    }
    this.show(meta, image);
  }

  private show(meta: CaptureMeta | undefined, image: ImageBitmap | undefined): void {
    this.image?.close();
    this.image = image;
    this.meta = meta;
    if (!meta) {
      this.canvas.hidden = true;
      this.info.replaceChildren();
      this.hint.textContent = '';
      return;
    }
    for (const l of answerLabels(meta)) if (!this.labels.includes(l)) this.labels.push(l);
    this.boxes = [...(meta.label?.boxes ?? [])];
    this.draw();
    this.describe();
  }

  private describe(): void {
    const m = this.meta;
    if (!m) return;
    const answer = m.answer.detections
      ? `${m.answer.detections.length} detection(s): ${m.answer.detections.map((d) => `${d.label} ${d.score.toFixed(2)}`).join(', ') || 'none'}`
      : (m.answer.classification ?? []).map((c) => `${c.label} ${c.score.toFixed(2)}`).join(', ');
    this.info.replaceChildren(
      el('div', {
        text: `${m.cameraId ?? 'default'} · frame ${m.frameId} · captured ${fmtTime(m.capturedAt)} (${m.reason})`,
      }),
      el('div', {
        text: `Model ${m.model.name} ${m.model.version}: ${m.answer.defect ? 'DEFECT' : 'ok'} · ${answer}`,
      }),
      el('div', {
        attrs: { id: 'review-label' },
        text: m.label ? `Label: ${verdictText(m.label)}` : 'Not labelled yet.',
      }),
      ...(this.image
        ? []
        : [el('div', { className: 'muted', text: 'The frame was uploaded and is no longer kept here.' })]),
    );
    const keys = this.labels
      .map((l, i) => (i < 9 ? `${i + 1} ${l}` : ''))
      .filter(Boolean)
      .join(' · ');
    this.hint.textContent =
      this.mode === 'defect'
        ? `Defect label: ${keys} (Enter: the model's label, Esc: cancel)`
        : this.mode === 'box'
          ? `Drag on the frame to draw a box; a digit labels the last box (${keys}); Enter saves ${this.boxes.length} box(es), Esc cancels.`
          : 'o ok · d defect · b boxes · j/k next/previous';
  }

  private draw(): void {
    const m = this.meta;
    if (!m) return;
    this.canvas.hidden = false;
    this.canvas.width = m.frame.width;
    this.canvas.height = m.frame.height;
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, m.frame.width, m.frame.height);
    if (this.image) ctx.drawImage(this.image, 0, 0, m.frame.width, m.frame.height);
    const line = Math.max(2, Math.round(m.frame.width / 320));
    ctx.lineWidth = line;
    ctx.font = `bold ${6 * line + 4}px system-ui, sans-serif`;
    ctx.setLineDash([4 * line, 3 * line]);
    for (const d of m.answer.detections ?? [])
      strokeBox(ctx, d.box, `${d.label} ${d.score.toFixed(2)}`, MODEL_BOX);
    ctx.setLineDash([]);
    for (const b of this.boxes) strokeBox(ctx, b, b.label ?? '', HUMAN_BOX);
  }

  /** Maps a mouse event to frame pixels (the canvas is drawn at the frame's size and scaled by CSS). */
  private framePoint(e: MouseEvent): { x: number; y: number } {
    const r = this.canvas.getBoundingClientRect();
    const clamp = (v: number, hi: number): number => Math.min(hi, Math.max(0, v));
    return {
      x: clamp(((e.clientX - r.left) / r.width) * this.canvas.width, this.canvas.width),
      y: clamp(((e.clientY - r.top) / r.height) * this.canvas.height, this.canvas.height),
    };
  }

  private mouse(what: 'down' | 'up', e: MouseEvent): void {
    if (this.mode !== 'box') return;
    const p = this.framePoint(e);
    if (what === 'down') {
      this.drag = p;
      return;
    }
    const from = this.drag;
    this.drag = undefined;
    if (!from) return;
    const box = {
      x: Math.round(Math.min(from.x, p.x)),
      y: Math.round(Math.min(from.y, p.y)),
      width: Math.round(Math.abs(p.x - from.x)),
      height: Math.round(Math.abs(p.y - from.y)),
    };
    if (box.width < 2 || box.height < 2) return;
    const label = this.modelLabel();
    this.boxes.push(label ? { label, ...box } : box);
    this.draw();
    this.describe();
  }

  /** The model's own defect label for this frame, the default for `d` Enter and new boxes. */
  private modelLabel(): string | undefined {
    const a = this.meta?.answer;
    return a?.detections?.[0]?.label ?? a?.classification?.[0]?.label;
  }

  private key(e: KeyboardEvent): void {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const digit = /^[1-9]$/.test(e.key) ? this.labels[Number(e.key) - 1] : undefined;
    if (this.mode === 'defect') {
      if (digit) void this.save({ verdict: 'defect', label: digit });
      else if (e.key === 'Enter') void this.save({ verdict: 'defect', ...optional(this.modelLabel()) });
      else if (e.key === 'Escape') this.setMode('idle');
      return;
    }
    if (this.mode === 'box') {
      const last = this.boxes[this.boxes.length - 1];
      if (digit && last) {
        last.label = digit;
        this.draw();
      } else if (e.key === 'Enter' && this.boxes.length > 0) {
        void this.save({ verdict: 'defect', ...optional(this.boxes[0]!.label), boxes: this.boxes });
      } else if (e.key === 'Escape') {
        this.boxes = [...(this.meta?.label?.boxes ?? [])];
        this.setMode('idle');
        this.draw();
      }
      return;
    }
    if (e.key === 'o') void this.save({ verdict: 'ok' });
    else if (e.key === 'd') this.setMode('defect');
    else if (e.key === 'b') {
      this.boxes = [];
      this.setMode('box');
      this.draw();
    } else if (e.key === 'j' || e.key === 'ArrowDown') this.move(1);
    else if (e.key === 'k' || e.key === 'ArrowUp') this.move(-1);
    else return;
    e.preventDefault();
  }

  private setMode(mode: ReviewView['mode']): void {
    this.mode = mode;
    this.describe();
  }

  private move(by: number): void {
    const next = Math.min(this.items.length - 1, Math.max(0, this.selected + by));
    if (next === this.selected) return;
    this.selected = next;
    this.renderList();
    void this.open().catch((err: unknown) => this.fail(err));
  }

  private async save(label: Omit<HumanLabel, 'at' | 'by'>): Promise<void> {
    const c = this.items[this.selected];
    if (!c) return;
    try {
      const r = await putJson<{ label: HumanLabel }>(`/v1/captures/${c.id}/label`, {
        ...label,
        by: REVIEWER,
      });
      c.label = r.label;
      this.status.textContent = `Saved ${verdictText(r.label)} for ${c.frameId}.`;
      this.renderList();
      this.move(1);
      if (this.selected === this.items.indexOf(c)) await this.open();
    } catch (err) {
      this.fail(err);
    }
  }
}

function optional(label: string | undefined): { label?: string } {
  return label ? { label } : {};
}

function verdictText(l: HumanLabel): string {
  if (l.verdict === 'ok') return 'ok';
  const boxes = l.boxes?.length ? ` (${l.boxes.length} box${l.boxes.length === 1 ? '' : 'es'})` : '';
  return `defect${l.label ? ` ${l.label}` : ''}${boxes}`;
}

function answerLabels(m: CaptureMeta): string[] {
  return [...(m.answer.detections ?? []), ...(m.answer.classification ?? [])].map((d) => d.label);
}

function strokeBox(ctx: CanvasRenderingContext2D, b: Box, text: string, colour: string): void {
  ctx.strokeStyle = colour;
  ctx.strokeRect(b.x, b.y, b.width, b.height);
  if (!text) return;
  ctx.fillStyle = colour;
  ctx.fillText(text, b.x, b.y > 20 ? b.y - 6 : b.y + b.height + 20);
}

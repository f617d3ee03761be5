import type { LiveFrame } from '../types.js';
import { readEvents, Unauthorized } from './api.js';
import { el, type View } from './dom.js';

/** Box colours: red on a defect frame, green otherwise (what an inspector expects at a glance). */
const DEFECT = '#ff1f1f';
const OK = '#18c964';

interface Tile {
  root: HTMLElement;
  canvas: HTMLCanvasElement;
  caption: HTMLElement;
}

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** Draws the thumbnail, then the prediction over it: boxes with label and score, or the class. */
export async function drawFrame(canvas: HTMLCanvasElement, frame: LiveFrame): Promise<void> {
  const bitmap = await createImageBitmap(new Blob([decodeBase64(frame.image)], { type: 'image/jpeg' }));
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const sx = canvas.width / frame.width;
  const sy = canvas.height / frame.height;
  const colour = frame.defect ? DEFECT : OK;
  ctx.font = 'bold 13px system-ui, sans-serif';
  ctx.lineWidth = 3;
  for (const d of frame.detections ?? []) {
    const outline = d.mask?.polygon;
    if (outline && outline.length > 2) {
      // The instance mask: its outline filled, translucent, under the box.
      ctx.beginPath();
      outline.forEach(([px, py], i) =>
        i === 0 ? ctx.moveTo(px * sx, py * sy) : ctx.lineTo(px * sx, py * sy),
      );
      ctx.closePath();
      ctx.globalAlpha = 0.35;
      ctx.fillStyle = colour;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    const x = d.box.x * sx;
    const y = d.box.y * sy;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, d.box.width * sx, d.box.height * sy);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const w = ctx.measureText(text).width + 8;
    const ty = y >= 18 ? y - 18 : y + d.box.height * sy;
    ctx.fillStyle = colour;
    ctx.fillRect(x - 1.5, ty, w, 18);
    ctx.fillStyle = '#000';
    ctx.fillText(text, x + 3, ty + 13);
  }
  if (frame.anomaly) await drawAnomaly(ctx, frame.anomaly, sx, sy, colour);
  const top = frame.classification?.[0];
  const corner = frame.anomaly
    ? { label: 'anomaly', score: frame.anomaly.score }
    : top && !frame.detections?.length
      ? top
      : undefined;
  if (corner) {
    const text = `${corner.label} ${corner.score.toFixed(2)}`;
    const w = ctx.measureText(text).width + 12;
    ctx.fillStyle = colour;
    ctx.fillRect(0, 0, w, 22);
    ctx.fillStyle = '#000';
    ctx.fillText(text, 6, 16);
  }
}

/**
 * An anomaly model's answer over the frame: the map as a heat overlay (red, as opaque as the map is
 * hot, clipped to the frame), then each defect region's box with its peak value.
 */
async function drawAnomaly(
  ctx: CanvasRenderingContext2D,
  a: NonNullable<LiveFrame['anomaly']>,
  sx: number,
  sy: number,
  colour: string,
): Promise<void> {
  if (a.map) {
    const grey = await createImageBitmap(new Blob([decodeBase64(a.map.image)], { type: 'image/png' }));
    const heat = document.createElement('canvas');
    heat.width = grey.width;
    heat.height = grey.height;
    const hctx = heat.getContext('2d');
    if (hctx) {
      hctx.drawImage(grey, 0, 0);
      const px = hctx.getImageData(0, 0, heat.width, heat.height);
      for (let i = 0; i < px.data.length; i += 4) {
        const v = px.data[i]!;
        px.data[i] = 255;
        px.data[i + 1] = 0;
        px.data[i + 2] = 0;
        px.data[i + 3] = Math.round(v * 0.55);
      }
      hctx.putImageData(px, 0, 0);
      const { x, y, width, height } = a.map.box;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(heat, x * sx, y * sy, width * sx, height * sy);
    }
    grey.close();
  }
  ctx.strokeStyle = colour;
  ctx.lineWidth = 3;
  for (const r of a.regions) {
    ctx.strokeRect(r.box.x * sx, r.box.y * sy, r.box.width * sx, r.box.height * sy);
    const text = r.peak.toFixed(2);
    const w = ctx.measureText(text).width + 8;
    const ty = r.box.y * sy >= 18 ? r.box.y * sy - 18 : (r.box.y + r.box.height) * sy;
    ctx.fillStyle = colour;
    ctx.fillRect(r.box.x * sx - 1.5, ty, w, 18);
    ctx.fillStyle = '#000';
    ctx.fillText(text, r.box.x * sx + 3, ty + 13);
  }
}

/**
 * The live view: the latest frame of each camera with its prediction drawn on it. The daemon
 * sends frames only while this view is open, scaled down and at most a few per second per camera.
 */
export class LiveView implements View {
  private readonly tiles = new Map<string, Tile>();
  private abort: AbortController | undefined;
  private paused = false;
  private camera = '';
  private grid = el('div', { className: 'grid' });
  private status = el('span', { className: 'muted', text: 'connecting…' });
  private filter = el('select', { attrs: { 'aria-label': 'camera' } }, [
    el('option', { text: 'all cameras', attrs: { value: '' } }),
  ]);
  private pauseButton = el('button', { text: 'Pause', attrs: { type: 'button' } });

  constructor(private readonly onUnauthorized: () => void) {}

  mount(root: HTMLElement): void {
    this.pauseButton.onclick = () => {
      this.paused = !this.paused;
      this.pauseButton.textContent = this.paused ? 'Resume' : 'Pause';
      this.pauseButton.setAttribute('aria-pressed', String(this.paused));
    };
    this.filter.onchange = () => {
      this.camera = this.filter.value;
      for (const [id, t] of this.tiles) t.root.hidden = this.camera !== '' && id !== this.camera;
      // The daemon then thumbnails only that camera's frames for this page.
      this.abort?.abort();
      this.connect();
    };
    root.append(el('div', { className: 'toolbar' }, [this.pauseButton, this.filter, this.status]), this.grid);
    this.connect();
  }

  unmount(): void {
    this.abort?.abort();
    this.abort = undefined;
  }

  private connect(): void {
    const abort = new AbortController();
    this.abort = abort;
    this.status.textContent = 'connecting…';
    readEvents(
      this.camera ? `/v1/console/live?camera=${encodeURIComponent(this.camera)}` : '/v1/console/live',
      abort.signal,
      (event, data) => {
        if (event === 'frame' && !this.paused) void this.show(JSON.parse(data) as LiveFrame);
      },
      () => (this.status.textContent = 'live'),
    ).then(
      () => this.retry(abort),
      (err: unknown) => {
        if (err instanceof Unauthorized) this.onUnauthorized();
        else this.retry(abort);
      },
    );
  }

  private retry(abort: AbortController): void {
    if (abort.signal.aborted) return;
    this.status.textContent = 'disconnected; retrying…';
    setTimeout(() => {
      if (!abort.signal.aborted) this.connect();
    }, 2000);
  }

  private tile(camera: string): Tile {
    let t = this.tiles.get(camera);
    if (!t) {
      const canvas = el('canvas');
      const caption = el('figcaption');
      const root = el('figure', { className: 'tile', attrs: { 'data-camera': camera } }, [canvas, caption]);
      t = { root, canvas, caption };
      this.tiles.set(camera, t);
      this.grid.append(root);
      this.filter.append(el('option', { text: camera, attrs: { value: camera } }));
      root.hidden = this.camera !== '' && camera !== this.camera;
    }
    return t;
  }

  private async show(frame: LiveFrame): Promise<void> {
    const t = this.tile(frame.cameraId);
    await drawFrame(t.canvas, frame);
    t.root.classList.toggle('defect', frame.defect);
    t.root.setAttribute('data-frame-id', frame.frameId);
    const what = frame.anomaly
      ? `anomaly ${frame.anomaly.score.toFixed(2)} / ${frame.anomaly.threshold.toFixed(2)}, ${frame.anomaly.regions.length} region${frame.anomaly.regions.length === 1 ? '' : 's'}`
      : frame.detections
        ? `${frame.detections.length} detection${frame.detections.length === 1 ? '' : 's'}`
        : (frame.classification?.[0]?.label ?? frame.task);
    t.caption.textContent = `${frame.cameraId} · ${frame.defect ? 'DEFECT' : 'ok'} · ${what} · ${frame.model.name} ${frame.model.version} · ${frame.timing.totalMs.toFixed(1)} ms · ${new Date(frame.at).toLocaleTimeString()}`;
  }
}

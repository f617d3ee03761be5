import type { HealthSample, HealthView as HealthDoc } from '../types.js';
import { getJson, Unauthorized } from './api.js';
import { el, type View } from './dom.js';

interface Series {
  label: string;
  value: (s: HealthSample) => number | null;
  colour: string;
}

interface Chart {
  title: string;
  unit: string;
  series: Series[];
}

const CHARTS: Chart[] = [
  {
    title: 'Frames',
    unit: '/s',
    series: [{ label: 'frames/s', value: (s) => s.framesPerSec, colour: '#4da3ff' }],
  },
  {
    title: 'Defect rate',
    unit: '%',
    series: [
      {
        label: 'defects',
        value: (s) => (s.defectRate === null ? null : s.defectRate * 100),
        colour: '#ff5c5c',
      },
    ],
  },
  {
    title: 'Latency',
    unit: 'ms',
    series: [
      { label: 'p50', value: (s) => s.p50Ms, colour: '#18c964' },
      { label: 'p99', value: (s) => s.p99Ms, colour: '#f5a524' },
    ],
  },
  {
    title: 'Queue',
    unit: '',
    series: [
      { label: 'depth', value: (s) => s.queueDepth, colour: '#4da3ff' },
      { label: '429/s', value: (s) => s.rejectedPerSec, colour: '#ff5c5c' },
    ],
  },
  {
    title: 'Telemetry backlog',
    unit: 'items',
    series: [{ label: 'waiting', value: (s) => s.telemetryBacklog, colour: '#b46cff' }],
  },
];

/** A line chart of the samples on a canvas: no chart library, the page ships as one small bundle. */
function draw(canvas: HTMLCanvasElement, chart: Chart, samples: HealthSample[]): void {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 320;
  const h = canvas.clientHeight || 120;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, w, h);
  const values = samples.flatMap((s) => chart.series.map((se) => se.value(s) ?? 0));
  // At least 1 on the scale: an idle counter reads as a flat line at zero, not as noise.
  const max = Math.max(1, ...values) * 1.1;
  ctx.strokeStyle = '#333a45';
  ctx.lineWidth = 1;
  for (const f of [0.25, 0.5, 0.75]) {
    ctx.beginPath();
    ctx.moveTo(0, h * f);
    ctx.lineTo(w, h * f);
    ctx.stroke();
  }
  ctx.fillStyle = '#8b95a5';
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillText(`${max.toPrecision(3)} ${chart.unit}`, 4, 12);
  const n = samples.length;
  for (const se of chart.series) {
    ctx.strokeStyle = se.colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    samples.forEach((s, i) => {
      const v = se.value(s);
      if (v === null) {
        pen = false;
        return;
      }
      const x = n > 1 ? (i / (n - 1)) * w : w;
      const y = h - (v / max) * h;
      if (pen) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      pen = true;
    });
    ctx.stroke();
  }
}

function latest(chart: Chart, s: HealthSample | undefined): string {
  if (!s) return '—';
  return chart.series
    .map((se) => {
      const v = se.value(s);
      return `${se.label} ${v === null ? '—' : `${v.toFixed(v >= 100 ? 0 : 1)}${chart.unit === '%' ? '%' : ''}`}`;
    })
    .join(' · ');
}

/** The health view: the daemon's own counters over the last minutes, refreshed every sample. */
export class HealthView implements View {
  private timer: number | undefined;
  private root: HTMLElement | undefined;

  constructor(private readonly onUnauthorized: () => void) {}

  mount(root: HTMLElement): void {
    this.root = root;
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), 2000);
  }

  unmount(): void {
    window.clearInterval(this.timer);
    this.root = undefined;
  }

  private async refresh(): Promise<void> {
    let doc: HealthDoc;
    try {
      doc = await getJson<HealthDoc>('/v1/console/health');
    } catch (err) {
      if (err instanceof Unauthorized) this.onUnauthorized();
      return;
    }
    const root = this.root;
    if (!root) return;
    const last = doc.samples[doc.samples.length - 1];
    const minutes = Math.round((doc.samples.length * doc.intervalMs) / 60000);
    const hub =
      doc.twinMode === 'standalone'
        ? 'standalone (no IoT Hub)'
        : last?.iothubConnected
          ? 'connected'
          : 'disconnected';
    const cards = CHARTS.map((c) => {
      const canvas = el('canvas', { className: 'chart' });
      const card = el('figure', { className: 'card' }, [
        el('figcaption', {}, [
          el('strong', { text: c.title }),
          el('span', { className: 'muted', text: latest(c, last) }),
        ]),
        canvas,
      ]);
      return { c, canvas, card };
    });
    root.replaceChildren(
      el('p', { className: 'muted' }, [
        `IoT Hub: `,
        el('strong', { text: hub, attrs: { id: 'iothub-state' } }),
        ` · last ${minutes || '<1'} min, one point every ${doc.intervalMs / 1000} s`,
      ]),
      el(
        'div',
        { className: 'cards' },
        cards.map((x) => x.card),
      ),
    );
    for (const { c, canvas } of cards) draw(canvas, c, doc.samples);
  }
}

import net from 'node:net';

/** Small clients for integration tests against a real daemon on loopback. */

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** Any request with Node's fetch; the whole body is read before it resolves. */
export async function request(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: parse(text) };
}

/**
 * POSTs one frame. `contentType` null sends no Content-Type at all (fetch adds none for a bytes
 * body); extra headers are sent as given.
 */
export function postFrame(
  url: string,
  body: Uint8Array,
  contentType: string | null,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return request(url, {
    method: 'POST',
    body,
    headers: contentType === null ? headers : { 'content-type': contentType, ...headers },
  });
}

/** What a raw HTTP/1.1 exchange returned; `closed` when the server ended the connection. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  closed: boolean;
}

/**
 * Writes `head` (request line and headers, CRLF-terminated, blank line included) and `body` on a
 * raw TCP socket, then waits for one complete response (by its Content-Length) or for the server
 * to close. For requests fetch would refuse to send: lying Content-Length, bodies never finished.
 */
export function rawExchange(
  baseUrl: string,
  head: string,
  body: Buffer = Buffer.alloc(0),
  timeoutMs = 5000,
): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    let buf = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(
      () => finish(new Error(`no complete response within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const finish = (err: Error | undefined, answer?: RawAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const tryParse = (closed: boolean): void => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (closed)
          finish(new Error(`connection closed before a response: ${JSON.stringify(buf.toString())}`));
        return;
      }
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]);
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const length = headers['content-length'];
      const bodyBytes = buf.subarray(end + 4);
      if (length !== undefined && bodyBytes.length >= Number(length)) {
        finish(undefined, {
          status,
          headers,
          body: bodyBytes.subarray(0, Number(length)).toString(),
          closed,
        });
      } else if (closed) {
        finish(undefined, { status, headers, body: bodyBytes.toString(), closed });
      }
    };
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      tryParse(false);
    });
    socket.on('end', () => tryParse(true));
    socket.on('close', () => tryParse(true));
    // A server that answers early and resets the connection is a valid outcome: keep what arrived.
    socket.on('error', (err) => (buf.length > 0 ? tryParse(true) : finish(err)));
    socket.on('connect', () => {
      socket.write(head);
      if (body.length > 0) socket.write(body);
    });
  });
}

/** One sample of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (comments skipped). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (let l = re.exec(m[2] ?? ''); l; l = re.exec(m[2] ?? '')) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** GET /metrics and parse it. */
export async function scrape(baseUrl: string): Promise<Sample[]> {
  const res = await request(`${baseUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parseMetrics(res.text);
}

/**
 * The value of the sample named `name` whose labels include `labels`; 0 when there is none (a
 * counter never incremented for those labels is not exposed). Throws when several match.
 */
export function metricValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value ?? 0;
}

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** The bundled demo detector and a frame it finds a solder bridge on (models/default). */
export async function demoModel(): Promise<{
  model: Uint8Array;
  manifest: object;
  bridge: Buffer;
  ok: Buffer;
}> {
  const dir = new URL('../../models/default/', import.meta.url);
  return {
    model: await readFile(fileURLToPath(new URL('model.onnx', dir))),
    manifest: JSON.parse(await readFile(fileURLToPath(new URL('model.json', dir)), 'utf8')) as object,
    bridge: await readFile(fileURLToPath(new URL('demo/board-bridge.jpg', dir))),
    ok: await readFile(fileURLToPath(new URL('demo/board-ok.jpg', dir))),
  };
}

export interface LiveEvent {
  event: string;
  data: string;
}

/**
 * Opens the console's live stream as a page does (fetch, server-sent events) and collects its
 * events until `close()`.
 */
export async function openLive(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; events: LiveEvent[]; close(): void }> {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  const events: LiveEvent[] = [];
  if (res.ok && res.body) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      let buffer = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          buffer += value;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1];
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (event && data) events.push({ event, data });
          }
        }
      } catch {
        // aborted by close()
      }
    })();
  }
  return { status: res.status, events, close: () => abort.abort() };
}

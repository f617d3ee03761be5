import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { BlobServiceClient, StorageSharedKeyCredential, newPipeline } from '@azure/storage-blob';
import { apiVersionPolicy } from '../../src/capture/blob-client.js';

/** The account the tests give Azurite, as the Blob Storage on IoT Edge module would have one. */
export const ACCOUNT = 'edgeaoi';
export const ACCOUNT_KEY = Buffer.alloc(64, 7).toString('base64');

const BIN = fileURLToPath(new URL('../../node_modules/.bin/azurite-blob', import.meta.url));

export interface Azurite {
  /** Path-style account URL straight to Azurite (for reading back). */
  accountUrl: string;
  /**
   * A client straight to Azurite, for the test's own reads. Azurite runs with its API-version
   * check on, as the edge module does: this client needs the pinned version too.
   */
  service: BlobServiceClient;
  close(): Promise<void>;
}

function pinned(): ReturnType<typeof newPipeline> {
  const p = newPipeline(new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY));
  p.factories.push(apiVersionPolicy);
  return p;
}

/** Starts `azurite-blob` on 127.0.0.1, an ephemeral port, in memory, with {@link ACCOUNT}. */
export async function startAzurite(): Promise<Azurite> {
  const child: ChildProcess = spawn(
    BIN,
    ['--blobHost', '127.0.0.1', '--blobPort', '0', '--inMemoryPersistence', '--disableProductStyleUrl'],
    {
      env: { ...process.env, AZURITE_ACCOUNTS: `${ACCOUNT}:${ACCOUNT_KEY}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`azurite did not start:\n${out}`)), 30_000);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /successfully listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`azurite exited (${code}):\n${out}`)));
  });
  const accountUrl = `http://127.0.0.1:${port}/${ACCOUNT}`;
  return {
    accountUrl,
    service: new BlobServiceClient(accountUrl, pinned()),
    async close() {
      if (child.exitCode === null) {
        // In memory: nothing to flush, and a graceful close waits for idle keep-alive sockets.
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    },
  };
}

export interface Seen {
  method: string;
  path: string;
  version: string | undefined;
  bytes: number;
  at: number;
  status: number;
}

/**
 * A loopback proxy in front of Azurite that behaves as Blob Storage on IoT Edge does about API
 * versions: anything but `version` is refused (400 InvalidHeaderValue). It records every request
 * and can be told to fail (`failNext` 503s), answer slowly (`delayMs`) or refuse blobs for good
 * (`refuse` returns a status for a path).
 */
export class BlobProxy {
  readonly seen: Seen[] = [];
  failNext = 0;
  delayMs = 0;
  refuse: (path: string) => number | undefined = () => undefined;
  private server: http.Server | undefined;
  port = 0;

  constructor(
    private readonly target: string,
    private readonly version = '2019-07-07',
  ) {}

  get connectionString(): string {
    return `DefaultEndpointsProtocol=http;BlobEndpoint=http://127.0.0.1:${this.port}/${ACCOUNT};AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY}`;
  }

  get accountUrl(): string {
    return `http://127.0.0.1:${this.port}/${ACCOUNT}`;
  }

  async start(): Promise<this> {
    const target = new URL(this.target);
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const version = req.headers['x-ms-version'] as string | undefined;
        const at = Date.now();
        const record = (status: number): void => {
          this.seen.push({ method: req.method!, path: req.url!, version, bytes: body.length, at, status });
        };
        const answer = (status: number, code: string): void => {
          record(status);
          res.writeHead(status, { 'content-type': 'application/xml', 'x-ms-error-code': code });
          res.end(
            `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`,
          );
        };
        setTimeout(() => {
          if (version !== this.version) return answer(400, 'InvalidHeaderValue');
          if (this.failNext > 0) {
            this.failNext--;
            return answer(503, 'ServerBusy');
          }
          const refused = req.method === 'PUT' ? this.refuse(req.url!) : undefined;
          if (refused) return answer(refused, 'AuthorizationPermissionMismatch');
          const up = http.request(
            {
              host: target.hostname,
              port: target.port,
              method: req.method,
              path: req.url,
              headers: req.headers,
            },
            (r) => {
              record(r.statusCode ?? 0);
              res.writeHead(r.statusCode ?? 502, r.headers);
              r.pipe(res);
            },
          );
          up.on('error', () => answer(502, 'BadGateway'));
          up.end(body);
        }, this.delayMs);
      });
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

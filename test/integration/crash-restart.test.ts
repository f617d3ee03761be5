import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { freePort, spawnDaemon, killIfRunning, type ChildDaemon } from '../helpers/child-daemon.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';

let server: ModelServer | undefined;
let dir: string | undefined;
let child: ChildDaemon | undefined;

afterEach(async () => {
  await killIfRunning(child);
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const version = async (url: string): Promise<string | undefined> =>
  ((await (await fetch(`${url}/v1/model`)).json()) as { model?: { manifest: { version: string } } }).model
    ?.manifest.version;

/**
 * A process killed (SIGKILL) in the middle of a model download restarts clean: the partial file
 * is discarded, the last known good model serves at once, and the download starts over and
 * completes.
 */
it('a daemon killed mid-download restarts clean and finishes the change', async () => {
  server = await startModelServer();
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-crash-'));
  const desiredFile = path.join(dir, 'desired.json');
  const v7 = versionedModel('7', { width: 96 });
  const v8 = versionedModel('8', { width: 96 });
  await writeFile(desiredFile, JSON.stringify({ model: desiredModel(server, v7) }));
  const env = {
    DATA_DIR: path.join(dir, 'data'),
    DESIRED_PROPERTIES_FILE: desiredFile,
    MODEL_URL_ALLOWLIST: `${server.origin}/`,
    EXECUTION_PROVIDERS: 'cpu',
  };
  const port = await freePort();
  child = await spawnDaemon(env, port);
  await waitFor(async () => ((await version(child!.url)) === '7' ? true : undefined), 'v7 active');

  // v8 trickles in slowly: kill the process while it is being downloaded.
  const block = desiredModel(server, v8);
  server.serve(new URL(block.url as string).pathname, v8.bytes, { slow: Math.ceil(v8.bytes.length / 4) });
  await writeFile(desiredFile, JSON.stringify({ model: block }));
  await waitFor(
    async () => ((await readdir(path.join(dir!, 'data', 'tmp'))).length > 0 ? true : undefined),
    'partial download',
  );
  child.kill('SIGKILL');
  expect(await child.exited).toBe('SIGKILL');

  server.serve(new URL(block.url as string).pathname, v8.bytes);
  child = await spawnDaemon(env, port);
  // Served from the cache before the desired file is reconciled again.
  expect(['7', '8']).toContain(await version(child.url));
  await waitFor(async () => ((await version(child!.url)) === '8' ? true : undefined), 'v8 after restart');
  const models = await readdir(path.join(dir, 'data', 'models'));
  expect(models.sort()).toEqual([v7.sha256, v8.sha256].sort());
  expect(await readdir(path.join(dir, 'data', 'tmp'))).toEqual([]);
});

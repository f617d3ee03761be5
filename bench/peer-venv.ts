import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The virtual environment of the onnxruntime peer (bench/peer/score_ort.py): bench/peer/.venv
 * (git-ignored), created on first use with `python3 -m venv` and filled by pip from whatever index
 * pip is configured with (`pip config list`): onnxruntime, opencv-python-headless, Flask, gunicorn,
 * NumPy. Answers the venv's interpreter, or why there is none: the bench then skips that peer.
 */
const VENV = join(dirname(fileURLToPath(import.meta.url)), 'peer', '.venv');
const PACKAGES = ['onnxruntime', 'opencv-python-headless', 'flask', 'gunicorn', 'numpy'];
const CHECK = 'import cv2, flask, gunicorn, numpy, onnxruntime';

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', (err) => resolve({ code: -1, out: err.message }));
    child.once('exit', (code) => resolve({ code, out }));
  });
}

export async function peerVenvPython(
  log: (line: string) => void,
): Promise<{ python?: string; why?: string }> {
  const python = join(VENV, 'bin', 'python');
  if (existsSync(python) && (await run(python, ['-c', CHECK])).code === 0) return { python };
  const base = process.env.PEER_VENV_PYTHON ?? 'python3';
  log(`onnxruntime peer: creating ${VENV} with ${base} and installing ${PACKAGES.join(', ')}`);
  const venv = await run(base, ['-m', 'venv', VENV]);
  if (venv.code !== 0) return { why: `${base} -m venv failed: ${venv.out.trim().slice(-300)}` };
  // No retries: an index that cannot be reached should fail the install in seconds, not minutes.
  const pip = await run(python, [
    '-m',
    'pip',
    'install',
    '--retries',
    '0',
    '--timeout',
    '15',
    '-q',
    ...PACKAGES,
  ]);
  if (pip.code !== 0)
    return { why: `pip could not install the peer's packages: ${pip.out.trim().slice(-400)}` };
  const check = await run(python, ['-c', CHECK]);
  if (check.code !== 0) return { why: `the venv cannot import them: ${check.out.trim().slice(-300)}` };
  return { python };
}

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';

/**
 * TensorRT provider settings. onnxruntime-node passes only a device id to the TensorRT execution
 * provider, which otherwise reads its options from the environment (ORT_TENSORRT_*), at session
 * creation, through the C library's getenv. Node forwards process.env writes on the main thread
 * to the real environment, so setting them here, before any worker creates a session, configures
 * every session the daemon makes: fp16 engines and an engine cache under DATA_DIR that survives
 * restarts (building engines for a large model takes minutes).
 */
export async function configureTensorRt(
  config: Pick<Config, 'dataDir' | 'tensorrtFp16' | 'tensorrtEngineCache'>,
): Promise<void> {
  process.env.ORT_TENSORRT_FP16_ENABLE = config.tensorrtFp16 ? '1' : '0';
  process.env.ORT_TENSORRT_ENGINE_CACHE_ENABLE = config.tensorrtEngineCache ? '1' : '0';
  if (config.tensorrtEngineCache) {
    const dir = path.join(config.dataDir, 'tensorrt-cache');
    await mkdir(dir, { recursive: true });
    process.env.ORT_TENSORRT_CACHE_PATH = dir;
  }
}

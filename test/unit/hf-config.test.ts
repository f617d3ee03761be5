import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { readHfConfig } from '../../src/scoring/hf-config.js';
import { VIT_CONFIG, VIT_PREPROCESSOR } from '../helpers/model-families.js';

/** config.json / preprocessor_config.json beside a model (docs/model-families.md). */

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-hf-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const write = (name: string, value: unknown) => writeFile(path.join(dir, name), JSON.stringify(value));

describe('readHfConfig', () => {
  it('nothing beside the model: no fragment', async () => {
    expect(await readHfConfig(dir)).toBeUndefined();
  });

  it('ViT: labels by index from string keys, stretch to size, rescale and normalise', async () => {
    await write('config.json', VIT_CONFIG);
    await write('preprocessor_config.json', VIT_PREPROCESSOR);
    expect(await readHfConfig(dir)).toEqual({
      task: 'classification',
      labels: ['ok', 'solder_bridge', 'missing'],
      output: { format: 'logits' },
      input: {
        color: 'rgb',
        layout: 'nchw',
        dtype: 'float32',
        scale: 0.00392156862745098,
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
        height: 16,
        width: 16,
        resize: 'stretch',
      },
    });
  });

  it('ConvNeXt-style processor: shortest_edge and a centre crop', async () => {
    await write('config.json', { id2label: { '0': 'ok', '1': 'ng' } });
    await write('preprocessor_config.json', {
      size: { shortest_edge: 256 },
      do_center_crop: true,
      crop_size: { height: 224, width: 224 },
      image_mean: [0.485, 0.456, 0.406],
      image_std: [0.229, 0.224, 0.225],
    });
    const m = await readHfConfig(dir);
    expect(m?.input).toMatchObject({ width: 224, height: 224, resize: 'center-crop', scale: 1 / 255 });
    expect(m?.input?.mean).toEqual([0.485, 0.456, 0.406]);
  });

  it('timm: label_names and pretrained_cfg', async () => {
    await write('config.json', {
      architecture: 'convnext_tiny',
      num_classes: 2,
      label_names: ['ok', 'ng'],
      pretrained_cfg: { input_size: [3, 288, 320], mean: [0.5, 0.4, 0.3], std: [0.2, 0.2, 0.2], crop_pct: 1 },
    });
    const m = await readHfConfig(dir);
    expect(m?.labels).toEqual(['ok', 'ng']);
    expect(m?.input).toMatchObject({ height: 288, width: 320, mean: [0.5, 0.4, 0.3], resize: 'stretch' });
  });

  it('an id2label with a gap, or a config that is not JSON, is MANIFEST_INVALID', async () => {
    await write('config.json', { id2label: { '0': 'ok', '2': 'ng' } });
    await expect(readHfConfig(dir)).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_INVALID });
    await writeFile(path.join(dir, 'config.json'), '{not json');
    await expect(readHfConfig(dir)).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_INVALID });
  });
});

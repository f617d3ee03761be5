import type { FramePrediction } from '../prediction.js';
import { checkTensor } from '../output-shape.js';
import type { OutputDecoder } from './index.js';

/**
 * Task raw: every output tensor as-is, sliced to each frame (`[1, ...rest]`), 64-bit integers as
 * numbers. Any declared shape is accepted; each output only needs the batch dimension at run time.
 */
export const raw: OutputDecoder<'raw'> = {
  formats: ['raw'],
  task: 'raw',
  checkOutputs: () => {},
  create: () => ({
    decode: (outputNames, outputs, geometries) => {
      const frames = geometries.length;
      const out: FramePrediction[] = [];
      for (let n = 0; n < frames; n++) out.push({ defect: false, raw: {} });
      for (const name of outputNames) {
        const tensor = checkTensor(name, outputs[name], frames);
        const per = frames === 0 ? 0 : tensor.data.length / frames;
        const dims = [1, ...tensor.dims.slice(1)];
        for (let n = 0; n < frames; n++) {
          const slice = tensor.data.subarray(n * per, (n + 1) * per);
          const data = new Array<number>(per);
          for (let i = 0; i < per; i++) data[i] = Number(slice[i]!);
          out[n]!.raw![name] = { dims: [...dims], data };
        }
      }
      return out;
    },
  }),
};

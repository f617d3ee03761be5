import { describe, expect, it } from 'vitest';
import { parseDesired } from '../../src/twin/desired.js';

const SAS = 'https://acct.blob.core.windows.net/aoi-captures?sv=2019-07-07&sp=cw&sig=SECRETSIGNATURE';

describe('desired capture block', () => {
  it('accepts the documented block and keeps it', () => {
    const capture = {
      enabled: true,
      rules: [
        { reason: 'defect', rate: 1.0 },
        { reason: 'uncertain', scoreBand: [0.3, 0.7], rate: 1.0 },
        { reason: 'sample', rate: 0.002 },
      ],
      perCameraPerHour: 600,
      perLabelPerHour: 300,
      maxBytes: 4294967296,
      maxItems: 50000,
      upload: {
        target: 'blob',
        container: 'aoi-captures',
        keepAfterUpload: false,
        maxBytesPerSec: 4000000,
        sasUrl: SAS,
      },
    };
    expect(parseDesired({ capture }).capture).toEqual(capture);
    expect(parseDesired({ capture: null }).capture).toBeUndefined();
  });

  it.each([
    [{ enabled: 'yes' }, '/capture/enabled'],
    [{ rules: [{ reason: 'defect', rate: 2 }] }, '/capture/rules/0/rate'],
    [{ rules: [{ reason: 'often', rate: 1 }] }, '/capture/rules/0/reason'],
    [{ rules: [{ reason: 'uncertain', rate: 1, scoreBand: [0.8, 0.2] }] }, 'scoreBand'],
    [{ maxBytes: 10 }, '/capture/maxBytes'],
    [{ upload: { container: 'Bad_Name' } }, '/capture/upload/container'],
    [{ upload: { sasUrl: SAS.replace('https', 'http') } }, '/capture/upload/sasUrl'],
    [{ upload: { sasUrl: 'https://x.example/c?sv=1' } }, '/capture/upload/sasUrl'],
    [{ captur: true }, 'unknown key'],
  ])('refuses %j with DESIRED_INVALID naming the field, never echoing a secret', (capture, where) => {
    let err: unknown;
    try {
      parseDesired({ capture });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'EDGE_ERR_DESIRED_INVALID' });
    const message = (err as Error).message;
    expect(message).toContain(where);
    expect(message).not.toContain('SECRETSIGNATURE');
  });
});

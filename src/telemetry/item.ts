export const OUTPUTS = ['results', 'events', 'stats', 'captures'] as const;
export type Output = (typeof OUTPUTS)[number];

/**
 * Whether items of `output` share messages. Results do (a `{"results":[…]}` body of one group);
 * every other output's body is one item, so each event, stats snapshot and capture is a message
 * of its own.
 */
export function batched(output: Output): boolean {
  return output === 'results';
}

/** One produced item: a frame result, a lifecycle event or a stats snapshot. */
export interface Item {
  /** Monotonic sequence, unique per daemon data dir. */
  seq: number;
  output: Output;
  /** Routing group: items of one message share it (results: defect flag + model version); see `batched`. */
  group: string;
  /** Message properties shared by the group. */
  properties: Record<string, string>;
  /** The body, serialised once when the item is produced (JSON). */
  json: string;
  /** Size of `json`, bytes (UTF-8). */
  bytes: number;
  producedAt: number;
}

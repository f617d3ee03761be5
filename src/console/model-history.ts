import type { LifecycleEvent } from '../telemetry/events.js';
import type { HistoryEntry } from './types.js';

/** Model changes the console keeps to show; older ones are in the `events` output upstream. */
const HISTORY_LIMIT = 50;

/**
 * Strips the query string of every URL in a JSON document: a model URL or a capture container
 * may carry a SAS token, which the page must never show.
 */
export function withoutSecrets(value: unknown): unknown {
  if (typeof value === 'string') {
    return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) && value.includes('?')
      ? `${value.slice(0, value.indexOf('?'))}?…`
      : value;
  }
  if (Array.isArray(value)) return value.map(withoutSecrets);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutSecrets(v)]));
  }
  return value;
}

/**
 * What the console's model view shows beside the model lifecycle's own status: the history of
 * model changes (lifecycle events, as they go upstream) and the last desired document. It only
 * records; `ModelManager` stays the owner of the status and last error.
 */
export class ModelHistory {
  private readonly entries: HistoryEntry[] = [];
  private desired: { version: number; at: string; document: unknown } | null = null;

  event(e: LifecycleEvent): void {
    this.entries.unshift({ at: new Date().toISOString(), ...e });
    if (this.entries.length > HISTORY_LIMIT) this.entries.length = HISTORY_LIMIT;
  }

  desiredReceived(document: Record<string, unknown>, version: number): void {
    this.desired = { version, at: new Date().toISOString(), document: withoutSecrets(document) };
  }

  get history(): HistoryEntry[] {
    return [...this.entries];
  }

  get lastDesired(): { version: number; at: string; document: unknown } | null {
    return this.desired;
  }
}

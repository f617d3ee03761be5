import { ErrorCodes } from '../errors.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { MethodHandler } from './iothub-connection.js';
import type { ModelManager } from '../models/manager.js';
import type { ShadowTrial } from '../shadow/trial.js';
import type { DesiredStateReconciler } from './reconciler.js';
import type { ReportedProperties } from './reported.js';

/**
 * Direct methods: `getStatus`, `reloadModel`, `rollback`, `promote` (the shadow candidate becomes
 * the active model). Answers carry the model report, so an
 * operator invoking a method from the portal sees the outcome without reading the twin.
 */
export function directMethods(deps: {
  engine: ScoringEngine;
  manager: ModelManager;
  reconciler: DesiredStateReconciler;
  reported: ReportedProperties;
  shadow?: ShadowTrial;
}): Record<string, MethodHandler> {
  const { engine, manager, reconciler, reported, shadow } = deps;
  return {
    getStatus: async () => ({
      status: 200,
      payload: { ready: engine.ready, ...reported.document, model: manager.status },
    }),
    reloadModel: async () => {
      await reconciler.reloadModel();
      const model = manager.status;
      return { status: model.status === 'active' ? 200 : 500, payload: { model } };
    },
    rollback: async () => {
      const result = await manager.rollback();
      const model = manager.status;
      if (result.ok) return { status: 200, payload: { model } };
      const status = result.error?.code === 'EDGE_ERR_NOT_FOUND' ? 404 : 500;
      return { status, payload: { error: result.error, model } };
    },
    promote: async () => {
      const candidate = shadow?.promotable();
      if (!shadow || !candidate) {
        const error = { code: ErrorCodes.NOT_FOUND, message: 'no candidate is warmed and scoring' };
        return { status: 404, payload: { error, model: manager.status, candidate: shadow?.report ?? null } };
      }
      const ok = await reconciler.promote(candidate);
      if (ok) await shadow.promoted();
      const model = manager.status;
      return { status: ok ? 200 : 500, payload: { model, candidate: shadow.report } };
    },
  };
}

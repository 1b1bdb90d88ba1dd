/**
 * The consumers of the receiver's action outbox on this node: a peer's signal is acted on right
 * after the transaction that received it (woken in-process), and every few seconds anything left
 * (rows of another node that died, or a consumer that failed) is picked up. Each consumer claims rows
 * with SKIP LOCKED and marks them processed in the transaction that acts, so any number of nodes may
 * run this at once. `notify` rows are the notification worker's (src/notify/signalNotices.ts);
 * revoke_sessions and forward happen in the receiving transaction itself.
 */
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { applySweepSuspensions } from '../linking/index.ts';
import type { Logger } from '../log.ts';
import { riskEngineFor } from '../risk/index.ts';
import { applyPeerRiskActions } from '../risk/peerActions.ts';
import { onActionsQueued } from './actions.ts';

const LEFTOVER_EVERY_MS = 5_000;
const BATCH = 100;

export interface ActionConsumers {
  /** Runs the consumers now; resolves when this round is done (tests). */
  run(): Promise<void>;
  stop(): Promise<void>;
}

export function startActionConsumers(o: { config: Config; db: Db; logger: Logger }): ActionConsumers {
  const engine = riskEngineFor(o.config);
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;

  async function round(): Promise<void> {
    while (!stopped && (await applyPeerRiskActions(engine, o.db, BATCH)) === BATCH);
    while (!stopped && (await applySweepSuspensions(o.db, o.config, BATCH)).claimed === BATCH);
  }

  function run(): Promise<void> {
    if (stopped) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = round()
      .catch((err: unknown) => o.logger.error({ err }, 'applying peer signal actions failed'))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          void run();
        }
      });
    return running;
  }

  const unsubscribe = onActionsQueued(() => void run());
  const timer = setInterval(() => void run(), LEFTOVER_EVERY_MS);
  timer.unref();
  void run();
  return {
    run,
    async stop() {
      stopped = true;
      clearInterval(timer);
      unsubscribe();
      await running;
    },
  };
}

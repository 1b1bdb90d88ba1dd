/**
 * Shared Signals (OpenID SSF 1.0 with CAEP and RISC events): the hub as transmitter — discovery,
 * stream management, push (RFC 8935) and poll (RFC 8936) delivery from a Postgres outbox — and as
 * receiver — a push endpoint and poll client for configured peers, with configurable actions.
 *
 * Other modules call emitSecurityEvent (inside their own transaction) and the link functions; the
 * hub creates one Signals per node (createSignals), mounts its routes and starts its worker.
 */
import type Router from '@koa/router';
import type Provider from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { loadKeyEncryptionKey } from '../keys/index.ts';
import type { Logger } from '../log.ts';
import { createSignalsContext, type SignalsContext } from './context.ts';
import { loadSsfKeys } from './keys.ts';
import { PeerMetadata } from './peerMetadata.ts';
import { signalsRoutes } from './routes.ts';
import { Subscriber } from './subscriber.ts';
import { type SignalsWorker, startSignalsWorker } from './worker.ts';

export { SSF_SCOPES, ssfResource } from './context.ts';
export { type EmittedEvent, emitSecurityEvent } from './emit.ts';
export {
  ManagementError,
  type SetErrorCode,
  SetRejected,
  SignalsError,
  type SignalsErrorCode,
} from './errors.ts';
export { SSF_TOKEN_TTL_SECONDS, ssfResourceIndicators } from './oauth.ts';
export {
  changeStreamStatus,
  type DeadLetter,
  listDeadLetters,
  listPeerBreakers,
  type PeerBreaker,
  type PeerClientInput,
  registerPeerClient,
  requeueDeadLetters,
  resolvePeerBreaker,
  revokeCustomerSessions,
} from './ops.ts';
export { ssfConfigurationUrl } from './peerMetadata.ts';
export {
  canonicalJson,
  findLink,
  type LinkCustomerInput,
  linkCustomer,
  outgoingSubject,
  type SubjectLink,
  unlinkCustomer,
  withdrawSharedSubject,
} from './subjects.ts';
export type {
  CredentialType,
  SecurityEventInput,
  SecurityEventType,
  SignalAction,
  SubjectId,
} from './types.ts';
export {
  DEFAULT_ACTIONS,
  EVENT,
  POLL,
  PUSH,
  SET_CONTENT_TYPE,
  SET_TYPE,
  TRANSMITTED_EVENTS,
} from './vocabulary.ts';

export interface Signals {
  context: SignalsContext;
  subscriber: Subscriber;
  /** The SSF routes (empty when `signals.enabled` is false). */
  routes(provider: Provider): Router;
  /** Starts this node's worker (fan-out, push, upkeep, subscriptions at peers). */
  start(): void;
  /** Runs a worker round now. */
  kick(): void;
  /** Retries subscriptions at peers now instead of at the next retry interval. */
  resubscribe(): void;
  stop(): Promise<void>;
}

export async function createSignals(o: { config: Config; db: Db; logger: Logger }): Promise<Signals> {
  const kek = loadKeyEncryptionKey(o.config);
  const keys = await loadSsfKeys(o.db, kek);
  const context = createSignalsContext({
    db: o.db,
    config: o.config,
    keys,
    kek,
    logger: o.logger.child({ module: 'signals' }),
  });
  const metadata = new PeerMetadata(context);
  const subscriber = new Subscriber(context, metadata);
  let worker: SignalsWorker | undefined;
  return {
    context,
    subscriber,
    routes(provider) {
      return signalsRoutes({ ctx: context, provider, metadata, enabled: o.config.signals.enabled });
    },
    start() {
      if (o.config.signals.enabled && !worker) worker = startSignalsWorker(context, subscriber);
    },
    kick() {
      worker?.kick();
    },
    resubscribe() {
      worker?.resubscribe();
    },
    async stop() {
      await worker?.stop();
      worker = undefined;
      context.agents.close();
    },
  };
}

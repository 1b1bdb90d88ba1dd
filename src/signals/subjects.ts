/**
 * Subjects: how the hub names a customer towards each peer, and how it recognises the customer in
 * what a peer sends. Each (peer, customer) link holds a random pairwise identifier — sent as
 * `iss_sub` with the hub's issuer, so two peers cannot correlate their customers through us — and,
 * once the accounts are linked, how the peer names the customer. A shared identifier (e-mail, phone)
 * replaces the pairwise one only when the customer consented to sharing it with that peer.
 */
import { randomBytes } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { SignalsError } from './errors.ts';
import type { SubjectId } from './types.ts';

/** Canonical JSON (sorted keys): the key under which a subject is stored and compared. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const MEMBER = /^[\x21-\x7e]{1,64}$/;

/**
 * A structurally valid RFC 9493 subject identifier (or SSF complex subject): a `format` and string
 * members for the formats the hub knows, bounded in size so nothing unbounded reaches storage.
 */
export function isSubjectId(value: unknown, depth = 0): value is SubjectId {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return false;
  const s = value as Record<string, unknown>;
  if (typeof s.format !== 'string' || !MEMBER.test(s.format)) return false;
  if (canonicalJson(s).length > 2048) return false;
  const str = (k: string) => typeof s[k] === 'string' && (s[k] as string).length > 0;
  switch (s.format) {
    case 'opaque':
      return str('id');
    case 'email':
      return str('email');
    case 'phone_number':
      return str('phone_number');
    case 'iss_sub':
      return str('iss') && str('sub');
    case 'account':
      return str('uri');
    case 'did':
    case 'uri':
      return str('url') || str('uri');
    case 'aliases':
      return Array.isArray(s.identifiers) && s.identifiers.every((i) => isSubjectId(i, depth + 1));
    case 'complex': {
      if (depth > 0) return false;
      const members = Object.entries(s).filter(([k]) => k !== 'format');
      return members.length > 0 && members.every(([, v]) => isSubjectId(v, depth + 1));
    }
    default:
      // Other registered or agreed formats: any string members.
      return Object.values(s).every((v) => typeof v === 'string');
  }
}

export interface SubjectLink {
  peerId: string;
  customerId: string;
  pairwiseSub: string;
  peerSubject: SubjectId | null;
  sharedSubject: SubjectId | null;
  consentedAt: Date | null;
}

interface LinkRow {
  peer_id: string;
  customer_id: string;
  pairwise_sub: string;
  peer_subject: SubjectId | null;
  shared_subject: SubjectId | null;
  consented_at: Date | null;
}

const toLink = (r: LinkRow): SubjectLink => ({
  peerId: r.peer_id,
  customerId: r.customer_id,
  pairwiseSub: r.pairwise_sub,
  peerSubject: r.peer_subject,
  sharedSubject: r.shared_subject,
  consentedAt: r.consented_at,
});

/** The subject the hub sends a peer for a linked customer. */
export function outgoingSubject(
  issuer: string,
  link: { pairwiseSub: string; sharedSubject: SubjectId | null; consentedAt: Date | null },
): SubjectId {
  if (link.sharedSubject && link.consentedAt) return link.sharedSubject;
  return { format: 'iss_sub', iss: issuer, sub: link.pairwiseSub };
}

export interface LinkCustomerInput {
  peerId: string;
  customerId: string;
  /** How the peer names the customer in SETs it sends (e.g. its own `iss_sub`). */
  peerSubject?: SubjectId;
  /** An identifier the customer consented to share with this peer, and the consent it rests on. */
  sharedSubject?: { subject: SubjectId; consentRef: string };
  actor?: string;
}

/**
 * Records (or updates) that a customer has a relationship with a peer, so events about the customer
 * go to it. Returns the link, whose pairwise identifier stays the same across calls.
 */
export async function linkCustomer(db: Queryable, input: LinkCustomerInput): Promise<SubjectLink> {
  if (input.peerSubject && !isSubjectId(input.peerSubject))
    throw new TypeError('peerSubject is not a subject identifier');
  if (input.sharedSubject && !isSubjectId(input.sharedSubject.subject))
    throw new TypeError('sharedSubject is not a subject identifier');
  // One identifier names one customer towards a peer (unique index ssf_subject_links_shared, 0037);
  // refused here first so the caller gets a typed error, not a constraint violation.
  if (input.sharedSubject) {
    const taken = await db.query(
      `SELECT 1 FROM ssf_subject_links WHERE peer_id = $1 AND consented_at IS NOT NULL
         AND shared_subject = $2::jsonb AND customer_id <> $3`,
      [input.peerId, JSON.stringify(input.sharedSubject.subject), input.customerId],
    );
    if (taken.rowCount > 0)
      throw new SignalsError(
        'ERR_SSF_SUBJECT_TAKEN',
        `another customer already shares this identifier with peer ${input.peerId}`,
      );
  }
  const res = await db.query<LinkRow>(
    `INSERT INTO ssf_subject_links (peer_id, customer_id, pairwise_sub, peer_subject, peer_subject_key, shared_subject, consent_ref, consented_at)
     VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, CASE WHEN $6::jsonb IS NULL THEN NULL ELSE now() END)
     ON CONFLICT (peer_id, customer_id) DO UPDATE SET
       peer_subject = COALESCE(EXCLUDED.peer_subject, ssf_subject_links.peer_subject),
       peer_subject_key = COALESCE(EXCLUDED.peer_subject_key, ssf_subject_links.peer_subject_key),
       shared_subject = COALESCE(EXCLUDED.shared_subject, ssf_subject_links.shared_subject),
       consent_ref = COALESCE(EXCLUDED.consent_ref, ssf_subject_links.consent_ref),
       consented_at = COALESCE(EXCLUDED.consented_at, ssf_subject_links.consented_at)
     RETURNING peer_id, customer_id, pairwise_sub, peer_subject, shared_subject, consented_at`,
    [
      input.peerId,
      input.customerId,
      randomBytes(18).toString('base64url'),
      input.peerSubject ? JSON.stringify(input.peerSubject) : null,
      input.peerSubject ? canonicalJson(input.peerSubject) : null,
      input.sharedSubject ? JSON.stringify(input.sharedSubject.subject) : null,
      input.sharedSubject?.consentRef ?? null,
    ],
  );
  await recordAudit(db, {
    type: 'ssf.subject.linked',
    outcome: 'success',
    actor: input.actor ?? 'system',
    customerId: input.customerId,
    data: {
      peerId: input.peerId,
      peerSubjectKnown: Boolean(input.peerSubject),
      sharedIdentifier: input.sharedSubject
        ? { format: input.sharedSubject.subject.format, consentRef: input.sharedSubject.consentRef }
        : undefined,
    },
  });
  return toLink(res.rows[0]!);
}

/** Withdraws consent to share an identifier: the peer gets the pairwise identifier from now on. */
export async function withdrawSharedSubject(
  db: Queryable,
  peerId: string,
  customerId: string,
): Promise<void> {
  await db.query(
    'UPDATE ssf_subject_links SET shared_subject = NULL, consent_ref = NULL, consented_at = NULL WHERE peer_id = $1 AND customer_id = $2',
    [peerId, customerId],
  );
  await recordAudit(db, {
    type: 'ssf.subject.consent_withdrawn',
    outcome: 'success',
    customerId,
    data: { peerId },
  });
}

/** Ends a customer's relationship with a peer: no more events about the customer go to it. */
export async function unlinkCustomer(db: Queryable, peerId: string, customerId: string): Promise<boolean> {
  const res = await db.query('DELETE FROM ssf_subject_links WHERE peer_id = $1 AND customer_id = $2', [
    peerId,
    customerId,
  ]);
  if (res.rowCount > 0)
    await recordAudit(db, { type: 'ssf.subject.unlinked', outcome: 'success', customerId, data: { peerId } });
  return res.rowCount > 0;
}

export async function findLink(
  db: Queryable,
  peerId: string,
  customerId: string,
): Promise<SubjectLink | undefined> {
  const res = await db.query<LinkRow>(
    `SELECT peer_id, customer_id, pairwise_sub, peer_subject, shared_subject, consented_at
     FROM ssf_subject_links WHERE peer_id = $1 AND customer_id = $2`,
    [peerId, customerId],
  );
  return res.rows[0] ? toLink(res.rows[0]) : undefined;
}

/**
 * The customer a subject names, as seen from one peer: our pairwise `iss_sub`, the identifier the
 * peer itself uses (learnt at linking), or a consented shared identifier. A complex subject is
 * judged by its `user` member. Unknown → undefined (never an error: peers may name anyone). A subject
 * that names more than one customer (e.g. one customer's peer identifier is another's shared e-mail)
 * names nobody: acting on an arbitrary one of them would be worse than not acting; audited
 * `ssf.subject.ambiguous` for the operator.
 */
export async function resolveSubject(
  db: Queryable,
  peerId: string,
  subject: SubjectId,
  issuer: string,
): Promise<string | undefined> {
  let s = subject;
  if (s.format === 'complex') {
    const user = s.user;
    if (!isSubjectId(user)) return undefined;
    s = user;
  }
  const res = await db.query<{ customer_id: string }>(
    `SELECT DISTINCT customer_id FROM ssf_subject_links
     WHERE peer_id = $1 AND (
       ($2::text IS NOT NULL AND pairwise_sub = $2)
       OR peer_subject_key = $3
       OR (consented_at IS NOT NULL AND shared_subject = $4::jsonb))
     LIMIT 2`,
    [
      peerId,
      s.format === 'iss_sub' && s.iss === issuer && typeof s.sub === 'string' ? s.sub : null,
      canonicalJson(s),
      JSON.stringify(s),
    ],
  );
  if (res.rows.length > 1) {
    await recordAudit(db, {
      type: 'ssf.subject.ambiguous',
      outcome: 'failure',
      actor: `peer:${peerId}`,
      data: { peerId, format: s.format },
    });
    return undefined;
  }
  return res.rows[0]?.customer_id;
}

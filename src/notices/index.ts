/**
 * Important notices a customer must read and acknowledge before continuing (JSDA IV.7.(2)④):
 * published by operators, shown at the customer's next sign-in (an oidc-provider prompt after
 * login), acknowledged once per customer, every acknowledgement audited.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';

export interface Notice {
  id: string;
  title: { ja: string; en: string };
  body: { ja: string; en: string };
  publishedAt: Date;
}

const text = (max: number) => z.string().trim().min(1).max(max);
const noticeInput = z.strictObject({
  title: z.strictObject({ ja: text(200), en: text(200) }),
  body: z.strictObject({ ja: text(4000), en: text(4000) }),
});

export class NoticeError extends Error {
  override name = 'NoticeError';
  readonly code = 'ERR_NOTICE_INVALID';
}

export async function publishNotice(db: Queryable, input: unknown, publishedBy: string): Promise<Notice> {
  const parsed = noticeInput.safeParse(input);
  if (!parsed.success)
    throw new NoticeError(
      parsed.error.issues.map((i) => `${i.path.join('.') || '(notice)'}: ${i.message}`).join('; '),
    );
  const { title, body } = parsed.data;
  // Like every message to customers (JSDA IV.4.(6)): no links to follow.
  if (/https?:\/\/|www\./i.test(`${title.ja}${title.en}${body.ja}${body.en}`))
    throw new NoticeError('notices must not contain links');
  const id = `ntc_${randomBytes(8).toString('hex')}`;
  const res = await db.query<{ published_at: Date }>(
    `INSERT INTO notices (id, title_ja, title_en, body_ja, body_en, published_by) VALUES ($1, $2, $3, $4, $5, $6)
     RETURNING published_at`,
    [id, title.ja, title.en, body.ja, body.en, publishedBy],
  );
  await recordAudit(db, {
    type: 'notice.published',
    outcome: 'info',
    actor: publishedBy,
    data: { noticeId: id },
  });
  return { id, title, body, publishedAt: res.rows[0]!.published_at };
}

/** Published notices the customer has not acknowledged yet, oldest first. */
export async function pendingNotices(db: Queryable, customerId: string): Promise<Notice[]> {
  const res = await db.query<{
    id: string;
    title_ja: string;
    title_en: string;
    body_ja: string;
    body_en: string;
    published_at: Date;
  }>(
    `SELECT n.id, n.title_ja, n.title_en, n.body_ja, n.body_en, n.published_at FROM notices n
     WHERE n.withdrawn_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM notice_acknowledgements a WHERE a.notice_id = n.id AND a.customer_id = $1)
     ORDER BY n.published_at, n.id`,
    [customerId],
  );
  return res.rows.map((r) => ({
    id: r.id,
    title: { ja: r.title_ja, en: r.title_en },
    body: { ja: r.body_ja, en: r.body_en },
    publishedAt: r.published_at,
  }));
}

/** Records that the customer acknowledged these notices (only ones that exist; idempotent). */
export async function acknowledgeNotices(
  db: Queryable,
  customerId: string,
  noticeIds: string[],
  meta: { ip?: string | undefined; userAgent?: string | undefined; interactionId?: string | undefined } = {},
): Promise<number> {
  if (noticeIds.length === 0) return 0;
  const res = await db.query(
    `INSERT INTO notice_acknowledgements (notice_id, customer_id)
     SELECT id, $2 FROM notices WHERE id = ANY ($1::text[]) AND withdrawn_at IS NULL
     ON CONFLICT DO NOTHING`,
    [noticeIds, customerId],
  );
  if (res.rowCount > 0)
    await recordAudit(db, {
      type: 'notice.acknowledged',
      outcome: 'success',
      actor: `customer:${customerId}`,
      customerId,
      ...meta,
      data: { noticeIds },
    });
  return res.rowCount;
}

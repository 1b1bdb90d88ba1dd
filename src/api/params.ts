/**
 * Query parameters of the read API. Every malformed value is an ApiError 400 in the envelope,
 * never an exception that would surface as a 500.
 */
import type { Context } from 'koa';
import { z } from 'zod';
import { plausibleDateTime } from '../ledger/index.ts';
import { ApiError } from './errors.ts';

export const PAGE_SIZE_DEFAULT = 100;
export const PAGE_SIZE_MAX = 500;

const dateTime = z.iso.datetime({ offset: true });
const dateOnly = z.iso.date();

const badRequest = (message: string) => new ApiError(400, 'invalid_request', message);

/** One value of a query parameter; repeating it is a client mistake. */
export function single(ctx: Context, name: string): string | undefined {
  const v = ctx.query[name];
  if (Array.isArray(v)) throw badRequest(`${name} must be given once`);
  return v;
}

export function pageSize(ctx: Context, fallback = PAGE_SIZE_DEFAULT): number {
  const raw = single(ctx, 'pageSize');
  if (raw === undefined) return fallback;
  if (!/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > PAGE_SIZE_MAX)
    throw badRequest(`pageSize must be an integer from 1 to ${PAGE_SIZE_MAX}`);
  return Number(raw);
}

const inRange = (s: string) => {
  const year = Number(s.slice(0, 4));
  return year >= 1900 && year <= 2100;
};

/**
 * A booking date-time bound: RFC 3339 with an offset, or a date (a day in Japan: from its first
 * to its last microsecond, +09:00). Returned as a string Postgres reads as timestamptz.
 */
export function bookingBound(ctx: Context, name: string, end: 'from' | 'to'): string | undefined {
  const raw = single(ctx, name);
  if (raw === undefined) return undefined;
  if (dateOnly.safeParse(raw).success && inRange(raw))
    return end === 'from' ? `${raw}T00:00:00+09:00` : `${raw}T23:59:59.999999+09:00`;
  if (dateTime.safeParse(raw).success && plausibleDateTime(raw) && !/\.\d{7,}/.test(raw)) return raw;
  throw badRequest(`${name} must be an RFC 3339 date-time with an offset, or a date (YYYY-MM-DD)`);
}

/** A check of the SSF plan: one item of ../shared/conformance/ssf-checklist.md, run against a live hub. */
import type { SsfCheckContext } from './lib/context.ts';

export interface SsfCheck {
  /** Checklist group, e.g. "Stream management". */
  group: string;
  /** Stable id, unique in the plan. */
  id: string;
  title: string;
  /** What the hub must do: succeed, or reject. */
  expect: 'accept' | 'fail';
  run(ctx: SsfCheckContext): Promise<void>;
}

/**
 * The operator console (issue 8, item 5; JSDA IV.6): operators with their own passkeys and roles,
 * customer search and view, freeze / unfreeze after re-proofing, sessions, enrollment tickets,
 * exemptions, the effective policies and the management report. See docs/operator-console.md.
 */
export { ConsoleError, type ConsoleErrorCode } from './errors.ts';
export { freezeCustomer, openFreeze, unfreezeCustomer } from './freeze.ts';
export {
  addOperator,
  disableOperator,
  listOperators,
  type Operator,
  ROLES,
  type Role,
  reissueOperatorTicket,
} from './operators.ts';
export { CONSOLE_COOKIE, type ConsoleRoutesOptions, consoleRoutes } from './routes.ts';

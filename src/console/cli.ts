/** `kakehashi operators …`: the only way to create the first operator (an admin) and their ticket. */
import type { Db } from '../db/index.ts';
import { ConsoleError } from './errors.ts';
import {
  addOperator,
  disableOperator,
  listOperators,
  ROLES,
  type Role,
  reissueOperatorTicket,
} from './operators.ts';

const USAGE =
  'usage: operators add <name> --role viewer|operator|admin | operators list | operators disable <name> | operators ticket <name>';

export async function operatorsCommand(
  db: Db,
  args: string[],
  o: { role: string | undefined; by: string },
): Promise<number> {
  const [action = 'list', name] = args;
  try {
    if (action === 'list') {
      for (const op of await listOperators(db))
        console.log(
          `${op.status === 'active' ? 'active  ' : 'DISABLED'}  ${op.name.padEnd(24)} ${op.role.padEnd(9)} passkeys ${op.passkeys}  since ${op.createdAt.toISOString()}`,
        );
      return 0;
    }
    if (!name) {
      console.error(USAGE);
      return 2;
    }
    if (action === 'add') {
      if (!ROLES.includes(o.role as Role)) {
        console.error('operators add needs --role viewer|operator|admin');
        return 2;
      }
      const t = await addOperator(db, { name, role: o.role as Role, by: o.by });
      console.log(
        `${t.ticket}\noperator ${name} (${o.role}); enrollment ticket expires ${t.expiresAt.toISOString()} — it is shown only once; enroll a passkey at /console/enroll`,
      );
      return 0;
    }
    if (action === 'ticket') {
      const t = await reissueOperatorTicket(db, name, o.by);
      console.log(
        `${t.ticket}\nexpires ${t.expiresAt.toISOString()} — shown only once; older tickets no longer work`,
      );
      return 0;
    }
    if (action === 'disable') {
      const done = await disableOperator(db, name, o.by);
      console.log(done ? `operator ${name} disabled; their sessions ended` : `no active operator ${name}`);
      return done ? 0 : 2;
    }
    console.error(USAGE);
    return 2;
  } catch (err) {
    if (!(err instanceof ConsoleError)) throw err;
    console.error(`refused: ${err.message}`);
    return 2;
  }
}

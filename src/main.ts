/**
 * Kakehashi command line.
 *   serve                       start the hub (default)
 *   migrate                     apply pending migrations and exit
 *   enroll-ticket <customer>    issue a one-time enrollment ticket (customer number or id) and print it
 *   keys                        list the public signing keys
 */
import { parseArgs } from 'node:util';
import {
  createAuthnContext,
  endExemption,
  exemptionReport,
  grantExemption,
  issueEnrollmentTicket,
} from './authn/index.ts';
import { ConfigError, loadConfig } from './config/index.ts';
import { migrate, openDb, type Queryable } from './db/index.ts';
import { startHub } from './hub.ts';
import { loadKeyEncryptionKey, loadKeyMaterial } from './keys/index.ts';

const USAGE = `usage: kakehashi <command>
  serve                      start the hub (default)
  migrate                    apply pending database migrations
  enroll-ticket <customer>   issue a one-time enrollment ticket for a customer (number or id)
  exemption grant <customer> --reason "…"   exempt a customer without a passkey-capable device
  exemption end <customer>   end an exemption (the customer's authenticator app stops working)
  report                     protective-settings report (exemption rate 解除率)
  keys                       list the public signing keys (JWKS)
options: --operator NAME (recorded in the audit log)`;

/** A customer by id or customer number; undefined (with a message) when none or several match. */
async function resolveCustomer(db: Queryable, who: string): Promise<string | undefined> {
  const found = await db.query<{ id: string }>(
    'SELECT id FROM customers WHERE id = $1 OR customer_number = $1',
    [who],
  );
  if (found.rowCount !== 1) {
    console.error(found.rowCount === 0 ? `no customer ${who}` : `${who} is ambiguous; use the customer id`);
    return undefined;
  }
  return found.rows[0]!.id;
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      operator: { type: 'string' },
      reason: { type: 'string' },
    },
  });
  const [command = 'serve', ...rest] = positionals;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const config = loadConfig();
  const operator = `operator:${values.operator ?? process.env.USER ?? 'cli'}`;

  if (command === 'serve') {
    const hub = await startHub(config);
    const lines = [
      `Kakehashi is listening on ${hub.listenUrl}`,
      `  issuer:        ${config.issuer}`,
      `  discovery:     ${config.issuer}/.well-known/openid-configuration`,
      `  database:      ${hub.db.kind === 'pglite' ? `embedded PGlite in ${config.dataDir}/pgdata` : 'PostgreSQL (DATABASE_URL)'}`,
    ];
    if (hub.caPath)
      lines.push(`  dev CA:        ${hub.caPath} (trust it to avoid certificate warnings; see README)`);
    if (hub.demo) {
      lines.push(`  demo client:   ${hub.demo.clientFile}`);
      lines.push(`  demo customer: customer number ${hub.demo.customerNumber}`);
      const passkeys = await hub.db.query('SELECT 1 FROM passkeys WHERE customer_id = $1 LIMIT 1', [
        hub.demo.customerId,
      ]);
      if (passkeys.rowCount === 0) {
        const t = await issueEnrollmentTicket(hub.authn, {
          customerId: hub.demo.customerId,
          issuedBy: 'demo',
        });
        lines.push(
          `  enrollment ticket for the demo customer: ${t.ticket} (expires ${t.expiresAt.toISOString()})`,
        );
      }
    }
    console.log(lines.join('\n'));
    const stop = async () => {
      await hub.close();
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    return -1;
  }

  const db = await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    await migrate(db);
    if (command === 'migrate') {
      console.log('migrations are up to date');
      return 0;
    }
    if (command === 'enroll-ticket') {
      const who = rest[0];
      if (!who) {
        console.error('enroll-ticket needs a customer number or id');
        return 2;
      }
      const customerId = await resolveCustomer(db, who);
      if (!customerId) return 2;
      const t = await issueEnrollmentTicket(createAuthnContext(db, config), {
        customerId: customerId,
        issuedBy: operator,
      });
      console.log(
        `${t.ticket}\nexpires ${t.expiresAt.toISOString()} — deliver it out of band (転送不要郵便); it is shown only once`,
      );
      return 0;
    }
    if (command === 'exemption') {
      const [action, who] = rest;
      const customerId = who ? await resolveCustomer(db, who) : undefined;
      if (!customerId || (action !== 'grant' && action !== 'end')) {
        console.error('usage: exemption grant <customer> --reason "…" | exemption end <customer>');
        return 2;
      }
      if (action === 'grant') {
        if (!values.reason) {
          console.error('exemption grant needs --reason (why the customer cannot use a passkey)');
          return 2;
        }
        const e = await grantExemption(db, { customerId, reason: values.reason, grantedBy: operator });
        console.log(
          `exemption ${e.id} granted ${e.grantedAt.toISOString()}; the customer sets up an authenticator app with an enrollment ticket`,
        );
      } else {
        console.log((await endExemption(db, customerId, operator)) ? 'exemption ended' : 'no open exemption');
      }
      return 0;
    }
    if (command === 'report') {
      const r = await exemptionReport(db);
      console.log(
        `customers: ${r.customers}\nexempted from phishing-resistant MFA: ${r.exempted}\nexemption rate (解除率): ${(r.rate * 100).toFixed(2)} %`,
      );
      return 0;
    }
    if (command === 'keys') {
      const keys = await loadKeyMaterial(db, loadKeyEncryptionKey(config));
      console.log(JSON.stringify(keys.publicJwks, null, 2));
      return 0;
    }
    console.error(USAGE);
    return 2;
  } finally {
    await db.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    console.error(err instanceof ConfigError ? `configuration error: ${err.message}` : err);
    process.exit(1);
  },
);

/**
 * Kakehashi command line.
 *   serve                       start the hub (default)
 *   migrate                     apply pending migrations and exit
 *   enroll-ticket <customer>    issue a one-time enrollment ticket (customer number or id) and print it
 *   keys …                      signing keys and the key-encryption key (src/keys/command.ts)
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { exportCustomerAudit, recordAudit } from './audit/index.ts';
import { createAuthnContext, endExemption, grantExemption, issueEnrollmentTicket } from './authn/index.ts';
import { ConfigError, loadConfig } from './config/index.ts';
import { operatorsCommand } from './console/cli.ts';
import { migrate, openDb, type Queryable } from './db/index.ts';
import { type Hub, startHub } from './hub.ts';
import { newKeyEncryptionKey, runKeysCommand } from './keys/command.ts';
import { describePolicy, loadPolicy, PolicyError } from './linking/index.ts';
import { NoticeError, publishNotice } from './notices/index.ts';
import { addClient, ClientPolicyError, listClients, removeClient, setClientEnabled } from './oidc/clients.ts';
import { notifyCustomer } from './oidc/securityNotices.ts';
import { createInitialAccessToken } from './registration/index.ts';
import { formatReport, protectiveSettingsReport } from './report/index.ts';
import {
  createRiskEngine,
  declareTravel,
  exportCustomerForensics,
  GeoDataError,
  loadRuleSet,
  ReplayError,
  RiskRulesError,
  replay,
  TravelError,
  unlockAccount,
} from './risk/index.ts';
import { ssfCommand } from './signals/cli.ts';
import { isFirstWorker, reportReady, runPrimary } from './workers.ts';

const USAGE = `usage: kakehashi <command>
  serve                      start the hub (default)
  migrate                    apply pending database migrations
  enroll-ticket <customer>   issue a one-time enrollment ticket for a customer (number or id)
  exemption grant <customer> --reason "…"   exempt a customer without a passkey-capable device
  exemption end <customer>   end an exemption (the customer's authenticator app stops working)
  report [--from D] [--to D] [--json]   protective-settings report for management (passkey adoption,
                             notification reach, exemption rate 解除率, locks) against targets
  export-audit <customer> [--from D] [--to D]   a customer's security history as JSON lines
  forensics export <customer> [--from D] [--to D]   a customer's sign-ins and operations (time, IP,
                             port, device, user agent, country/AS, method, result, risk) as JSON lines
  risk rules [--rules FILE]  print the effective risk rules (JSON)
  risk replay <events.jsonl> [--rules FILE]   decide a recorded event stream offline, one JSON line
                             per sign-in attempt
  risk travel <customer> --country CC [--from D] --to D   record travel the customer declared
  risk unlock <customer>     lift the customer's account lock (failed sign-ins, or a peer's demand for
                             re-proofing) without re-proofing; audited, the customer told
  clients list | add <metadata.json> | disable <id> | enable <id> | remove <id>
                             manage registered clients (FAPI policy enforced; disabling is immediate)
  clients iat create [--ttl SECONDS]   an initial access token for one dynamic registration (POST /reg),
                             printed once
  notice publish <notice.json>   an important notice customers acknowledge at their next sign-in
  keys [list]                the signing keys and their status (next, current, previous, retired)
  keys jwks                  the published JWKS
  keys rotate [--alg ES256|PS256|EdDSA] [--activate-after SECONDS]   publish a next key now (every
                             algorithm unless --alg); it signs after keys.activateAfterSeconds
  keys rekey                 re-seal every secret with the configured key-encryption key (KEK rotation)
  keys new-kek               print a fresh random key-encryption key
  keys rotate-rp             publish a next bank-federation signing key (/federation/jwks.json)
  keys promote-rp            the next bank-federation key signs; the replaced one stays published
  policy show [--ja] [--json]   the effective withdrawal-strength policy (operations, facts, rules)
  ssf streams [--json]       Shared Signals streams: status, delivery method, backlog, last delivery/error
  ssf stream <id> pause|enable|disable [--reason "…"]   change a stream's status (receiver is told)
  ssf dead-letters [--stream <id>] [--retry]   SETs that could not be delivered; --retry requeues them
  ssf verify <id>            send the stream a verification event
  ssf held [--json]          peers' circuit breakers on received SETs and the actions they hold
  ssf release|drop <peer>    run (release) or discard (drop) a peer's held actions; closes its breaker
  operators add <name> --role viewer|operator|admin   add a console operator; prints their one-time
                             enrollment ticket once
  operators list | disable <name> | ticket <name>   list, disable, or re-issue a ticket (lost device)
options: --operator NAME (recorded in the audit log)`;

/** --from/--to as dates (to is exclusive; default: the last 30 days up to now). */
function parsePeriod(from: string | undefined, to: string | undefined): { from: Date; to: Date } | undefined {
  const end = to ? new Date(to) : new Date();
  const start = from ? new Date(from) : new Date(end.getTime() - 30 * 24 * 3600 * 1000);
  if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()) || start >= end) {
    console.error('--from and --to must be dates (YYYY-MM-DD), --from before --to');
    return undefined;
  }
  return { from: start, to: end };
}

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
      from: { type: 'string' },
      to: { type: 'string' },
      json: { type: 'boolean' },
      ja: { type: 'boolean' },
      rules: { type: 'string' },
      country: { type: 'string' },
      ttl: { type: 'string' },
      retry: { type: 'boolean' },
      stream: { type: 'string' },
      alg: { type: 'string', multiple: true },
      'activate-after': { type: 'string' },
      role: { type: 'string' },
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
    if (config.workers > 1 && cluster.isPrimary) {
      await runPrimary(config);
      return -1;
    }
    const hub = await startHub(config);
    const lines = isFirstWorker() ? await startBanner(hub) : [];
    if (cluster.isWorker) reportReady(lines);
    else console.log(lines.join('\n'));
    let stopping = false;
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      await hub.close();
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A worker whose supervisor is gone gets no more connections: it closes its hub and ends.
    if (cluster.isWorker) process.once('disconnect', stop);
    return -1;
  }

  if (command === 'policy') {
    if (rest[0] !== 'show') {
      console.error(USAGE);
      return 2;
    }
    const policy = loadPolicy(config.linking.policyFile);
    console.log(
      values.json ? JSON.stringify(policy, null, 2) : describePolicy(policy, values.ja ? 'ja' : 'en'),
    );
    return 0;
  }
  if (command === 'keys' && rest[0] === 'new-kek') {
    console.log(newKeyEncryptionKey());
    return 0;
  }
  if (command === 'risk' && (rest[0] === 'rules' || rest[0] === 'replay'))
    return riskOffline(config, rest, values.rules);

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
      const period = parsePeriod(values.from, values.to);
      if (!period) return 2;
      const report = await protectiveSettingsReport(db, period);
      console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
      return 0;
    }
    if (command === 'export-audit' || (command === 'forensics' && rest[0] === 'export')) {
      const forensics = command === 'forensics';
      const who = forensics ? rest[1] : rest[0];
      const customerId = who ? await resolveCustomer(db, who) : undefined;
      const period = parsePeriod(values.from, values.to);
      if (!customerId || !period) {
        if (!who)
          console.error(
            `usage: ${forensics ? 'forensics export' : 'export-audit'} <customer> [--from YYYY-MM-DD] [--to YYYY-MM-DD]`,
          );
        return 2;
      }
      // JSON lines on stdout; the export itself is audited (who looked at whose history).
      const rows = forensics
        ? exportCustomerForensics(db, { customerId, ...period })
        : exportCustomerAudit(db, { customerId, ...period });
      for await (const row of rows) console.log(JSON.stringify(row));
      await recordAudit(db, {
        type: forensics ? 'risk.forensics.exported' : 'audit.exported',
        outcome: 'info',
        actor: operator,
        customerId,
        data: { from: period.from.toISOString(), to: period.to.toISOString() },
      });
      return 0;
    }
    if (command === 'risk' && rest[0] === 'unlock') {
      const customerId = rest[1] ? await resolveCustomer(db, rest[1]) : undefined;
      if (!customerId) {
        if (!rest[1]) console.error('usage: risk unlock <customer> [--operator NAME]');
        return 2;
      }
      const lifted = await unlockAccount(db, customerId, operator as `operator:${string}`);
      // Told like a re-proofing's unlock: an operator acting for someone else must not do it silently.
      if (lifted) await notifyCustomer(db, { customerId, kind: 'account_unlocked', data: {} });
      console.log(
        lifted ? `account of ${rest[1]} unlocked` : `no lock in force for ${rest[1]}: nothing to lift`,
      );
      return 0;
    }
    if (command === 'risk' && rest[0] === 'travel') {
      const customerId = rest[1] ? await resolveCustomer(db, rest[1]) : undefined;
      if (!customerId || !values.country || !values.to) {
        console.error('usage: risk travel <customer> --country CC [--from YYYY-MM-DD] --to YYYY-MM-DD');
        return 2;
      }
      try {
        const t = await declareTravel(db, {
          customerId,
          country: values.country.toUpperCase(),
          from: values.from ? new Date(values.from) : new Date(),
          to: new Date(values.to),
          declaredBy: operator,
        });
        console.log(
          `travel ${t.id} recorded: sign-ins from ${values.country.toUpperCase()} until ${values.to} are expected`,
        );
        return 0;
      } catch (err) {
        if (!(err instanceof TravelError)) throw err;
        console.error(`refused: ${err.message}`);
        return 2;
      }
    }
    if (command === 'clients') {
      const [action, arg] = rest;
      if (action === 'iat' && arg === 'create') {
        const ttl = values.ttl === undefined ? config.registration.initialAccessTokenTtl : Number(values.ttl);
        if (!Number.isInteger(ttl) || ttl < 1 || ttl > 30 * 24 * 3600) {
          console.error('--ttl must be a whole number of seconds, at most 30 days');
          return 2;
        }
        const iat = await createInitialAccessToken(db, ttl, operator);
        console.log(iat.value);
        console.error(
          `initial access token for one registration, valid until ${iat.expiresAt.toISOString()}`,
        );
        return 0;
      }
      if (action === 'list' || action === undefined) {
        for (const c of await listClients(db))
          console.log(
            `${c.enabled ? 'enabled ' : 'DISABLED'}  ${c.clientId.padEnd(28)} ${c.grantTypes.join(',').padEnd(40)} ${c.name}`,
          );
        return 0;
      }
      if (!arg) {
        console.error('usage: clients list | add <metadata.json> | disable <id> | enable <id> | remove <id>');
        return 2;
      }
      try {
        if (action === 'add') {
          const m = await addClient(db, JSON.parse(readFileSync(arg, 'utf8')), operator);
          console.log(`client ${m.client_id} registered`);
          return 0;
        }
      } catch (err) {
        if (!(err instanceof ClientPolicyError || err instanceof SyntaxError)) throw err;
        console.error(`refused: ${err.message}`);
        return 2;
      }
      const done =
        action === 'disable' || action === 'enable'
          ? await setClientEnabled(db, arg, action === 'enable', operator)
          : action === 'remove'
            ? await removeClient(db, arg, operator)
            : undefined;
      if (done === undefined) {
        console.error(`unknown clients action ${action}`);
        return 2;
      }
      console.log(done ? `client ${arg}: ${action}d` : `no client ${arg}`);
      return done ? 0 : 2;
    }
    if (command === 'notice') {
      const [action, file] = rest;
      if (action !== 'publish' || !file) {
        console.error('usage: notice publish <notice.json>   ({"title":{"ja","en"},"body":{"ja","en"}})');
        return 2;
      }
      try {
        const n = await publishNotice(db, JSON.parse(readFileSync(file, 'utf8')), operator);
        console.log(`notice ${n.id} published; every customer acknowledges it at their next sign-in`);
        return 0;
      } catch (err) {
        if (!(err instanceof NoticeError || err instanceof SyntaxError)) throw err;
        console.error(`refused: ${err.message}`);
        return 2;
      }
    }
    if (command === 'ssf') return await ssfCommand(db, rest, { ...values, operator });
    if (command === 'keys')
      return await runKeysCommand({
        db,
        config,
        args: rest,
        algs: values.alg,
        activateAfter: values['activate-after'],
        operator,
      });
    if (command === 'operators') return operatorsCommand(db, rest, { role: values.role, by: operator });
    console.error(USAGE);
    return 2;
  } finally {
    await db.close();
  }
}

/** `risk rules` and `risk replay`: no database, only the configuration and the rule file. */
function riskOffline(
  config: ReturnType<typeof loadConfig>,
  args: string[],
  rulesFile: string | undefined,
): number {
  try {
    const rules = rulesFile ? loadRuleSet(rulesFile) : undefined;
    const engine = createRiskEngine(config.risk, rules);
    if (args[0] === 'rules') {
      console.log(JSON.stringify(engine.rules, null, 2));
      return 0;
    }
    const file = args[1];
    if (!file) {
      console.error('usage: risk replay <events.jsonl> [--rules FILE]');
      return 2;
    }
    const counts = { allow: 0, step_up: 0, block: 0, failure: 0 };
    for (const d of replay(readFileSync(file, 'utf8'), {
      rules: engine.rules,
      geo: engine.geo,
      settings: engine.settings,
      windowSeconds: config.risk.velocityWindowSeconds,
    })) {
      counts[d.decision ?? 'failure']++;
      console.log(JSON.stringify(d));
    }
    console.error(
      `rules ${engine.rules.version}: ${counts.allow} allowed, ${counts.step_up} step-up, ${counts.block} blocked, ${counts.failure} failed attempts`,
    );
    return 0;
  } catch (err) {
    if (
      !(
        err instanceof RiskRulesError ||
        err instanceof ReplayError ||
        err instanceof GeoDataError ||
        (err as NodeJS.ErrnoException).code === 'ENOENT'
      )
    )
      throw err;
    console.error(`refused: ${(err as Error).message}`);
    return 2;
  }
}

/** What `serve` prints once the hub listens (the demo customer's enrollment ticket included). */
async function startBanner(hub: Hub): Promise<string[]> {
  const config = hub.config;
  const lines = [
    `Kakehashi is listening on ${hub.listenUrl}`,
    `  issuer:        ${config.issuer}`,
    `  discovery:     ${config.issuer}/.well-known/openid-configuration`,
    `  security page: ${config.issuer}/account`,
    `  database:      ${hub.db.kind === 'pglite' ? `embedded PGlite in ${config.dataDir}/pgdata` : 'PostgreSQL (DATABASE_URL)'}`,
  ];
  if (hub.mtlsUrl)
    lines.push(`  mTLS aliases:  ${hub.mtlsUrl} (asks clients for certificates; docs/mtls.md)`);
  if (hub.caPath)
    lines.push(`  dev CA:        ${hub.caPath} (trust it to avoid certificate warnings; see README)`);
  if (hub.demo) {
    lines.push(`  demo client:   ${hub.demo.clientFile}`);
    lines.push(`  demo institution client (ingestion): ${hub.demo.institutionClientFile}`);
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
  return lines;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    if (err instanceof ConfigError) console.error(`configuration error: ${err.message}`);
    else if (err instanceof PolicyError) console.error(`withdrawal-strength policy: ${err.message}`);
    else console.error(err);
    process.exit(1);
  },
);

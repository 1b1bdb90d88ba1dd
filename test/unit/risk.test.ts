/** The risk engine's pure parts: rules, IP data, signals, post-login change detection, replay. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  createGeoLookup,
  createRiskEngine,
  deriveLoginSignals,
  evaluate,
  GeoDataError,
  type LoginFacts,
  networkRange,
  parseRuleSet,
  RiskRulesError,
  replay,
  riskConfigSchema,
} from '../../src/risk/index.ts';
import { RequestTracker } from '../../src/risk/tracker.ts';

const FIXTURES = 'test/fixtures/risk';
const geoConfig = {
  countryFiles: [`${FIXTURES}/country.csv`],
  asnFiles: [`${FIXTURES}/asn.csv`],
  hostingAsns: [64502, 64510],
};
const engine = createRiskEngine(riskConfigSchema.parse({ geo: geoConfig }));

describe('rule engine', () => {
  const rules = parseRuleSet({
    version: 't1',
    thresholds: { stepUp: 40, block: 90 },
    rules: [
      { id: 'a', when: { x: true }, score: 30, explain: 'x' },
      { id: 'b', when: { n: { gte: 3 } }, score: 20, explain: 'n' },
      { id: 'c', when: { x: true, country: 'US' }, score: 0, decision: 'block', explain: 'forced' },
      { id: 'd', when: { country: { not: 'JP' }, n: { lte: 1 } }, score: 5, explain: 'not JP' },
    ],
  });

  it('adds the scores of matching rules and maps the total through the thresholds', () => {
    expect(evaluate(rules, { x: false, n: 0 })).toEqual({
      decision: 'allow',
      score: 0,
      reasons: [],
      ruleVersion: 't1',
    });
    const d = evaluate(rules, { x: true, n: 3, country: 'JP' });
    expect(d).toMatchObject({ decision: 'step_up', score: 50 });
    expect(d.reasons.map((r) => r.rule)).toEqual(['a', 'b']);
    expect(d.reasons[0]).toEqual({ rule: 'a', score: 30, explain: 'x' });
  });

  it('lets a matching rule force a stricter decision than the score, never a laxer one', () => {
    expect(evaluate(rules, { x: true, n: 0, country: 'US' })).toMatchObject({ decision: 'block', score: 35 });
    const heavy = parseRuleSet({
      version: 't2',
      thresholds: { stepUp: 10, block: 20 },
      rules: [
        { id: 'big', when: { x: true }, score: 50, explain: 'big' },
        { id: 'soft', when: { x: true }, decision: 'allow', explain: 'cannot loosen' },
      ],
    });
    expect(evaluate(heavy, { x: true }).decision).toBe('block');
  });

  it('never matches a signal that was not measured', () => {
    expect(evaluate(rules, { country: 'DE' }).reasons.map((r) => r.rule)).toEqual([]);
    expect(evaluate(rules, { country: 'DE', n: 1 }).reasons.map((r) => r.rule)).toEqual(['d']);
  });

  it('refuses a broken rule set naming the key', () => {
    const bad = (input: unknown) => () => parseRuleSet(input, 'rules.json');
    expect(bad({ version: 'v', thresholds: { stepUp: 50, block: 10 }, rules: [] })).toThrow(
      /rules\.json: thresholds\.block: block must not be below stepUp/,
    );
    expect(
      bad({
        version: 'v',
        thresholds: { stepUp: 1, block: 2 },
        rules: [
          { id: 'a', when: { x: true }, explain: 'e' },
          { id: 'a', when: { y: true }, explain: 'e' },
        ],
      }),
    ).toThrow(/rules\.1\.id: duplicate id/);
    expect(
      bad({
        version: 'v',
        thresholds: { stepUp: 1, block: 2 },
        rules: [{ id: 'a', when: {}, explain: 'e' }],
      }),
    ).toThrow(RiskRulesError);
    expect(
      bad({ version: 'v', thresholds: { stepUp: 1, block: 2 }, rules: [{ id: 'a', when: { x: true } }] }),
    ).toThrow(/rules\.0\.explain/);
  });

  it('ships a valid, explained, versioned rule set', () => {
    const shipped = parseRuleSet(JSON.parse(readFileSync('config/risk-rules.json', 'utf8')));
    expect(shipped.version).toMatch(/\S/);
    expect(shipped.rules.length).toBeGreaterThan(10);
    for (const r of shipped.rules) expect(r.explain.length).toBeGreaterThan(20);
    expect(engine.rules).toEqual(shipped);
  });
});

describe('offline IP data', () => {
  const geo = createGeoLookup(geoConfig);

  it('finds country and AS by range, CIDR and IPv6, and nothing outside the data', () => {
    expect(geo.locate('127.0.0.1')).toEqual({ country: 'JP', asn: 64500, org: 'Home Broadband KK' });
    expect(geo.locate('127.0.1.200')).toMatchObject({ country: 'US', asn: 64501 });
    expect(geo.locate('127.0.3.77')).toMatchObject({ country: 'DE', asn: 64503 });
    expect(geo.locate('::ffff:203.0.113.200')).toMatchObject({
      country: 'JP',
      asn: 64504,
      org: 'Mobile Carrier',
    });
    expect(geo.locate('2001:db8::1')).toMatchObject({ country: 'JP', asn: undefined });
    expect(geo.locate('2001:db8:1::1')).toEqual({ country: undefined, asn: undefined, org: undefined });
    expect(geo.locate('10.1.2.3')).toEqual({ country: undefined, asn: undefined, org: undefined });
    expect(geo.locate(undefined)).toEqual({});
    expect(geo.locate('not an ip')).toEqual({ country: undefined, asn: undefined, org: undefined });
  });

  it('refuses a broken data file with its line number', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kkh-geo-'));
    const file = path.join(dir, 'c.csv');
    writeFileSync(file, '1.0.0.0,1.0.0.255,JP\n1.0.1.0,nonsense,US\n');
    expect(() => createGeoLookup({ countryFiles: [file], asnFiles: [] })).toThrow(GeoDataError);
    expect(() => createGeoLookup({ countryFiles: [file], asnFiles: [] })).toThrow(/c\.csv:2/);
    expect(() => createGeoLookup({ countryFiles: [path.join(dir, 'missing.csv')], asnFiles: [] })).toThrow(
      /cannot read/,
    );
  });

  it('groups sources into network ranges (/24, /48)', () => {
    expect(networkRange('203.0.113.77')).toBe('203.0.113.0/24');
    expect(networkRange('::ffff:203.0.113.77')).toBe('203.0.113.0/24');
    expect(networkRange('2001:db8:aa:1::5')).toBe('2001:db8:aa::/48');
    expect(networkRange(undefined)).toBeUndefined();
  });
});

describe('login signals', () => {
  const none: LoginFacts = {
    failuresPerAccount: 0,
    failuresPerSource: 0,
    failuresPerRange: 0,
    failedAccountsPerSource: 0,
    failedAccountsPerRange: 0,
    signedInBefore: false,
    seenCountry: false,
    seenNetwork: false,
    seenCredential: false,
    lastSuccess: undefined,
    lastBackedUp: undefined,
    travelDeclared: false,
    recoveryLoginDue: false,
  };
  const attempt = {
    customerId: 'c',
    method: 'passkey',
    credentialId: 'k',
    knownDevice: false,
    backedUp: true,
  };
  const s = engine.settings;

  it('a first sign-in is new device and credential, but not a new country or network', () => {
    const sig = deriveLoginSignals(none, attempt, { country: 'JP', asn: 64500 }, s);
    expect(sig).toMatchObject({
      newDevice: true,
      newCredential: true,
      newCountry: false,
      newNetwork: false,
      abroad: false,
    });
    expect(evaluate(engine.rules, sig)).toMatchObject({ decision: 'allow', score: 15 });
  });

  it('flags impossible travel only within the configured time', () => {
    const at = new Date('2026-11-20T01:00:00Z');
    const facts = {
      ...none,
      signedInBefore: true,
      seenCredential: true,
      lastSuccess: { country: 'JP', at: new Date('2026-11-20T00:00:00Z') },
    };
    expect(deriveLoginSignals(facts, { ...attempt, at }, { country: 'US' }, s).impossibleTravel).toBe(true);
    const later = new Date('2026-11-20T05:00:00Z');
    expect(deriveLoginSignals(facts, { ...attempt, at: later }, { country: 'US' }, s).impossibleTravel).toBe(
      false,
    );
    expect(deriveLoginSignals(facts, { ...attempt, at }, { country: 'JP' }, s).impossibleTravel).toBe(false);
  });

  it('abroad without declared travel steps up; with it, it does not', () => {
    const facts = { ...none, signedInBefore: true, seenCredential: true, seenNetwork: false };
    const undeclared = evaluate(
      engine.rules,
      deriveLoginSignals(facts, { ...attempt, knownDevice: true }, { country: 'US', asn: 64501 }, s),
    );
    expect(undeclared.decision).toBe('step_up');
    expect(undeclared.reasons.map((r) => r.rule)).toEqual([
      'abroad-undeclared',
      'new-country',
      'new-network',
    ]);
    const declared = evaluate(
      engine.rules,
      deriveLoginSignals(
        { ...facts, travelDeclared: true },
        { ...attempt, knownDevice: true },
        { country: 'US', asn: 64501 },
        s,
      ),
    );
    expect(declared).toMatchObject({ decision: 'allow', score: 10 });
  });

  it('sees hosting sources, backup-state changes, recovery and velocity', () => {
    const sig = deriveLoginSignals(
      {
        ...none,
        lastBackedUp: false,
        recoveryLoginDue: true,
        failuresPerAccount: 3,
        failedAccountsPerSource: 5,
      },
      attempt,
      { country: 'JP', asn: 64502 },
      s,
    );
    expect(sig).toMatchObject({
      hostingSource: true,
      backupStateChanged: true,
      firstLoginAfterRecovery: true,
    });
    const d = evaluate(engine.rules, sig);
    expect(d.decision).toBe('block');
    expect(d.reasons.map((r) => r.rule)).toEqual(
      expect.arrayContaining([
        'credential-stuffing',
        'account-failure-velocity',
        'hosting-source',
        'backup-state-changed',
        'first-login-after-recovery',
      ]),
    );
  });
});

describe('post-login change detection', () => {
  it('costs nothing while a token stays on its network and software, and reports each change once', () => {
    const tracker = new RequestTracker(engine.geo, 1000);
    const note = (ip: string, userAgent = 'PFM/1') =>
      tracker.note(engine.rules, { trackingId: 't', ip, userAgent });
    expect(note('127.0.0.5')).toBeUndefined();
    expect(note('127.0.0.9')).toBeUndefined();
    // Another /24 of the same AS is the same network (a carrier's address pool).
    expect(note('203.0.113.5')).toBeUndefined();
    const moved = note('127.0.3.9');
    expect(moved?.decision.reasons.map((r) => r.rule)).toEqual(['session-network-changed']);
    expect(note('127.0.3.10')).toBeUndefined();
    expect(note('127.0.3.10', 'curl/8')?.decision.reasons.map((r) => r.rule)).toEqual([
      'session-user-agent-changed',
    ]);
    expect(note('127.0.3.10', 'curl/8')).toBeUndefined();
  });

  it('reports a burst of calls once a minute and forgets the oldest token past its bound', () => {
    const tracker = new RequestTracker(engine.geo, 2);
    const at = new Date('2026-11-20T00:00:10Z');
    const results = Array.from({ length: 130 }, () =>
      tracker.note(engine.rules, { trackingId: 'b', ip: '127.0.0.5', at }),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(results[119]?.decision.reasons.map((r) => r.rule)).toEqual(['api-burst']);
    tracker.note(engine.rules, { trackingId: 'x', ip: '127.0.0.5' });
    tracker.note(engine.rules, { trackingId: 'y', ip: '127.0.0.5' });
    expect(tracker.size).toBe(2);
  });
});

describe('replay of recorded streams', () => {
  const run = (file: string) =>
    [
      ...replay(readFileSync(`${FIXTURES}/${file}`, 'utf8'), {
        rules: engine.rules,
        geo: engine.geo,
        settings: engine.settings,
        windowSeconds: 900,
      }),
    ].map((d) => [d.line, d.result, d.decision, d.score, d.reasons]);

  it('blocks the account tried last from a credential-stuffing source, and only there', () => {
    expect(run('credential-stuffing.jsonl')).toEqual([
      [1, 'decided', 'allow', 15, ['new-device', 'new-credential']],
      [2, 'failure', undefined, undefined, undefined],
      [3, 'failure', undefined, undefined, undefined],
      [4, 'failure', undefined, undefined, undefined],
      [5, 'failure', undefined, undefined, undefined],
      [6, 'failure', undefined, undefined, undefined],
      [7, 'decided', 'block', 110, ['credential-stuffing', 'new-device']],
      [8, 'decided', 'allow', 0, []],
      // Many customers signing in successfully behind one address (NAT) is not stuffing.
      [9, 'decided', 'allow', 15, ['new-device', 'new-credential']],
      [10, 'decided', 'allow', 15, ['new-device', 'new-credential']],
      [11, 'decided', 'allow', 15, ['new-device', 'new-credential']],
      [12, 'decided', 'allow', 15, ['new-device', 'new-credential']],
      [13, 'decided', 'allow', 15, ['new-device', 'new-credential']],
      [14, 'decided', 'allow', 15, ['new-device', 'new-credential']],
    ]);
  });

  it('blocks a takeover from abroad, steps up undeclared travel, allows declared travel', () => {
    const out = run('takeover-abroad.jsonl');
    expect(out[1]).toEqual([
      2,
      'decided',
      'block',
      140,
      ['impossible-travel', 'abroad-undeclared', 'new-country', 'new-network', 'new-device'],
    ]);
    expect(out[2]).toEqual([
      3,
      'decided',
      'step_up',
      80,
      ['abroad-undeclared', 'new-country', 'new-network', 'new-device'],
    ]);
    expect(out[3]).toEqual([5, 'decided', 'allow', 20, ['new-network', 'new-device']]);
    expect(out[4]).toEqual([
      6,
      'decided',
      'block',
      90,
      ['hosting-source', 'new-network', 'new-device', 'backup-state-changed'],
    ]);
  });

  it('raises a stolen session’s risk when it moves to a new network and software', () => {
    expect(run('stolen-session.jsonl')).toEqual([
      [1, 'observed', 'allow', 0, []],
      [2, 'observed', 'allow', 0, []],
      [3, 'observed', 'allow', 30, ['session-network-changed']],
      [4, 'observed', 'allow', 60, ['session-user-agent-changed']],
      [5, 'observed', 'allow', 60, []],
    ]);
  });

  it('names the line of a malformed event', () => {
    const go = (text: string) => () => [
      ...replay(text, {
        rules: engine.rules,
        geo: engine.geo,
        settings: engine.settings,
        windowSeconds: 900,
      }),
    ];
    expect(go('{"at":"2026-11-20T00:00:00Z","result":"success"}\nnot json')).toThrow(/line 2: not JSON/);
    expect(go('\n{"at":"yesterday","customerId":"c","result":"success"}')).toThrow(/line 2: at/);
  });
});

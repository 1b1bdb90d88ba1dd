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
    // Without city data the place is the country's centroid, as uncertain as the country is large.
    expect(geo.locate('127.0.0.1')).toEqual({
      country: 'JP',
      asn: 64500,
      org: 'Home Broadband KK',
      place: { lat: 36, lon: 138, accuracyKm: 1500 },
    });
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

  it('flags impossible travel by distance and time, with the places and speed in the reason', () => {
    const tokyo = { lat: 35.68, lon: 139.69, accuracyKm: 50 };
    const facts = (place: typeof tokyo | undefined, at = '2026-11-20T00:00:00Z') => ({
      ...none,
      signedInBefore: true,
      seenCredential: true,
      lastSuccess: { country: 'JP', at: new Date(at), place },
    });
    const when = (iso: string) => ({ ...attempt, at: new Date(iso) });
    const us = { country: 'US', place: engine.geo.centroid('US') };
    // Tokyo → the US centroid (about 10,100 km, less 50 + 2,400 + 200 km): one hour is far too fast.
    const fast = deriveLoginSignals(facts(tokyo), when('2026-11-20T01:00:00Z'), us, s);
    expect(fast).toMatchObject({ impossibleTravel: true, travelHours: 1 });
    expect(fast.travelKm).toBeGreaterThan(9_500);
    expect(fast.travelSpeedKmh).toBeGreaterThan(7_000);
    const d = evaluate(engine.rules, fast);
    // 60 (impossible travel) + 40 (abroad, undeclared) + 20 (new country) + 10 (new device).
    expect(d).toMatchObject({ decision: 'block', score: 130 });
    const reason = d.reasons.find((r) => r.rule === 'impossible-travel')!;
    expect(reason.explain).toContain(`${fast.travelKm} km away 1 h earlier`);
    expect(reason.explain).toContain(`${fast.travelSpeedKmh} km/h`);
    // Twelve hours later the same trip is a flight.
    expect(deriveLoginSignals(facts(tokyo), when('2026-11-20T12:00:00Z'), us, s).impossibleTravel).toBe(
      false,
    );
    // Beyond the window (a day) nothing is compared: the signal is absent, so no rule matches.
    expect(
      deriveLoginSignals(facts(tokyo), when('2026-11-21T01:00:00Z'), us, s).impossibleTravel,
    ).toBeUndefined();
    // Neighbouring places: Tokyo → Yokohama (30 km) at once is within the uncertainty and tolerance…
    const yokohama = { country: 'JP', place: { lat: 35.44, lon: 139.64, accuracyKm: 50 } };
    const near = deriveLoginSignals(facts(tokyo), when('2026-11-20T00:00:00Z'), yokohama, s);
    expect(near).toMatchObject({ impossibleTravel: false, travelSpeedKmh: 0, travelKm: 27 });
    // …and Tokyo → Osaka (400 km, 100 km beyond them) in ten minutes needs about 580 km/h: possible.
    const osaka = { country: 'JP', place: { lat: 34.69, lon: 135.5, accuracyKm: 50 } };
    const quick = deriveLoginSignals(facts(tokyo), when('2026-11-20T00:10:00Z'), osaka, s);
    expect(quick.impossibleTravel).toBe(false);
    expect(quick.travelSpeedKmh).toBeGreaterThan(500);
    expect(quick.travelSpeedKmh).toBeLessThan(900);
    // Tokyo → Seoul (1,150 km) by city: 30 minutes is impossible, 3 hours is a flight.
    const seoul = { country: 'KR', place: { lat: 37.57, lon: 126.98, accuracyKm: 50 } };
    expect(deriveLoginSignals(facts(tokyo), when('2026-11-20T00:30:00Z'), seoul, s).impossibleTravel).toBe(
      true,
    );
    expect(deriveLoginSignals(facts(tokyo), when('2026-11-20T03:00:00Z'), seoul, s).impossibleTravel).toBe(
      false,
    );
    // By country centroids only (Japan ±1,500 km, Korea ±400 km) the two are neighbours: never impossible.
    const korea = { country: 'KR', place: engine.geo.centroid('KR') };
    expect(
      deriveLoginSignals(facts(engine.geo.centroid('JP')), when('2026-11-20T00:05:00Z'), korea, s)
        .impossibleTravel,
    ).toBe(false);
    // An unknown place on either side measures nothing.
    expect(
      deriveLoginSignals(facts(undefined), when('2026-11-20T00:05:00Z'), us, s).impossibleTravel,
    ).toBeUndefined();
    expect(
      deriveLoginSignals(facts(tokyo), when('2026-11-20T00:05:00Z'), { country: 'XX' }, s).impossibleTravel,
    ).toBeUndefined();
  });

  it('places sign-ins by city data when the operator has it, and refuses a broken centroids file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kkh-city-'));
    const city = path.join(dir, 'city.csv');
    // The @ip-location-db city layout; a quoted city name with a comma; no timezone on the last line.
    writeFileSync(
      city,
      [
        '198.51.100.0,198.51.100.127,US,California,,"Los Angeles, CA",90001,34.05,-118.24,America/Los_Angeles',
        '198.51.100.128,198.51.100.255,US,New York,,New York,10001,40.71,-74.01',
      ].join('\n'),
    );
    const geo = createGeoLookup({
      countryFiles: [`${FIXTURES}/country.csv`],
      asnFiles: [],
      cityFiles: [city],
    });
    expect(geo.locate('198.51.100.10')).toMatchObject({
      country: 'US',
      place: { lat: 34.05, lon: -118.24, accuracyKm: 50 },
    });
    expect(geo.locate('198.51.100.200').place).toEqual({ lat: 40.71, lon: -74.01, accuracyKm: 50 });
    // Outside the city data: the country centroid.
    expect(geo.locate('127.0.1.5').place).toEqual({ lat: 38, lon: -97, accuracyKm: 2400 });
    const broken = path.join(dir, 'centroids.csv');
    writeFileSync(broken, 'country,latitude,longitude\nJP,36,138\nUS,north,-97\n');
    expect(() => createGeoLookup({ countryFiles: [], asnFiles: [], centroidsFile: broken })).toThrow(
      /centroids\.csv:3/,
    );
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

  it('judges travel by distance: near places at once pass, a fast flight abroad does not', () => {
    const cities = createRiskEngine(
      riskConfigSchema.parse({ geo: { ...geoConfig, cityFiles: [`${FIXTURES}/city.csv`] } }),
    );
    const out = [
      ...replay(readFileSync(`${FIXTURES}/impossible-travel.jsonl`, 'utf8'), {
        rules: cities.rules,
        geo: cities.geo,
        settings: cities.settings,
        windowSeconds: 900,
      }),
    ].map((d) => [d.line, d.country, d.decision, d.score, d.reasons]);
    expect(out).toEqual([
      [1, 'JP', 'allow', 15, ['new-device', 'new-credential']],
      // Tokyo → Osaka in ten minutes: within reach.
      [2, 'JP', 'allow', 0, []],
      // Osaka → Seoul (830 km) in thirty minutes: over 1,000 km/h.
      [3, 'KR', 'block', 120, ['impossible-travel', 'abroad-undeclared', 'new-country']],
      // Three and a half hours after Osaka (the step-up was no successful sign-in): a flight.
      [4, 'KR', 'step_up', 60, ['abroad-undeclared', 'new-country']],
      // More than a day after the last successful sign-in: nothing to compare.
      [5, 'US', 'step_up', 70, ['abroad-undeclared', 'new-country', 'new-network']],
      [6, 'JP', 'allow', 0, []],
      // A recorded country the data does not agree with is placed at its centroid: Tokyo → Germany.
      [7, 'DE', 'block', 120, ['impossible-travel', 'abroad-undeclared', 'new-country']],
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

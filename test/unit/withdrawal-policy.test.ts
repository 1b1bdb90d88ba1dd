import { describe, expect, it } from 'vitest';
import {
  ACR_FACT_VALUES,
  describePolicy,
  evaluatePolicy,
  type FactsOf,
  loadPolicy,
  OPERATIONS,
  type Operation,
  type Policy,
  PolicyError,
  parsePolicy,
  RISK_LEVELS,
} from '../../src/linking/index.ts';

const policy = loadPolicy();

const goodWithdrawal: FactsOf<'withdrawal'> = {
  acr: 'phr',
  authAgeSeconds: 30,
  detailsBound: true,
  destinationNameMatches: true,
  destinationRegistered: true,
  destinationInCoolOff: false,
  amount: 50_000,
  overDailyCap: false,
  dailyTotal: 50_000,
  newDevice: false,
  riskLevel: 'low',
  frozen: false,
  channelDisabled: false,
  exempted: false,
};

/** The same withdrawal approved with a TOTP code by a customer exempted from passkeys. */
const exemptWithdrawal: FactsOf<'withdrawal'> = { ...goodWithdrawal, acr: 'otp', exempted: true };

const t = { en: 'x', ja: 'x' };
/** A minimal valid document with one operation's entry replaced. */
function doc(op: Operation, entry: unknown): Record<string, unknown> {
  const operations: Record<string, unknown> = {};
  for (const name of Object.keys(OPERATIONS))
    operations[name] = { default: 'deny', defaultReason: t, rules: [] };
  operations[op] = entry;
  return { version: 'test', operations };
}

describe('the shipped withdrawal-strength policy', () => {
  it('allows a withdrawal a passkey approved within 5 minutes, bound to its details, to a same-name account', () => {
    const d = evaluatePolicy(policy, 'withdrawal', goodWithdrawal);
    expect(d.decision).toBe('allow');
    expect(d.decidedBy).toEqual(['withdrawal.allow']);
    expect(d.policyVersion).toBe(policy.version);
  });

  it.each([
    [{ acr: 'otp' }, 'step_up', 'withdrawal.not-phishing-resistant'],
    [{ authAgeSeconds: 301 }, 'step_up', 'withdrawal.stale-approval'],
    [{ newDevice: true, authAgeSeconds: 120 }, 'step_up', 'withdrawal.new-device'],
    [{ riskLevel: 'medium', authAgeSeconds: 120 }, 'step_up', 'withdrawal.elevated-risk'],
    [{ detailsBound: false }, 'deny', 'withdrawal.unbound'],
    [{ destinationNameMatches: false }, 'deny', 'withdrawal.name-mismatch'],
    [{ destinationRegistered: false }, 'deny', 'withdrawal.unregistered-destination'],
    [{ destinationInCoolOff: true }, 'deny', 'withdrawal.destination-cool-off'],
    [{ overDailyCap: true }, 'deny', 'withdrawal.over-cap'],
    [{ riskLevel: 'high' }, 'deny', 'withdrawal.high-risk'],
    [{ frozen: true }, 'deny', 'withdrawal.frozen'],
    [{ channelDisabled: true }, 'deny', 'withdrawal.channel-disabled'],
    [{ acr: 'otp', exempted: true, dailyTotal: 100_001 }, 'deny', 'withdrawal.exempted-over-cap'],
    [{ acr: 'otp', exempted: true, authAgeSeconds: 121 }, 'step_up', 'withdrawal.exempted-totp-stale'],
    [{ acr: 'otp', exempted: true, newDevice: true }, 'deny', 'withdrawal.exempted-new-device'],
    [{ acr: 'otp', exempted: true, riskLevel: 'medium' }, 'deny', 'withdrawal.exempted-elevated-risk'],
    // An exemption ended after the code was entered: back to passkeys.
    [{ acr: 'otp', exempted: false }, 'step_up', 'withdrawal.not-phishing-resistant'],
  ] as const)('withdrawal with %o → %s by %s', (change, decision, rule) => {
    const d = evaluatePolicy(policy, 'withdrawal', { ...goodWithdrawal, ...change } as FactsOf<'withdrawal'>);
    expect(d.decision).toBe(decision);
    expect(d.decidedBy).toContain(rule);
    expect(d.reasons.length).toBe(d.decidedBy.length);
    for (const r of d.reasons) expect(r.ja.length).toBeGreaterThan(0);
  });

  it('an exempted customer’s TOTP approval: allowed within 100,000 yen a day, with the cap and a notice', () => {
    const d = evaluatePolicy(policy, 'withdrawal', { ...exemptWithdrawal, dailyTotal: 100_000 });
    expect(d.decision).toBe('allow');
    expect(d.decidedBy).toEqual(['withdrawal.exempted-totp']);
    expect(d.obligations.capAmount).toBe(100_000);
    expect(d.obligations.notice?.ja).toMatch(/10万円/);
    expect(d.obligations.notice?.en).not.toMatch(/https?:|www\./);
    // The customer's own limit still holds below the exempted cap.
    expect(
      evaluatePolicy(policy, 'withdrawal', { ...exemptWithdrawal, overDailyCap: true }).decidedBy,
    ).toEqual(['withdrawal.over-cap']);
    const stale = evaluatePolicy(policy, 'withdrawal', { ...exemptWithdrawal, authAgeSeconds: 200 });
    expect(stale.obligations.stepUp).toEqual({ acrValues: ['otp'], maxAgeSeconds: 120, byBank: false });
  });

  it('a new device or elevated risk passes with an approval made within the last minute', () => {
    expect(
      evaluatePolicy(policy, 'withdrawal', { ...goodWithdrawal, newDevice: true, authAgeSeconds: 45 })
        .decision,
    ).toBe('allow');
    const stepUp = evaluatePolicy(policy, 'withdrawal', {
      ...goodWithdrawal,
      newDevice: true,
      authAgeSeconds: 90,
    });
    expect(stepUp.obligations.stepUp).toEqual({
      acrValues: ['phr', 'phrh'],
      maxAgeSeconds: 60,
      byBank: false,
    });
  });

  it('a deny beats every allow and step-up, and names every matched rule', () => {
    const d = evaluatePolicy(policy, 'withdrawal', {
      ...goodWithdrawal,
      acr: 'otp',
      destinationNameMatches: false,
      frozen: true,
    });
    expect(d.decision).toBe('deny');
    expect(d.decidedBy.sort()).toEqual(['withdrawal.frozen', 'withdrawal.name-mismatch']);
    expect(d.matched.map((m) => m.id)).toContain('withdrawal.not-phishing-resistant');
  });

  it('changing the withdrawal account: allowed with a cool-off and notices; name mismatch and lock deny', () => {
    const good: FactsOf<'change_withdrawal_account'> = {
      acr: 'phrh',
      authAgeSeconds: 10,
      detailsBound: true,
      nameMatches: true,
      accountLocked: false,
      frozen: false,
    };
    const ok = evaluatePolicy(policy, 'change_withdrawal_account', good);
    expect(ok.decision).toBe('allow');
    expect(ok.obligations.coolOffSeconds).toBeGreaterThan(0);
    expect(ok.obligations.notify).toEqual(expect.arrayContaining(['customer', 'brokerage']));
    expect(
      evaluatePolicy(policy, 'change_withdrawal_account', { ...good, nameMatches: false }).decision,
    ).toBe('deny');
    expect(
      evaluatePolicy(policy, 'change_withdrawal_account', { ...good, accountLocked: true }).decision,
    ).toBe('deny');
    expect(
      evaluatePolicy(policy, 'change_withdrawal_account', { ...good, authAgeSeconds: 900 }).decision,
    ).toBe('step_up');
    // A one-time code never registers a new withdrawal account, exempted or not.
    const otp = evaluatePolicy(policy, 'change_withdrawal_account', { ...good, acr: 'otp' });
    expect(otp).toMatchObject({ decision: 'deny', decidedBy: ['account-change.one-time-code'] });
  });

  it('trades: an allowed product is allowed; blocked, cooling-off, high risk and frozen are denied', () => {
    const base: FactsOf<'trade'> = {
      product: 'foreign_equity',
      productAllowed: true,
      productPending: false,
      riskLevel: 'low',
      frozen: false,
    };
    expect(evaluatePolicy(policy, 'trade', base).decidedBy).toEqual(['trade.allow']);
    expect(evaluatePolicy(policy, 'trade', { ...base, riskLevel: 'medium' }).decision).toBe('allow');
    const blocked = evaluatePolicy(policy, 'trade', { ...base, productAllowed: false });
    expect(blocked).toMatchObject({ decision: 'deny', decidedBy: ['trade.product-blocked'] });
    expect(blocked.obligations.notify).toEqual(['customer']);
    expect(
      evaluatePolicy(policy, 'trade', { ...base, productAllowed: false, productPending: true }).decidedBy,
    ).toEqual(['trade.product-cool-off']);
    expect(evaluatePolicy(policy, 'trade', { ...base, riskLevel: 'high' }).decidedBy).toEqual([
      'trade.high-risk',
    ]);
    expect(evaluatePolicy(policy, 'trade', { ...base, frozen: true }).decidedBy).toEqual(['trade.frozen']);
  });

  it('sweep links: phishing-resistant bank allowed, OTP bank allowed with a reduced cap and a notice, password denied', () => {
    const base: FactsOf<'create_sweep_link'> = {
      brokerageAcr: 'phr',
      bankStrength: 'phishing_resistant',
      nameMatches: true,
      frozen: false,
    };
    const pr = evaluatePolicy(policy, 'create_sweep_link', base);
    expect(pr.decision).toBe('allow');
    expect(pr.obligations.capAmount).toBeUndefined();
    const otp = evaluatePolicy(policy, 'create_sweep_link', { ...base, bankStrength: 'otp' });
    expect(otp.decision).toBe('allow');
    expect(otp.decidedBy).toEqual(['link.bank-otp']);
    expect(otp.obligations.capAmount).toBe(100_000);
    expect(otp.obligations.notice?.ja).toBeTruthy();
    expect(otp.obligations.notice?.en).not.toMatch(/https?:|www\./);
    expect(evaluatePolicy(policy, 'create_sweep_link', { ...base, bankStrength: 'password' }).decision).toBe(
      'deny',
    );
    expect(evaluatePolicy(policy, 'create_sweep_link', { ...base, bankStrength: 'unknown' }).decision).toBe(
      'deny',
    );
    expect(evaluatePolicy(policy, 'create_sweep_link', { ...base, nameMatches: false }).decision).toBe(
      'deny',
    );
    expect(evaluatePolicy(policy, 'create_sweep_link', { ...base, brokerageAcr: 'otp' }).decision).toBe(
      'step_up',
    );
  });

  it('sweep pulls: within cap allowed, above cap needs the bank, recent credential change and suspension deny', () => {
    const base: FactsOf<'sweep_pull'> = {
      amount: 10_000,
      overDailyCap: false,
      overCustomerLimit: false,
      bankApprovalBound: false,
      daysSinceCredentialChange: 365,
      linkSuspended: false,
      frozen: false,
      channelDisabled: false,
    };
    expect(evaluatePolicy(policy, 'sweep_pull', base).decision).toBe('allow');
    expect(evaluatePolicy(policy, 'sweep_pull', { ...base, channelDisabled: true }).decision).toBe('deny');
    const over = evaluatePolicy(policy, 'sweep_pull', { ...base, overDailyCap: true });
    expect(over.decision).toBe('step_up');
    expect(over.obligations.stepUp?.byBank).toBe(true);
    expect(
      evaluatePolicy(policy, 'sweep_pull', { ...base, overDailyCap: true, bankApprovalBound: true }).decision,
    ).toBe('allow');
    expect(evaluatePolicy(policy, 'sweep_pull', { ...base, daysSinceCredentialChange: 2 }).decision).toBe(
      'deny',
    );
    expect(evaluatePolicy(policy, 'sweep_pull', { ...base, linkSuspended: true }).decision).toBe('deny');
  });

  it('sweep pulls over the customer’s own daily sweep limit are refused, whatever the bank approved', () => {
    const base: FactsOf<'sweep_pull'> = {
      amount: 10_000,
      overDailyCap: false,
      overCustomerLimit: true,
      bankApprovalBound: false,
      daysSinceCredentialChange: 365,
      linkSuspended: false,
      frozen: false,
      channelDisabled: false,
    };
    for (const change of [{}, { bankApprovalBound: true }, { overDailyCap: true, bankApprovalBound: true }]) {
      const d = evaluatePolicy(policy, 'sweep_pull', { ...base, ...change });
      expect(d.decision).toBe('deny');
      expect(d.decidedBy).toContain('sweep.over-customer-limit');
    }
  });

  it('limits: raising needs a fresh passkey and gets a cool-off; lowering is immediate', () => {
    const up = evaluatePolicy(policy, 'raise_limit', { acr: 'phr', authAgeSeconds: 100, frozen: false });
    expect(up.decision).toBe('allow');
    expect(up.obligations.coolOffSeconds).toBe(86_400);
    expect(
      evaluatePolicy(policy, 'raise_limit', { acr: 'phr', authAgeSeconds: 1000, frozen: false }).decision,
    ).toBe('step_up');
    expect(
      evaluatePolicy(policy, 'raise_limit', { acr: 'none', authAgeSeconds: 0, frozen: false }).decision,
    ).toBe('step_up');
    const down = evaluatePolicy(policy, 'lower_limit', {});
    expect(down.decision).toBe('allow');
    expect(down.obligations.coolOffSeconds).toBeUndefined();
  });

  it('no withdrawal is ever allowed without a bound, fresh, phishing-resistant approval — or, for an exempted customer, a TOTP one within the lower cap (every combination)', () => {
    let checked = 0;
    /** Every combination decided against the property (expected: none). */
    const wrong: string[] = [];
    const flags = [true, false];
    for (const acr of ACR_FACT_VALUES)
      for (const authAgeSeconds of [0, 60, 61, 120, 121, 300, 301, 86_400])
        for (const dailyTotal of [1, 100_000, 100_001])
          for (const exempted of flags)
            for (const detailsBound of flags)
              for (const destinationNameMatches of flags)
                for (const destinationRegistered of flags)
                  for (const destinationInCoolOff of flags)
                    for (const overDailyCap of flags)
                      for (const newDevice of flags)
                        for (const riskLevel of RISK_LEVELS)
                          for (const frozen of flags)
                            for (const channelDisabled of flags) {
                              const facts = {
                                acr,
                                authAgeSeconds,
                                detailsBound,
                                destinationNameMatches,
                                destinationRegistered,
                                destinationInCoolOff,
                                amount: 1,
                                overDailyCap,
                                dailyTotal,
                                newDevice,
                                riskLevel,
                                frozen,
                                channelDisabled,
                                exempted,
                              };
                              const d = evaluatePolicy(policy, 'withdrawal', facts);
                              const always =
                                detailsBound &&
                                destinationNameMatches &&
                                destinationRegistered &&
                                !destinationInCoolOff &&
                                !overDailyCap &&
                                riskLevel !== 'high' &&
                                !frozen &&
                                !channelDisabled;
                              const passkey =
                                (acr === 'phr' || acr === 'phrh') &&
                                authAgeSeconds <= 300 &&
                                (authAgeSeconds <= 60 || (!newDevice && riskLevel === 'low'));
                              const exemptedTotp =
                                acr === 'otp' &&
                                exempted &&
                                authAgeSeconds <= 120 &&
                                dailyTotal <= 100_000 &&
                                !newDevice &&
                                riskLevel === 'low';
                              const safe = always && (passkey || exemptedTotp);
                              if ((d.decision === 'allow') !== safe) wrong.push(JSON.stringify(facts));
                              checked++;
                            }
    expect(wrong).toEqual([]);
    expect(checked).toBe(4 * 8 * 3 * 2 ** 9 * 3);
  });

  it('describes itself for operators with every operation, rule and fact', () => {
    const text = describePolicy(policy);
    for (const op of Object.keys(OPERATIONS)) expect(text).toContain(op);
    expect(text).toContain('withdrawal.name-mismatch: when destinationNameMatches = false');
    expect(text).toContain('authAgeSeconds ≤ 300');
    expect(describePolicy(policy, 'ja')).toContain('出金先口座の名義');
  });
});

describe('policy validation', () => {
  const bad = (input: unknown) => {
    try {
      parsePolicy(input);
    } catch (err) {
      expect(err).toBeInstanceOf(PolicyError);
      return (err as PolicyError).message;
    }
    throw new Error('accepted');
  };

  it.each([
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [{ id: 'a', when: { acrr: 'phr' }, decision: 'allow', reason: t }],
      }),
      /withdrawal\.rules\[0\]\.when\.acrr: withdrawal has no such fact/,
    ],
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [{ id: 'a', when: { acr: 'phx' }, decision: 'allow', reason: t }],
      }),
      /when\.acr: "phx" is not one of/,
    ],
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [{ id: 'a', when: { frozen: 'yes' }, decision: 'deny', reason: t }],
      }),
      /when\.frozen: expected true or false/,
    ],
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [{ id: 'a', when: { amount: {} }, decision: 'deny', reason: t }],
      }),
      /when\.amount: expected a number/,
    ],
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [{ id: 'a', when: { acr: { in: ['phr'], notIn: ['otp'] } }, decision: 'deny', reason: t }],
      }),
      /exactly one of in, notIn/,
    ],
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [
          { id: 'a', decision: 'deny', reason: t },
          { id: 'a', decision: 'deny', reason: t },
        ],
      }),
      /"a" is used twice/,
    ],
    [doc('withdrawal', { default: 'maybe', defaultReason: t, rules: [] }), /operations\.withdrawal\.default/],
    [
      doc('withdrawal', {
        default: 'deny',
        defaultReason: t,
        rules: [{ id: 'a', decision: 'deny', reason: { en: 'x' } }],
      }),
      /reason\.ja/,
    ],
    [
      {
        ...doc('withdrawal', { default: 'deny', defaultReason: t, rules: [] }),
        operations: { withdrawal: { default: 'deny', defaultReason: t, rules: [] } },
      },
      /operations\.aggregator_read: missing/,
    ],
    [
      {
        version: 'x',
        operations: {
          ...(doc('withdrawal', { default: 'deny', defaultReason: t, rules: [] }).operations as object),
          teleport: {},
        },
      },
      /operations\.teleport: unknown operation/,
    ],
  ])('refuses an invalid document (%#)', (input, message) => {
    expect(bad(input)).toMatch(message);
  });

  it('a file with a problem names the file', () => {
    expect(() => loadPolicy('/nonexistent/policy.json')).toThrow(/\/nonexistent\/policy\.json: cannot read/);
  });

  it('missing or ill-typed facts are a programming error, never a silent decision', () => {
    const p: Policy = policy;
    expect(() => evaluatePolicy(p, 'withdrawal', { ...goodWithdrawal, amount: Number.NaN })).toThrow(
      /fact amount/,
    );
    const partial = { ...goodWithdrawal } as Partial<FactsOf<'withdrawal'>>;
    delete partial.frozen;
    expect(() => evaluatePolicy(p, 'withdrawal', partial as FactsOf<'withdrawal'>)).toThrow(/fact frozen/);
  });

  it('no match falls back to the default; obligations of several deciding rules merge strictly', () => {
    const p = parsePolicy(
      doc('sweep_pull', {
        default: 'step_up',
        defaultReason: t,
        rules: [
          {
            id: 'a',
            when: { amount: { gt: 10 } },
            decision: 'allow',
            reason: t,
            obligations: { capAmount: 500, coolOffSeconds: 10, notify: ['customer'] },
          },
          {
            id: 'b',
            when: { amount: { gt: 20 } },
            decision: 'allow',
            reason: t,
            obligations: { capAmount: 300, coolOffSeconds: 60, notify: ['bank'] },
          },
        ],
      }),
    );
    const facts = {
      amount: 5,
      overDailyCap: false,
      overCustomerLimit: false,
      bankApprovalBound: false,
      daysSinceCredentialChange: 9,
      linkSuspended: false,
      frozen: false,
      channelDisabled: false,
    };
    expect(evaluatePolicy(p, 'sweep_pull', facts)).toMatchObject({
      decision: 'step_up',
      decidedBy: ['sweep_pull.default'],
    });
    const both = evaluatePolicy(p, 'sweep_pull', { ...facts, amount: 25 });
    expect(both.decidedBy).toEqual(['a', 'b']);
    expect(both.obligations).toEqual({ capAmount: 300, coolOffSeconds: 60, notify: ['customer', 'bank'] });
  });
});

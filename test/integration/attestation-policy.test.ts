/**
 * Attestation policy: only a device-bound passkey whose `packed` attestation chains to a root in
 * the operator's FIDO metadata earns acr `phrh`; synced passkeys and unknown attestation roots stay
 * `phr` (and still register). ID tokens carry the acr; acr_values=phrh is enforced.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import {
  createTestCa,
  issueCertificate,
  type TestCert,
  withPackedAttestation,
} from '../support/certificates.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

const AAGUID = '6c1a3a52-0b5e-4e5f-9f3c-8a2d4b1e7c90';
let t: TestHub;
let root: TestCert;
let attestationCert: TestCert;

beforeAll(async () => {
  root = await createTestCa('CN=Test Attestation Root, O=Test Vendor, C=JP');
  attestationCert = await issueCertificate(root, {
    subject: 'CN=Test Key Attestation, OU=Authenticator Attestation, O=Test Vendor, C=JP',
  });
  const dir = path.join(process.env.TMPDIR ?? '/tmp');
  const metadataFile = path.join(dir, `kkh-metadata-${process.pid}-${Date.now()}.json`);
  writeFileSync(
    metadataFile,
    JSON.stringify([
      {
        aaguid: AAGUID,
        description: 'Test hardware key',
        attestationTypes: ['basic_full'],
        attestationRootCertificates: [root.certDer.toString('base64')],
      },
    ]),
  );
  t = await startTestHub({ authn: { attestation: { policy: 'direct', metadataFile } } });
});
afterAll(() => t?.close());

async function signIn(device: PasskeyEmulator, acrValues?: string) {
  const rp = await demoRp(t);
  const auth = await startAuthorization(rp, 'openid accounts', acrValues ? { acr_values: acrValues } : {});
  const callback = await completeLogin({
    fetch: t.fetch,
    authorizationUrl: auth.url,
    device,
    userAgent: createUserAgent({ fetch: t.fetch }),
  });
  if (callback.searchParams.get('error')) return { error: callback.searchParams.get('error') };
  const tokens = await redeem(rp, auth, callback);
  return { claims: tokens.claims()! };
}

async function attestedFlag(credentialId: string): Promise<boolean> {
  const res = await t.hub.db.query<{ attestation_verified: boolean }>(
    'SELECT attestation_verified FROM passkeys WHERE credential_id = $1',
    [credentialId],
  );
  return res.rows[0]!.attestation_verified;
}

describe('attestation policy direct', () => {
  it('gives phrh to an attested device-bound key, in the ID token, and satisfies acr_values=phrh', async () => {
    const base = createEmulator({ deviceBound: true });
    let requested: string | undefined;
    const device = withPackedAttestation(
      {
        ...base,
        register(options, origin) {
          requested = options.attestation;
          return base.register(options, origin);
        },
        authenticate: base.authenticate.bind(base),
        credentialIds: base.credentialIds,
      } as PasskeyEmulator,
      { aaguid: AAGUID, attestation: attestationCert },
    );
    await enrollDemoCustomer(t, device);
    expect(requested).toBe('direct');
    expect(await attestedFlag(base.credentialIds[0]!)).toBe(true);

    const { claims } = await signIn(device, 'phrh');
    expect(claims).toMatchObject({ acr: 'phrh', sub: expect.any(String) });
    expect(claims!.amr).toEqual(expect.arrayContaining(['hwk', 'user', 'pop']));
  });

  it('keeps a synced passkey at phr even with a trusted attestation', async () => {
    const base = createEmulator();
    const device = withPackedAttestation(base, { aaguid: AAGUID, attestation: attestationCert });
    await enrollDemoCustomer(t, device);
    expect(await attestedFlag(base.credentialIds[0]!)).toBe(true);
    const { claims } = await signIn(device);
    expect(claims).toMatchObject({ acr: 'phr' });
    expect(claims!.amr).toContain('swk');
    expect(await signIn(device, 'phrh')).toEqual({ error: 'unmet_authentication_requirements' });
  });

  it('registers a device-bound key whose attestation root is unknown, as phr', async () => {
    const otherRoot = await createTestCa('CN=Unknown Root, O=Elsewhere, C=JP');
    const otherCert = await issueCertificate(otherRoot, {
      subject: 'CN=Other Attestation, OU=Authenticator Attestation, O=Elsewhere, C=JP',
    });
    const base = createEmulator({ deviceBound: true });
    const device = withPackedAttestation(base, { aaguid: AAGUID, attestation: otherCert });
    await enrollDemoCustomer(t, device);
    expect(await attestedFlag(base.credentialIds[0]!)).toBe(false);
    const audit = await t.hub.db.query<{ data: { attestation: { reason: string } } }>(
      "SELECT data FROM audit_events WHERE type = 'authn.passkey.register' AND data ->> 'credentialId' = $1",
      [base.credentialIds[0]],
    );
    expect(audit.rows[0]!.data.attestation.reason).toBe('ERR_CERT_UNTRUSTED');
    expect((await signIn(device)).claims).toMatchObject({ acr: 'phr' });
  });

  it('does not count a device-bound key without attestation', async () => {
    const device = createEmulator({ deviceBound: true });
    await enrollDemoCustomer(t, device);
    expect(await attestedFlag(device.credentialIds[0]!)).toBe(false);
    expect(await signIn(device, 'phrh')).toEqual({ error: 'unmet_authentication_requirements' });
  });
});

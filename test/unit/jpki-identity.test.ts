/**
 * The name and birth date a JPKI signing certificate states in its subjectAltName (J-LIS otherName
 * entries under 1.2.392.200149.8.5.5), read from certificates the test CA issues like J-LIS does.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import {
  JpkiSanError,
  jpkiBirthDate,
  jpkiIdentity,
  SUBJECT_ALT_NAME_OID,
  subjectAltOtherNames,
} from '../../src/proofing/methods/jpkiIdentity.ts';
import { createTestCa, issueCertificate, type TestCa } from '../support/certificates.ts';

let ca: TestCa;
beforeAll(async () => {
  ca = await createTestCa('CN=Test JPKI Signing CA, C=JP');
});

async function sanOf(o: Parameters<typeof issueCertificate>[1]): Promise<Uint8Array | undefined> {
  const cert = (await issueCertificate(ca, o)).cert;
  const ext = cert.getExtension(SUBJECT_ALT_NAME_OID);
  return ext ? new Uint8Array(ext.value) : undefined;
}

describe('JPKI subjectAltName', () => {
  it('reads name and birth date (EYYYYMMDD) and ignores gender and address', async () => {
    const san = await sanOf({
      subject: 'CN=20261126101500123456789A, C=JP',
      jpki: {
        name: '山田　太郎',
        birthDate: '319800401',
        gender: '1',
        address: '東京都千代田区千代田１－１',
      },
    });
    expect(jpkiIdentity(san)).toEqual({ name: '山田　太郎', birthDate: '1980-04-01' });
    expect([...subjectAltOtherNames(san!).keys()]).toEqual([
      '1.2.392.200149.8.5.5.1',
      '1.2.392.200149.8.5.5.4',
      '1.2.392.200149.8.5.5.3',
      '1.2.392.200149.8.5.5.5',
    ]);
  });

  it('has no identity without the entries: no SAN, a DNS-only SAN, a missing birth date', async () => {
    expect(jpkiIdentity(await sanOf({ subject: 'CN=山田 太郎, C=JP' }))).toEqual({
      name: undefined,
      birthDate: undefined,
    });
    expect(
      jpkiIdentity(await sanOf({ subject: 'CN=x', san: [{ type: 'dns', value: 'example.jp' }] })),
    ).toEqual({ name: undefined, birthDate: undefined });
    expect(jpkiIdentity(await sanOf({ subject: 'CN=x', jpki: { name: '山田 太郎' } }))).toEqual({
      name: '山田 太郎',
      birthDate: undefined,
    });
  });

  it('takes only complete calendar dates', () => {
    expect(jpkiBirthDate('319800401')).toBe('1980-04-01');
    expect(jpkiBirthDate('520240229')).toBe('2024-02-29');
    expect(jpkiBirthDate('19800401')).toBe('1980-04-01');
    for (const bad of [
      '319800400',
      '319800001',
      '400000000',
      '520230229',
      '31980041',
      '3198004011',
      '3198O401',
      '',
    ])
      expect(jpkiBirthDate(bad), bad).toBeUndefined();
  });

  it('refuses malformed DER and two different values for one fact', () => {
    expect(() => subjectAltOtherNames(Uint8Array.from([0x30, 0x05, 0xa0, 0x03]))).toThrow(JpkiSanError);
    expect(() => subjectAltOtherNames(Uint8Array.from([0x04, 0x00]))).toThrow(JpkiSanError);
    const birth = (d: string) => {
      const oid = [0x06, 0x0a, 0x2a, 0x83, 0x08, 0x8c, 0x9b, 0x55, 0x08, 0x05, 0x05, 0x04];
      const value = [0xa0, d.length + 2, 0x0c, d.length, ...Buffer.from(d)];
      return [0xa0, oid.length + value.length, ...oid, ...value];
    };
    const one = birth('319800401');
    const two = birth('319810401');
    expect(
      subjectAltOtherNames(Uint8Array.from([0x30, one.length * 2, ...one, ...one])).get(
        '1.2.392.200149.8.5.5.4',
      ),
    ).toBe('319800401');
    expect(() =>
      subjectAltOtherNames(Uint8Array.from([0x30, one.length + two.length, ...one, ...two])),
    ).toThrow('two values for 1.2.392.200149.8.5.5.4');
  });
});

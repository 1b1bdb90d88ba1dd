/**
 * Compact JWS signing for SETs and client assertions with node:crypto directly: SETs are signed
 * once per (event, receiver), so this is the transmitter's hottest path. The callback form of
 * crypto.sign runs on libuv's thread pool, so a batch of RSA signatures uses every core while the
 * event loop goes on serving requests.
 */
import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { derToP1363 } from '../keys/index.ts';

export type SetAlg = 'RS256' | 'ES256';

export interface SigningKey {
  kid: string;
  alg: SetAlg;
  key: KeyObject;
}

const b64json = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Signs `header.payload`; the header is used exactly as given (it must name `alg` and `kid`). */
export function signJws(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  key: SigningKey,
): Promise<string> {
  return signEncoded(b64json(header), payload, key);
}

/** Same, with the base64url header already encoded (SETs share one header per key). */
export function signEncoded(
  encodedHeader: string,
  payload: Record<string, unknown>,
  key: SigningKey,
): Promise<string> {
  const input = `${encodedHeader}.${b64json(payload)}`;
  // ES256: OpenSSL's DER signature converted here (src/keys/ecdsaSignature.ts says why).
  return new Promise((resolve, reject) => {
    cryptoSign('sha256', Buffer.from(input), key.key, (err, signature) => {
      if (err) return reject(err);
      try {
        const jws = key.alg === 'ES256' ? derToP1363(signature, 32) : signature;
        resolve(`${input}.${jws.toString('base64url')}`);
      } catch (e) {
        // Thrown in a callback it would end the process; the caller gets it instead.
        reject(e);
      }
    });
  });
}

export function encodeHeader(header: Record<string, unknown>): string {
  return b64json(header);
}

import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';

/**
 * A Keygrip-compatible signer for koa's signed cookies (oidc-provider's session and interaction
 * cookies). keygrip compares through tsscmp, which builds HMACs from fresh Buffer keys — on Node 24
 * that is ~5× slower than with a KeyObject, and it ran on every cookie of every request.
 * HMAC-SHA256 with the newest key; verification accepts any key (rotation), in constant time.
 */
export class CookieSigner {
  readonly #keys: KeyObject[];

  constructor(keys: readonly string[]) {
    if (keys.length === 0) throw new TypeError('at least one cookie key is required');
    this.#keys = keys.map((k) => createSecretKey(Buffer.from(k, 'utf8')));
  }

  #mac(key: KeyObject, data: string): Buffer {
    return createHmac('sha256', key).update(data).digest();
  }

  sign(data: string): string {
    return this.#mac(this.#keys[0]!, data).toString('base64url');
  }

  verify(data: string, digest: string): boolean {
    return this.index(data, digest) > -1;
  }

  index(data: string, digest: string): number {
    const given = Buffer.from(digest, 'base64url');
    for (let i = 0; i < this.#keys.length; i++) {
      const expected = this.#mac(this.#keys[i]!, data);
      if (given.length === expected.length && timingSafeEqual(given, expected)) return i;
    }
    return -1;
  }
}

/**
 * Headless Debian Chromium driven by playwright-core, with a CDP virtual WebAuthn authenticator
 * (a real browser ceremony without a person). The hub's dev certificate is trusted by its SPKI
 * pin: Chrome refuses WebAuthn on pages with certificate errors, so ignoring errors is no option.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { type Browser, type BrowserContext, type CDPSession, chromium, type Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export function spkiPin(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** `alsoTrust`: server certificates (PEM) of other HTTPS services the pages lead to (e.g. an eKYC provider). */
export async function launchBrowser(dataDir: string, alsoTrust: string[] = []): Promise<Browser> {
  const pin = [readFileSync(path.join(dataDir, 'tls', 'server.pem'), 'utf8'), ...alsoTrust]
    .map(spkiPin)
    .join(',');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--ignore-certificate-errors-spki-list=${pin}`,
    ],
  });
}

export interface VirtualAuthenticator {
  cdp: CDPSession;
  authenticatorId: string;
  credentials(): Promise<Array<{ credentialId: string; signCount: number; isResidentCredential: boolean }>>;
  setUserVerified(verified: boolean): Promise<void>;
}

/** A platform authenticator with user verification, resident keys and automatic presence. */
export async function addVirtualAuthenticator(
  context: BrowserContext,
  page: Page,
  options: { backupEligible?: boolean } = {},
): Promise<VirtualAuthenticator> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      ctap2Version: 'ctap2_1',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      defaultBackupEligibility: options.backupEligible ?? false,
      defaultBackupState: options.backupEligible ?? false,
    },
  });
  return {
    cdp,
    authenticatorId,
    async credentials() {
      const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
      return credentials;
    },
    async setUserVerified(isUserVerified) {
      await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified });
    },
  };
}

/**
 * The operator console in a real browser: an operator enrolls a passkey with the ticket the CLI
 * would print, signs in with it on the console page and freezes a customer through the form.
 */
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addOperator } from '../../src/console/index.ts';
import { addVirtualAuthenticator, launchBrowser } from '../support/browser.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';

let t: TestHub;
let browser: Browser;

beforeAll(async () => {
  t = await startTestHub();
  browser = await launchBrowser(t.dataDir);
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
});

describe('operator console', () => {
  it('enrolls, signs in with the passkey and freezes a customer', async () => {
    const { ticket } = await addOperator(t.hub.db, { name: 'olga', role: 'operator', by: 'operator:setup' });
    const context = await browser.newContext({ locale: 'en-GB' });
    const page = await context.newPage();
    const authenticator = await addVirtualAuthenticator(context, page);

    await page.goto(`${t.issuer}/console/enroll`);
    await page.fill('#operator-name', 'olga');
    await page.fill('#operator-ticket', ticket);
    await page.click('#console-enroll-button');
    await page.waitForSelector('#passkey-login');
    expect(await authenticator.credentials()).toHaveLength(1);

    await page.click('#passkey-login');
    await page.waitForSelector('#search-form');
    expect(await page.textContent('#signed-in-as')).toContain('olga (operator)');

    await page.fill('#q', t.hub.demo!.customerNumber);
    await page.click('#search-form button');
    await page.click(`#results a`);
    await page.fill('#freeze-reason', 'reported phishing');
    await page.click('#freeze');
    await page.waitForSelector('#frozen-since');
    expect(await page.textContent('#customer-status')).toBe('frozen');
    await context.close();
  });
});

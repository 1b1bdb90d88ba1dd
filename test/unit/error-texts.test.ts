/**
 * Every fixed English text the customer's pages can show for a refused request has its Japanese
 * (src/web/i18n.ts ERROR_TEXT_JA), and the page renders it in the page's language.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_TEXT_JA, errorText } from '../../src/web/index.ts';
import { errorPage } from '../../src/web/pages.ts';

const CUSTOMER_FACING = ['src/oidc', 'src/account', 'src/linking', 'src/proofing', 'src/http'];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(path.join(dir, e.name))
      : e.name.endsWith('.ts')
        ? [path.join(dir, e.name)]
        : [],
  );
}

/** Literal texts of `new HttpError(status, 'error', 'text'…)` and `new BodyError(code, status, 'text')`. */
function thrownTexts(): string[] {
  const texts = new Set<string>();
  for (const file of CUSTOMER_FACING.flatMap(sources)) {
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/new HttpError\(\s*\d+,\s*'[a-z_]+',\s*'((?:[^'\\]|\\.)*)'/g))
      texts.add(m[1]!);
    for (const m of src.matchAll(/new BodyError\(\s*'[A-Z_]+',\s*\d+,\s*'((?:[^'\\]|\\.)*)'/g))
      texts.add(m[1]!);
  }
  return [...texts].sort();
}

describe('page error texts', () => {
  it('finds the texts it checks (the scan works)', () => {
    const texts = thrownTexts();
    expect(texts).toContain('the form has expired; reload the page');
    expect(texts).toContain('request body too large');
    expect(texts.length).toBeGreaterThan(20);
  });

  it('has Japanese for every fixed text thrown by the customer-facing modules', () => {
    const missing = thrownTexts().filter((t) => !ERROR_TEXT_JA[t]);
    expect(missing).toEqual([]);
  });

  it('renders the description in the page language, and leaves unknown texts as written', () => {
    expect(errorText('sign in first', 'ja')).toBe('先にログインしてください。');
    expect(errorText('sign in first', 'en')).toBe('sign in first');
    expect(errorText('something new', 'ja')).toBe('something new');
    const page = errorPage({
      lang: 'ja',
      error: 'ERR_CSRF',
      description: 'the form has expired; reload the page',
    });
    expect(page).toContain('画面の有効期限が切れました');
    expect(page).not.toContain('reload the page');
  });
});

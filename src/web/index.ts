/** Server-rendered pages (Japanese and English) and their static assets. */
import type { Context } from 'koa';
import { pickLanguage } from './i18n.ts';
import { errorPage } from './pages.ts';

export { type AccountSession, accountLoginPage, type HistoryEntry, securityPage } from './accountPages.ts';
export { type ApprovalView, approvalPage } from './approvalPage.ts';
export { assetsMiddleware } from './assets.ts';
export { escapeHtml, html, SafeHtml } from './html.ts';
export { ERROR_TEXT_JA, errorText, type Lang, type Messages, messages, pickLanguage } from './i18n.ts';
export {
  alternativeLoginPage,
  type ConsentAccount,
  consentPage,
  enrollPage,
  errorPage,
  layout,
  loginPage,
  noticesPage,
} from './pages.ts';

export function languageOf(ctx: Context): ReturnType<typeof pickLanguage> {
  const q = ctx.query.lang;
  const lang = pickLanguage({
    query: typeof q === 'string' ? q : undefined,
    cookie: ctx.cookies.get('lang') ?? undefined,
    acceptLanguage: ctx.get('accept-language'),
  });
  // Remember an explicit switch for the following pages of the flow.
  if (typeof q === 'string' && q === lang)
    ctx.cookies.set('lang', lang, { httpOnly: true, sameSite: 'lax', secure: ctx.secure, overwrite: true });
  return lang;
}

/** oidc-provider's renderError hook: never a stack trace, only the OAuth error and its description. */
export function renderErrorPage(ctx: Context, out: Record<string, string>): void {
  ctx.type = 'html';
  ctx.body = errorPage({
    lang: languageOf(ctx),
    error: out.error ?? 'server_error',
    description: out.error_description,
  });
}

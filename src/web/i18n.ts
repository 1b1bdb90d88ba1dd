/** Japanese first (the customers are Japanese investors), English on request. */
export type Lang = 'ja' | 'en';

const MESSAGES = {
  ja: {
    appName: 'Kakehashi',
    switchLanguage: 'English',
    loginTitle: 'ログイン',
    loginLead: '登録済みのパスキーでログインしてください。パスワードは使いません。',
    loginButton: 'パスキーでログイン',
    loginFor: (client: string) => `${client} がアカウント情報へのアクセスを求めています。`,
    firstTime: 'はじめての方（パスキーの登録）',
    cancel: 'キャンセル',
    enrollTitle: 'パスキーの登録',
    enrollLead:
      'お届けした「登録コード」とお客様番号を入力してください。登録コードは郵送でのみお知らせしています。メールやSMSのリンクから入力を求めることはありません。',
    customerNumber: 'お客様番号',
    ticket: '登録コード',
    passkeyName: 'パスキーの名前（任意）',
    enrollButton: 'パスキーを登録',
    enrolled: 'パスキーを登録しました。続けて、登録したパスキーでログインしてください。',
    backToLogin: 'ログイン画面に戻る',
    consentTitle: 'アクセスの許可',
    consentLead: (client: string) => `${client} が次のアクセスを求めています。`,
    scopesHeading: '許可する内容',
    accountsHeading: '対象の口座（選択した口座のみ共有されます）',
    noAccounts: '共有できる口座がありません。',
    approve: '許可する',
    deny: '許可しない',
    consentNote: '許可はいつでもセキュリティ設定の画面から取り消せます。',
    errorTitle: 'エラー',
    errorLead: '処理を続けられませんでした。',
    working: '処理中…',
    passkeyUnsupported: 'このブラウザはパスキーに対応していません。',
    alt: {
      link: 'パスキーを使えない方（認証の免除を受けた方）',
      title: '認証アプリでログイン',
      lead: 'パスキーの利用を免除されたお客様は、お客様番号と認証アプリの6桁のコードでログインします。この方法はフィッシングに強い認証ではありません。パスキーが使える端末をご用意いただけたら、パスキーの登録をお願いします。',
      code: '認証アプリのコード（6桁）',
      button: 'ログイン',
      setupButton: '認証アプリを設定する（免除を受けた方）',
      setupLead:
        '認証アプリに次のキーを登録し、表示された6桁のコードを入力してください。このキーは今回だけ表示されます。',
      confirm: '設定を完了',
      done: '認証アプリを設定しました。ログイン画面から、お客様番号とコードでログインしてください。',
    },
    account: {
      title: 'セキュリティ設定',
      loginTitle: 'セキュリティ設定にログイン',
      loginLead: '登録済みのパスキーでログインしてください。',
      signedInAs: (name: string) => `${name} 様`,
      signOut: 'ログアウト',
      passkeys: 'パスキー',
      name: '名前',
      created: '登録日時',
      lastUsed: '最終利用',
      kind: '種類',
      synced: '同期パスキー（複数の端末で使えます）',
      deviceBound: 'この端末専用',
      disabled: '保護のため停止中',
      never: '未使用',
      rename: '名前を変更',
      remove: '削除',
      addPasskey: 'パスキーを追加',
      addNeedsRecent:
        'パスキーの追加には、直前（5分以内）のログインが必要です。もう一度ログインしてください。',
      sessions: 'ログイン中のセッション',
      signedInAt: 'ログイン日時',
      method: '認証方法',
      current: 'この画面',
      endSession: '終了',
      endAll: 'すべてのセッションを終了',
      endAllNote: 'すべてのアプリ・サービスの連携も解除され、再ログインと再度の許可が必要になります。',
      history: 'ログイン履歴・セキュリティイベント',
      when: '日時',
      event: '内容',
      result: '結果',
      source: '接続元',
      success: '成功',
      failure: '失敗',
      info: '—',
      events: {
        'authn.passkey.login': 'パスキーでログイン',
        'authn.passkey.register': 'パスキーを登録',
        'authn.passkey.removed': 'パスキーを削除',
        'authn.passkey.renamed': 'パスキーの名前を変更',
        'authn.passkey.clone_suspected': 'パスキーの不正コピーの疑い',
        'risk.account.locked': '連続失敗によりロック',
        'risk.account.locked.refused': 'ロック中のログインを拒否',
        'risk.account.unlocked': 'ロック解除',
        'account.sessions.ended': 'セッションを終了',
        'consent.granted': 'アプリにアクセスを許可',
        'consent.denied': 'アプリへのアクセスを拒否',
        'enrollment.ticket.issued': '登録コードを発行',
        'enrollment.ticket.accepted': '登録コードを確認',
        'enrollment.ticket.used': '登録コードを使用',
        'enrollment.ticket.rejected': '登録コードの誤り',
        'enrollment.ticket.locked': '登録コードの誤りが続いたため停止',
      } as Record<string, string>,
    },
    scope: {
      openid: 'ログインした本人であることの確認',
      offline_access: '継続的なアクセス（ログインしていない間も）',
      accounts: '口座の一覧と口座情報の参照（読み取りのみ）',
    } as Record<string, string>,
    taxCategory: { specific: '特定口座', general: '一般口座', nisa: 'NISA口座' } as Record<string, string>,
  },
  en: {
    appName: 'Kakehashi',
    switchLanguage: '日本語',
    loginTitle: 'Sign in',
    loginLead: 'Sign in with your registered passkey. There are no passwords.',
    loginButton: 'Sign in with a passkey',
    loginFor: (client: string) => `${client} is asking for access to your account information.`,
    firstTime: 'First time here? Register a passkey',
    cancel: 'Cancel',
    enrollTitle: 'Register a passkey',
    enrollLead:
      'Enter the registration code we sent you by post and your customer number. We never ask for it through a link in an e-mail or SMS.',
    customerNumber: 'Customer number',
    ticket: 'Registration code',
    passkeyName: 'Name for this passkey (optional)',
    enrollButton: 'Register a passkey',
    enrolled: 'Your passkey is registered. Now sign in with it.',
    backToLogin: 'Back to sign-in',
    consentTitle: 'Allow access',
    consentLead: (client: string) => `${client} is asking for the following access.`,
    scopesHeading: 'What you allow',
    accountsHeading: 'Accounts (only the ones you select are shared)',
    noAccounts: 'There are no accounts to share.',
    approve: 'Allow',
    deny: 'Deny',
    consentNote: 'You can withdraw this permission at any time from your security settings.',
    errorTitle: 'Error',
    errorLead: 'We could not continue.',
    working: 'Working…',
    passkeyUnsupported: 'This browser does not support passkeys.',
    alt: {
      link: 'Cannot use a passkey? (customers with an exemption)',
      title: 'Sign in with an authenticator app',
      lead: 'Customers exempted from passkeys sign in with their customer number and the 6-digit code of their authenticator app. This method is not phishing-resistant; please register a passkey as soon as you have a device that supports one.',
      code: 'Authenticator app code (6 digits)',
      button: 'Sign in',
      setupButton: 'Set up an authenticator app (customers with an exemption)',
      setupLead:
        'Add this key to your authenticator app and enter the 6-digit code it shows. The key is shown only now.',
      confirm: 'Finish set-up',
      done: 'Your authenticator app is set up. Sign in with your customer number and a code.',
    },
    account: {
      title: 'Security settings',
      loginTitle: 'Sign in to your security settings',
      loginLead: 'Sign in with a registered passkey.',
      signedInAs: (name: string) => `Signed in as ${name}`,
      signOut: 'Sign out',
      passkeys: 'Passkeys',
      name: 'Name',
      created: 'Registered',
      lastUsed: 'Last used',
      kind: 'Kind',
      synced: 'Synced passkey (usable on your other devices)',
      deviceBound: 'This device only',
      disabled: 'Disabled for your protection',
      never: 'never',
      rename: 'Rename',
      remove: 'Remove',
      addPasskey: 'Add a passkey',
      addNeedsRecent: 'Adding a passkey needs a sign-in within the last 5 minutes. Please sign in again.',
      sessions: 'Active sessions',
      signedInAt: 'Signed in',
      method: 'Method',
      current: 'this page',
      endSession: 'End',
      endAll: 'End all sessions',
      endAllNote: 'This also disconnects every app and service; they will need your permission again.',
      history: 'Sign-in history and security events',
      when: 'When',
      event: 'Event',
      result: 'Result',
      source: 'From',
      success: 'success',
      failure: 'failed',
      info: '—',
      events: {
        'authn.passkey.login': 'Signed in with a passkey',
        'authn.passkey.register': 'Passkey registered',
        'authn.passkey.removed': 'Passkey removed',
        'authn.passkey.renamed': 'Passkey renamed',
        'authn.passkey.clone_suspected': 'Passkey copy suspected',
        'risk.account.locked': 'Locked after repeated failures',
        'risk.account.locked.refused': 'Sign-in refused while locked',
        'risk.account.unlocked': 'Unlocked',
        'account.sessions.ended': 'Sessions ended',
        'consent.granted': 'Access granted to an app',
        'consent.denied': 'Access denied to an app',
        'enrollment.ticket.issued': 'Registration code issued',
        'enrollment.ticket.accepted': 'Registration code accepted',
        'enrollment.ticket.used': 'Registration code used',
        'enrollment.ticket.rejected': 'Wrong registration code',
        'enrollment.ticket.locked': 'Registration blocked after wrong codes',
      } as Record<string, string>,
    },
    scope: {
      openid: 'Confirm that it is you who signed in',
      offline_access: 'Ongoing access (also while you are signed out)',
      accounts: 'Read your account list and account details (read only)',
    } as Record<string, string>,
    taxCategory: { specific: 'Specific account', general: 'General account', nisa: 'NISA account' } as Record<
      string,
      string
    >,
  },
};

export type Messages = (typeof MESSAGES)['ja'];

export function messages(lang: Lang): Messages {
  return MESSAGES[lang];
}

/** `?lang=` wins, then the `lang` cookie, then Accept-Language; Japanese by default. */
export function pickLanguage(input: {
  query?: string | undefined;
  cookie?: string | undefined;
  acceptLanguage?: string | undefined;
}): Lang {
  for (const v of [input.query, input.cookie]) if (v === 'ja' || v === 'en') return v;
  const ranked = (input.acceptLanguage ?? '')
    .split(',')
    .map((part) => {
      const [tag = '', ...params] = part.trim().toLowerCase().split(';');
      const q = params.find((p) => p.trim().startsWith('q='));
      return { tag, q: q ? Number(q.trim().slice(2)) || 0 : 1 };
    })
    .filter((x) => x.tag)
    .sort((a, b) => b.q - a.q);
  for (const { tag } of ranked) {
    if (tag.startsWith('ja')) return 'ja';
    if (tag.startsWith('en')) return 'en';
  }
  return 'ja';
}

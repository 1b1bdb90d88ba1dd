// Passkey login and enrollment ceremonies in the browser, and identity proofing by a JPKI-style
// signature (a page without the WebAuthn bundle). No inline script (CSP script-src 'self').
(() => {
  const { startAuthentication, startRegistration, browserSupportsWebAuthn } =
    window.SimpleWebAuthnBrowser ?? {};
  const errorBox = document.getElementById('error');

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  async function postJson(url, body) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok)
      throw Object.assign(new Error(data.error_description || data.error || res.statusText), {
        code: data.error_code,
      });
    return data;
  }

  /** Runs `work` with the button disabled; `stay`: the page stays (no navigation), so enable it again. */
  async function busy(button, work, stay = false) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = button.closest('[data-working]')?.dataset.working ?? label;
    errorBox.hidden = true;
    try {
      await work();
      if (stay) {
        button.disabled = false;
        button.textContent = label;
      }
    } catch (err) {
      showError(err?.message ? err.message : String(err));
      button.disabled = false;
      button.textContent = label;
    }
  }

  const login = document.getElementById('passkey-login');
  if (login) {
    if (!browserSupportsWebAuthn()) showError(login.dataset.unsupported);
    login.addEventListener('click', () =>
      busy(login, async () => {
        // The OIDC interaction's endpoints, or another sign-in endpoint (the security page's).
        const base = login.dataset.endpoint ?? `/interaction/${login.dataset.uid}/passkey`;
        const optionsJSON = await postJson(`${base}/options`, {});
        const response = await startAuthentication({ optionsJSON });
        const result = await postJson(`${base}/verify`, response).catch((err) => {
          // A locked account: offer unlocking by re-proofing (the message says why).
          const unlock = document.getElementById('unlock');
          if (err.code === 'ERR_ACCOUNT_LOCKED' && unlock) unlock.hidden = false;
          throw err;
        });
        window.location.assign(result.redirectTo);
      }),
    );
  }

  // The operator console's enrollment: an operator's name and one-time ticket, then a new passkey.
  const operatorEnroll = document.getElementById('console-enroll');
  if (operatorEnroll) {
    if (!browserSupportsWebAuthn()) showError(operatorEnroll.dataset.unsupported);
    operatorEnroll.addEventListener('submit', (event) => {
      event.preventDefault();
      busy(document.getElementById('console-enroll-button'), async () => {
        const form = new FormData(operatorEnroll);
        const optionsJSON = await postJson('/console/enroll/options', {
          name: form.get('name'),
          ticket: form.get('ticket'),
        });
        const response = await startRegistration({ optionsJSON });
        const done = await postJson('/console/enroll/verify', response);
        window.location.assign(done.redirectTo);
      });
    });
  }

  const add = document.getElementById('add-passkey');
  if (add) {
    add.addEventListener('click', () =>
      busy(add, async () => {
        const csrf = add.dataset.csrf;
        const optionsJSON = await postJson('/account/passkeys/options', { csrf });
        const response = await startRegistration({ optionsJSON });
        await postJson('/account/passkeys/verify', { csrf, response });
        window.location.assign('/account');
      }),
    );
  }

  const totpSetup = document.getElementById('totp-setup');
  if (totpSetup) {
    totpSetup.addEventListener('click', () =>
      busy(totpSetup, async () => {
        const form = new FormData(document.getElementById('enroll-form'));
        const uid = document.getElementById('enroll-form').dataset.uid;
        const setup = await postJson(`/interaction/${uid}/enroll/totp`, {
          customerNumber: form.get('customerNumber'),
          ticket: form.get('ticket'),
        });
        document.getElementById('totp-secret').textContent = setup.secret.replace(/(.{4})/g, '$1 ').trim();
        document.getElementById('totp-setup-step').hidden = false;
      }),
    );
    const confirm = document.getElementById('totp-confirm');
    confirm.addEventListener('click', () =>
      busy(confirm, async () => {
        const uid = document.getElementById('enroll-form').dataset.uid;
        await postJson(`/interaction/${uid}/enroll/totp/confirm`, {
          code: document.getElementById('totp-confirm-code').value,
        });
        window.location.assign(`/interaction/${uid}/alternative`);
      }),
    );
  }

  const alternative = document.getElementById('alternative-form');
  if (alternative) {
    alternative.addEventListener('submit', (event) => {
      event.preventDefault();
      const button = document.getElementById('alternative-button');
      busy(button, async () => {
        const form = new FormData(alternative);
        const result = await postJson(`/interaction/${alternative.dataset.uid}/alternative/verify`, {
          customerNumber: form.get('customerNumber'),
          code: form.get('code'),
        });
        window.location.assign(result.redirectTo);
      });
    });
  }

  // An exempted customer approves a withdrawal with a one-time code (src/linking/approvals).
  const approvalCode = document.getElementById('approval-totp-form');
  if (approvalCode) {
    approvalCode.addEventListener('submit', (event) => {
      event.preventDefault();
      const button = document.getElementById('approval-totp-button');
      busy(button, async () => {
        const form = new FormData(approvalCode);
        const result = await postJson(`/interaction/${approvalCode.dataset.uid}/approval/totp`, {
          code: form.get('code'),
        });
        window.location.assign(result.redirectTo);
      });
    });
  }

  const enroll = document.getElementById('enroll-form');
  if (enroll) {
    if (!browserSupportsWebAuthn()) showError(enroll.dataset.unsupported);
    enroll.addEventListener('submit', (event) => {
      event.preventDefault();
      const button = document.getElementById('enroll-button');
      busy(button, async () => {
        const uid = enroll.dataset.uid;
        const form = new FormData(enroll);
        const optionsJSON = await postJson(
          `/interaction/${uid}/enroll/options`,
          form.get('proofing')
            ? { proofing: form.get('proofing') }
            : {
                customerNumber: form.get('customerNumber'),
                ticket: form.get('ticket'),
                purpose: form.get('purpose') || undefined,
              },
        );
        const response = await startRegistration({ optionsJSON });
        await postJson(`/interaction/${uid}/enroll/verify`, {
          response,
          passkeyName: form.get('passkeyName') || undefined,
        });
        window.location.assign(`/interaction/${uid}?enrolled=1`);
      });
    });
  }

  // JPKI-style proofing: the hub's challenge is shown, the customer's card reader app signs it, and
  // the certificate and signature it gives are sent back.
  const jpki = document.getElementById('jpki-form');
  if (jpki) {
    const uid = jpki.dataset.uid;
    let flowId;
    const start = document.getElementById('jpki-start');
    start.addEventListener('click', () =>
      busy(
        start,
        async () => {
          const started = await postJson(`/interaction/${uid}/proofing/jpki/challenge`, {
            customerNumber: document.getElementById('jpki-customerNumber').value,
            purpose: jpki.dataset.purpose,
          });
          flowId = started.flowId;
          document.getElementById('jpki-challenge').textContent = started.challenge;
          const expires = document.getElementById('jpki-expires');
          const at = new Date(started.expiresAt).toLocaleTimeString(
            jpki.dataset.lang === 'ja' ? 'ja-JP' : 'en-GB',
          );
          expires.textContent = expires.dataset.template.replace('{at}', at);
          document.getElementById('jpki-sign-step').hidden = false;
        },
        true,
      ),
    );

    jpki.addEventListener('submit', (event) => {
      event.preventDefault();
      busy(document.getElementById('jpki-verify'), async () => {
        const chain =
          document
            .getElementById('jpki-chain')
            .value.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
        const result = await postJson(`/interaction/${uid}/proofing/jpki/verify`, {
          flowId,
          certificate: document.getElementById('jpki-certificate').value,
          chain,
          signature: document.getElementById('jpki-signature').value.trim(),
        }).catch((err) => {
          // A challenge answers once, right or wrong: the next try starts with new data to sign.
          document.getElementById('jpki-sign-step').hidden = true;
          throw err;
        });
        window.location.assign(result.redirectTo);
      });
    });
  }
})();
